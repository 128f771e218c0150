"""Contract tests over every registered modality, and the timing of each built-in on known motion."""

import io

import numpy as np
import pytest
import torch
from astra_experts.geometry import make_pose, rotvec_to_rotmat, wxyz_to_xyzw

from astra_core.errors import ShapeError
from astra_core.modality import Modality, latent_frame_indices, num_latent_frames
from astra_core.plugins import get_registry

BUILTINS = {"camera_se3", "vehicle_pose", "robot_ee", "discrete_cmd", "atari_action", "discrete_action", "box_action"}
REGISTERED = sorted(get_registry().modalities)


def test_builtins_are_registered():
    assert BUILTINS <= set(REGISTERED)


def sample_raw(name: str, frames: int, rng: np.random.Generator):
    """A plausible raw stream for each built-in modality."""
    if name == "camera_se3":
        rot = rotvec_to_rotmat(np.cumsum(rng.normal(0, 0.05, (frames, 3)), 0))
        return make_pose(rot, np.cumsum(rng.normal(0, 0.1, (frames, 3)), 0))
    if name == "vehicle_pose":
        yaw = np.cumsum(rng.normal(0, 0.02, frames))
        q = np.stack([np.cos(yaw / 2), 0 * yaw, 0 * yaw, np.sin(yaw / 2)], -1)
        return {"translation": np.cumsum(rng.normal(0, 0.5, (frames, 3)), 0), "rotation": q}
    if name == "robot_ee":
        a = rng.normal(0, 0.01, (frames, 7))
        a[:, 6] = rng.integers(0, 2, frames)
        return a
    if name == "discrete_cmd":
        keys = [[k for k in ("W", "A", "SPACE") if rng.random() < 0.4] for _ in range(frames)]
        return {"keys": keys, "mouse": rng.normal(0, 3, (frames, 2))}
    if name == "atari_action":
        return rng.integers(0, 18, frames)
    if name == "discrete_action":
        return rng.integers(0, 5, frames)
    if name == "box_action":
        return rng.uniform(-1, 1, (frames, 3))
    pytest.skip(f"no sample stream for third-party modality {name}")


@pytest.mark.parametrize("name", REGISTERED)
@pytest.mark.parametrize("factor", [1, 4])
def test_alignment_shapes_dtype_and_mask(name, factor):
    modality: Modality = get_registry().modalities[name]
    raw = sample_raw(name, 17, np.random.default_rng(0))
    aligned = modality.align(raw, factor)
    f = num_latent_frames(17, factor)
    assert aligned.actions.shape == (f, modality.action_dim) and aligned.actions.dtype == np.float32
    assert aligned.mask.shape == (f,)
    assert aligned.mask[0] == 0 and np.all(aligned.actions[0] == 0) and np.all(aligned.mask[1:] == 1)
    assert np.isfinite(aligned.actions).all()


@pytest.mark.parametrize("name", REGISTERED)
def test_normaliser_round_trip_and_state_dict(name):
    modality = get_registry().modalities[name]
    rng = np.random.default_rng(1)
    aligned = [modality.align(sample_raw(name, 33, rng), 4) for _ in range(8)]
    actions = torch.tensor(np.stack([a.actions for a in aligned]))
    mask = torch.tensor(np.stack([a.mask for a in aligned]))
    norm = modality.normalizer().fit(actions, mask)
    out = norm(actions, mask)
    assert torch.allclose(norm.inverse(out)[mask > 0], actions[mask > 0], atol=1e-5)
    assert bool((out[mask == 0] == 0).all())
    other = modality.normalizer()
    other.load_state_dict(norm.state_dict())
    assert torch.equal(other(actions, mask), out) and bool(other.fitted)


@pytest.mark.parametrize("name", REGISTERED)
def test_encoder_shapes_and_state_dict(name):
    modality = get_registry().modalities[name]
    torch.manual_seed(0)
    enc = modality.encoder(32)
    x, m = torch.randn(3, 5, modality.action_dim), torch.ones(3, 5)
    tokens = enc(x, m)
    assert tokens.shape == (3, 5, 32) and tokens.dtype == torch.float32
    buf = io.BytesIO()
    torch.save(enc.state_dict(), buf)
    torch.manual_seed(1)
    twin = modality.encoder(32)
    twin.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    assert torch.equal(twin(x, m), tokens)


@pytest.mark.parametrize("name", REGISTERED)
def test_non_finite_raw_actions_are_rejected(name):
    modality = get_registry().modalities[name]
    raw = sample_raw(name, 9, np.random.default_rng(2))
    if isinstance(raw, dict):
        key = "translation" if "translation" in raw else "mouse"
        raw[key] = np.array(raw[key], dtype=float)
        raw[key][3, 0] = np.nan
    else:
        raw = raw.astype(float)
        raw[(3, 0)[: raw.ndim]] = np.inf  # a 1-D stream of indices, or a row of values
    with pytest.raises(ShapeError, match=rf"{name}: .*(NaN or Inf|not rotations)"):
        modality.align(raw, 4)


def test_latent_frames_stand_for_every_fourth_frame():
    assert num_latent_frames(1, 4) == 1 and num_latent_frames(5, 4) == 2 and num_latent_frames(17, 4) == 5
    assert latent_frame_indices(17, 4).tolist() == [0, 4, 8, 12, 16]
    assert latent_frame_indices(3, 1).tolist() == [0, 1, 2]


# ---- timing on known motion: action i leads from latent i−1 into latent i -------------------------


def test_camera_timing_on_accelerating_motion():
    z = np.arange(17.0) ** 2  # forward along the optical axis, speeding up
    poses = make_pose(np.repeat(np.eye(3)[None], 17, 0), np.stack([0 * z, 0 * z, z], -1))
    a = get_registry().modalities["camera_se3"].align(poses, 4).actions
    # latent i stands for frame 4i: motion 4(i−1) -> 4i is 16(2i − 1)
    assert np.allclose(a[:, 2], [0, 16, 48, 80, 112])
    assert np.allclose(a[1:, 3:], [1, 0, 0, 0, 1, 0])  # no rotation: first two columns of I


def test_vehicle_timing_turning_car_in_its_own_frame():
    yaw = np.radians(np.arange(9.0) * 10)  # turns left 10° per frame while driving forward 1 m per frame
    t = np.zeros((9, 3))
    for i in range(1, 9):
        t[i] = t[i - 1] + [np.cos(yaw[i - 1]), np.sin(yaw[i - 1]), 0]
    q = np.stack([np.cos(yaw / 2), 0 * yaw, 0 * yaw, np.sin(yaw / 2)], -1)
    a = get_registry().modalities["vehicle_pose"].align({"translation": t, "rotation": q}, 1).actions
    assert np.allclose(a[1:, 0], 1, atol=1e-6) and np.allclose(a[1:, 1], 0, atol=1e-6)  # always straight ahead
    assert np.allclose(a[1:, 5], np.radians(10), atol=1e-6) and np.allclose(a[0], 0)


def test_robot_timing_sums_the_deltas_inside_each_latent_frame():
    raw = np.zeros((9, 7))
    raw[:, 0] = np.arange(9)  # frame t moves t along x
    raw[:, 6] = [0, 0, 0, 0, 0, 1, 1, 1, 1]
    a = get_registry().modalities["robot_ee"].align(raw, 4).actions
    assert np.allclose(a[:, 0], [0, 1 + 2 + 3 + 4, 5 + 6 + 7 + 8])
    assert np.allclose(a[:, 6], [0, 0, 1])


def test_discrete_timing_and_unknown_keys():
    keys = [[], ["W"], ["W"], ["W", "A"], ["A"], [], [], [], ["space"]]
    mod = get_registry().modalities["discrete_cmd"]
    a = mod.align({"keys": keys}, 4).actions
    assert np.allclose(a[1, :2], [0.75, 0.5]) and np.allclose(a[2, :2], [0, 0]) and a[2, 8] == 0.25
    with pytest.raises(ShapeError, match="unknown key 'jump' at frame 1"):
        mod.align({"keys": [[], ["jump"]]}, 1)


def test_quaternion_order_helpers_agree_with_roma():
    import roma

    q = np.array([[0.9, 0.1, -0.3, 0.2]])
    assert np.allclose(wxyz_to_xyzw(q), roma.quat_wxyz_to_xyzw(torch.tensor(q)).numpy())


def test_categorical_modalities_align_shares_and_refuse_bad_indices():
    from astra_experts.categorical import ATARI_MEANINGS, AtariAction, DiscreteAction

    atari = AtariAction()
    assert atari.action_dim == 18 and atari.describe()["meanings"] == list(ATARI_MEANINGS)
    # row 0 is ignored; with 2 raw frames per latent frame each vector holds the two actions' shares
    aligned = atari.align(np.array([0, 1, 3, 3, 4]), 2)
    assert aligned.mask.tolist() == [0.0, 1.0, 1.0]
    assert aligned.actions[1, 1] == 0.5 and aligned.actions[1, 3] == 0.5 and aligned.actions[2, 3] == 0.5
    assert aligned.actions[2, 4] == 0.5 and np.allclose(aligned.actions[1:].sum(1), 1.0)
    by_name = atari.align(["NOOP", "FIRE", "RIGHT", "RIGHT", "LEFT"], 2)
    assert np.array_equal(by_name.actions, aligned.actions)
    with pytest.raises(ShapeError, match="action 18 at frame 2 lies outside 0 … 17"):
        atari.align(np.array([0, 1, 18]), 1)
    with pytest.raises(ShapeError, match="unknown action 'JUMP' at frame 1"):
        atari.align(["NOOP", "JUMP"], 1)
    with pytest.raises(ShapeError, match="whole numbers"):
        DiscreteAction().align(np.array([0.0, 1.5]), 1)


def test_box_action_pads_to_sixteen_and_checks_bounds():
    from astra_experts.vector import BoxAction, scale_to_unit

    box = BoxAction()
    raw = scale_to_unit(np.array([[0.0, 0.0], [2.0, -1.0], [-2.0, 1.0]]), np.array([-2.0, -1.0]), np.array([2.0, 1.0]))
    assert raw.tolist() == [[0.0, 0.0], [1.0, -1.0], [-1.0, 1.0]]
    aligned = box.align(raw, 1)
    assert aligned.actions.shape == (3, 16) and aligned.actions[1, :2].tolist() == [1.0, -1.0]
    assert np.all(aligned.actions[:, 2:] == 0)
    with pytest.raises(ShapeError, match="outside the modality's declared bounds"):
        box.align(np.array([[0.0], [3.0]]), 1)
    with pytest.raises(ShapeError, match="1 ≤ d ≤ 16"):
        box.align(np.zeros((3, 17)), 1)
