import numpy as np
import pytest
import torch
from astra_embodiments.toy.worlds import PRESET_FRAMES

from astra_core.errors import AstraError
from astra_core.modality import raw_rows
from astra_core.plugins import get_registry

WORLDS = sorted(get_registry().worlds)


def test_the_four_builtin_worlds_are_registered_with_their_modalities():
    reg = get_registry()
    expected = {
        "free_camera": "camera_se3",
        "car": "vehicle_pose",
        "tabletop_arm": "robot_ee",
        "keyboard_game": "discrete_cmd",
    }
    assert {name: reg.worlds[name].modality for name in expected} == expected
    for name in expected:
        assert reg.embodiments[name].world == name


@pytest.mark.parametrize("name", WORLDS)
def test_episodes_are_deterministic_and_well_formed(name):
    world = get_registry().worlds[name]
    a, b = world.episode(5, 17), world.episode(5, 17)
    c = world.episode(6, 17)
    assert a.frames.shape == (3, 17, 64, 64) and a.frames.dtype == torch.float32
    assert float(a.frames.min()) >= -1 and float(a.frames.max()) <= 1
    assert torch.equal(a.frames, b.frames) and not torch.equal(a.frames, c.frames)
    assert a.embodiment == name and world.modality in a.actions
    # the raw stream is a valid input of the world's modality
    aligned = get_registry().modalities[world.modality].align(a.actions[world.modality], 4)
    assert aligned.actions.shape[0] == 5 and np.isfinite(aligned.actions).all()
    # frames change over time (the policy moves)
    assert (a.frames[:, -1] - a.frames[:, 0]).abs().mean() > 0.01


@pytest.mark.parametrize("name", WORLDS)
def test_render_future_is_exact_ground_truth(name):
    world = get_registry().worlds[name]
    ep = world.episode(11, 25)
    state = world.state_at(ep, 12)
    future = world.render_future(state, raw_rows(ep.actions[world.modality], 13, 25))
    assert torch.equal(future, ep.frames[:, 13:25])


@pytest.mark.parametrize("name", WORLDS)
def test_presets_give_distinct_futures(name):
    world = get_registry().worlds[name]
    state = world.initial_state(0)
    futures = {}
    for preset in world.presets():
        stream = world.preset_actions(preset, state)
        futures[preset] = world.render_future(state, raw_rows(stream, 1, None))
        assert futures[preset].shape == (3, PRESET_FRAMES, 64, 64)  # the demo rolls each out for 96 frames
    first = list(futures.values())
    assert all(not torch.equal(first[0], f) for f in first[1:])
    with pytest.raises(AstraError, match="unknown preset 'moonwalk'"):
        world.preset_actions("moonwalk", state)


def test_camera_presets_are_the_papers_seven():
    world = get_registry().worlds["free_camera"]
    assert set(world.presets()) == {
        "forward",
        "yaw_left",
        "yaw_right",
        "forward_left",
        "forward_right",
        "s_curve",
        "left_then_right",
    }
    state = world.initial_state(0)
    left = world.preset_actions("yaw_left", state)
    aligned = get_registry().modalities["camera_se3"].align(left, 1).actions
    assert np.allclose(aligned[1:, :3], 0, atol=1e-6)  # turning in place: no translation


def test_arm_grabs_and_carries_a_block():
    world = get_registry().worlds["tabletop_arm"]
    state = world.initial_state(0)
    block = state["blocks"][0]
    state = dict(state, ee=block + [0, 0.13, 0])
    rows = np.zeros((12, 7))
    rows[:, 6] = 1.0  # close the gripper
    rows[4:, 1] = 0.02  # then lift
    states, final = world.advance(state, rows)
    assert final["held"] == 0 and final["blocks"][0][1] > 0.1
    opened = np.zeros((1, 7))
    _, dropped = world.advance(final, opened)
    assert dropped["held"] == -1 and dropped["blocks"][0][1] == 0.0


def test_game_keys_move_the_camera():
    world = get_registry().worlds["keyboard_game"]
    s0 = world.initial_state(0)
    _, fwd = world.advance(s0, {"keys": [["W"]] * 5})
    _, back = world.advance(s0, {"keys": [["S"]] * 5})
    _, jump = world.advance(s0, {"keys": [["SPACE"]] + [[]] * 2})
    assert np.linalg.norm(fwd["pos"] - s0["pos"]) == pytest.approx(5 * world.step_size)
    assert np.allclose(fwd["pos"] - s0["pos"], -(back["pos"] - s0["pos"]))
    assert jump["pos"][1] > 0
    with pytest.raises(AstraError, match="unknown keys"):
        world.advance(s0, {"keys": [["F13"]]})
