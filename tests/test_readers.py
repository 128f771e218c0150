"""Real-dataset readers, on fixtures written in each dataset's true on-disk layout; fuzzed with hypothesis."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from astra_embodiments.readers.common import resample_poses
from astra_experts.geometry import invert_pose, make_pose, rotvec_to_rotmat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astra_core.data.video import frames_to_uint8, write_mp4
from astra_core.errors import ReaderError
from astra_core.plugins import get_registry


def _toy_episode(frames=9):
    world = get_registry().get("worlds", "free_camera")
    return world.episode(seed=11, num_frames=frames)


def _write_re10k(path, poses_c2w, times_us, url="https://www.youtube.com/watch?v=abcdefghijk"):
    lines = [url]
    for t, pose in zip(times_us, invert_pose(poses_c2w)):  # the file holds world-to-camera
        values = [int(t), 0.5, 0.9, 0.5, 0.5, 0, 0] + pose[:3].reshape(-1).tolist()
        lines.append(" ".join(str(v) for v in values))
    path.write_text("\n".join(lines) + "\n")


def test_realestate10k_from_a_frame_folder(tmp_path):
    ep = _toy_episode()
    poses = ep.actions["camera_se3"]
    times = 700_000 + np.arange(len(poses)) * 100_000  # 10 fps, µs; the names grow from 6 to 7 digits
    txt = tmp_path / "0a1b2c3d4e5f6a7b.txt"
    _write_re10k(txt, poses, times)
    folder = tmp_path / "0a1b2c3d4e5f6a7b"
    folder.mkdir()
    for t, frame in zip(times, frames_to_uint8(ep.frames)):
        iio.imwrite(folder / f"{t}.png", frame)
    out = get_registry().get("readers", "realestate10k").read(txt)
    assert out.embodiment == "realestate10k" and out.fps == pytest.approx(10.0)
    np.testing.assert_allclose(out.actions["camera_se3"], poses, atol=1e-9)  # back to camera-to-world
    assert out.frames.shape == (3, len(poses), 64, 64)
    np.testing.assert_allclose(out.frames.numpy(), ep.frames.numpy(), atol=1 / 127.5 + 1e-6)
    assert out.meta["url"].startswith("https://") and out.meta["intrinsics"].shape == (len(poses), 4)
    # The stream feeds the camera_se3 modality as is.
    aligned = get_registry().get("modalities", "camera_se3").align(out.actions["camera_se3"], 1)
    assert aligned.actions.shape == (len(poses), 9)


def test_16_bit_images_are_scaled_not_wrapped(tmp_path):
    from astra_embodiments.readers.common import read_frame_folder

    from astra_core.data.video import image_to_uint8

    grey = np.full((64, 64), 65535 // 2, dtype=np.uint16)  # mid grey in 16 bits; a uint8 cast gives 255
    iio.imwrite(tmp_path / "0.png", grey)
    iio.imwrite(tmp_path / "1.png", np.zeros((64, 64), dtype=np.uint16))
    frames, _ = read_frame_folder(tmp_path)
    assert abs(float(frames[:, 0].mean())) < 0.01 and float(frames[:, 1].max()) == -1.0
    assert image_to_uint8(np.array([True, False]), "m").tolist() == [255, 0]
    with pytest.raises(ReaderError, match="depth.exr: pixels of type float32"):
        image_to_uint8(np.zeros(3, dtype=np.float32), "depth.exr", ReaderError)


def test_realestate10k_from_an_mp4_resamples_poses_to_frame_times(tmp_path):
    ep = _toy_episode(frames=9)
    poses = ep.actions["camera_se3"]
    txt = tmp_path / "clip.txt"
    # Poses at 5 Hz (every other frame of the 10 fps video): the reader slerps the frames in between.
    _write_re10k(txt, poses[::2], 7_000_000 + np.arange(5) * 200_000)
    write_mp4(tmp_path / "clip.mp4", frames_to_uint8(ep.frames), fps=10)
    out = get_registry().get("readers", "realestate10k").read(txt)
    got = out.actions["camera_se3"]
    assert out.fps == pytest.approx(10.0) and len(got) == out.frames.shape[1] == 9
    np.testing.assert_allclose(got[::2], poses[::2], atol=1e-9)
    # The toy camera moves smoothly, so the slerped in-between poses land near the true ones.
    assert np.abs(got[1::2, :3, 3] - poses[1::2, :3, 3]).max() < 0.05


def test_resample_poses_slerps_rotation_and_lerps_translation():
    a = make_pose(np.eye(3), np.zeros(3))
    b = make_pose(rotvec_to_rotmat(np.array([0.0, 0.8, 0.0])), np.array([2.0, 0.0, 0.0]))
    mid = resample_poses(np.array([0.0, 1.0]), np.stack([a, b]), np.array([0.5]), "test")[0]
    np.testing.assert_allclose(mid[:3, :3], rotvec_to_rotmat(np.array([0.0, 0.4, 0.0])), atol=1e-9)
    np.testing.assert_allclose(mid[:3, 3], [1.0, 0.0, 0.0])
    with pytest.raises(ReaderError, match="outside the poses"):
        resample_poses(np.array([0.0, 1.0]), np.stack([a, b]), np.array([3.0]), "test")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "line 1 must be the video URL"),
        ("url\n1 2 3\n", "line 2 has 3 values, expected 19"),
        ("url\n" + " ".join(["x"] * 19) + "\n", "line 2 holds a value that is not a number"),
        ("url\n" + " ".join(["1"] * 19) + "\n", "at least 2 frame lines"),
        ("url\n" + " ".join(["nan"] * 19) + "\n", "NaN or Inf"),
    ],
)
def test_realestate10k_errors_name_file_and_line(tmp_path, body, message):
    txt = tmp_path / "bad.txt"
    txt.write_text(body)
    with pytest.raises(ReaderError, match=message) as err:
        get_registry().get("readers", "realestate10k").read(txt)
    assert str(txt) in str(err.value)


def test_realestate10k_bad_rotation_order_and_missing_frames(tmp_path):
    poses = _toy_episode(3).actions["camera_se3"]
    txt = tmp_path / "c.txt"
    _write_re10k(txt, poses, [3, 2, 1])
    with pytest.raises(ReaderError, match="line 3: timestamps must increase"):
        get_registry().get("readers", "realestate10k").read(txt)
    skewed = poses.copy()
    skewed[1, :3, :3] *= 2.0
    _write_re10k(txt, skewed, [1, 2, 3])
    with pytest.raises(ReaderError, match="line 3: the 3x3 block is not a rotation"):
        get_registry().get("readers", "realestate10k").read(txt)
    _write_re10k(txt, poses, [1, 2, 3])
    with pytest.raises(ReaderError, match="no frames: expected the folder c/ or the video c.mp4"):
        get_registry().get("readers", "realestate10k").read(txt)


_line = st.lists(
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**12), 10**12), st.text(max_size=4)),
    min_size=0,
    max_size=22,
).map(lambda vals: " ".join(str(v) for v in vals))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_line, max_size=6), raw=st.binary(max_size=64), use_raw=st.booleans())
def test_realestate10k_fuzz_only_raises_reader_errors(tmp_path, lines, raw, use_raw):
    txt = tmp_path / "fuzz.txt"
    if use_raw:
        txt.write_bytes(raw)
    else:
        txt.write_text("\n".join(["https://example.com/v"] + lines))
    with pytest.raises(ReaderError):
        get_registry().get("readers", "realestate10k").read(txt)  # never another exception (no frames exist)


def _write_spatialvid(root, ep, stride=2, indexes=True, name="7f3e9a2b-clip"):
    """The dataset's layout: annotations/<group>/<clip>/{poses.npy, indexes.txt, ...} and videos/<group>/<clip>.mp4."""
    import json

    import quaternion
    from astra_experts.geometry import wxyz_to_xyzw

    folder = root / "annotations" / "group_0001" / name
    folder.mkdir(parents=True)
    picked = np.arange(0, ep.frames.shape[1], stride)
    w2c = invert_pose(ep.actions["camera_se3"][picked])
    q = wxyz_to_xyzw(quaternion.as_float_array(quaternion.from_rotation_matrix(w2c[:, :3, :3])))
    np.save(folder / "poses.npy", np.concatenate([w2c[:, :3, 3], q], axis=1))
    np.save(folder / "intrinsics.npy", np.tile([0.6, 0.9, 0.5, 0.5], (len(picked), 1)))
    (folder / "caption.json").write_text(json.dumps({"SceneSummary": "a field of spheres", "CamMotion": "dolly in"}))
    if indexes:
        (folder / "indexes.txt").write_text(
            f"# total {len(picked)} indexes\n" + "".join(f"{i} {f}\n" for i, f in enumerate(picked))
        )
    (root / "videos" / "group_0001").mkdir(parents=True, exist_ok=True)
    write_mp4(root / "videos" / "group_0001" / f"{name}.mp4", frames_to_uint8(ep.frames), fps=10)
    return folder, picked


def test_spatialvid_reads_the_dataset_layout(tmp_path):
    ep = _toy_episode(frames=9)
    folder, picked = _write_spatialvid(tmp_path, ep, stride=2)
    out = get_registry().get("readers", "spatialvid").read(folder)
    poses = out.actions["camera_se3"]
    assert len(poses) == out.frames.shape[1] == picked[-1] + 1 and out.fps == pytest.approx(10.0)
    # Annotated frames come back exactly (inverted to camera-to-world); the others are slerped.
    np.testing.assert_allclose(poses[picked], ep.actions["camera_se3"][picked], atol=1e-9)
    assert np.abs(poses[1::2, :3, 3] - ep.actions["camera_se3"][1:9:2, :3, 3]).max() < 0.05
    assert out.meta["caption"]["SceneSummary"] == "a field of spheres" and out.meta["intrinsics"].shape == (5, 4)


def test_spatialvid_without_indexes_uses_the_pipeline_interval(tmp_path):
    ep = _toy_episode(frames=9)
    folder, _ = _write_spatialvid(tmp_path, ep, stride=2, indexes=False)  # int(0.2 * 10 fps) = 2
    out = get_registry().get("readers", "spatialvid").read(folder)
    np.testing.assert_allclose(out.actions["camera_se3"][::2], ep.actions["camera_se3"][::2], atol=1e-9)


def test_spatialvid_errors(tmp_path):
    reader = get_registry().get("readers", "spatialvid")
    ep = _toy_episode(frames=5)
    folder, _ = _write_spatialvid(tmp_path, ep, stride=1)
    np.save(folder / "poses.npy", np.zeros((5, 6)))
    with pytest.raises(ReaderError, match=r"poses.npy: expected shape \(N, 7\), got \(5, 6\)"):
        reader.read(folder)
    np.save(folder / "poses.npy", np.zeros((5, 7)))
    with pytest.raises(ReaderError, match="row 0 has a zero quaternion"):
        reader.read(folder)
    (folder / "poses.npy").write_bytes(b"garbage")
    with pytest.raises(ReaderError, match="not a readable .npy"):
        reader.read(folder)
    with pytest.raises(ReaderError, match="expected a SpatialVID annotation folder"):
        reader.read(tmp_path / "nope")
    other, _ = _write_spatialvid(tmp_path / "b", ep, stride=1)
    (other / "indexes.txt").write_text("0 0\n1 1\n2 2\n3 3\n4 40\n")
    with pytest.raises(ReaderError, match="frame index 40 is past the video's 5 frames"):
        reader.read(other)
    (tmp_path / "b" / "videos" / "group_0001" / f"{other.name}.mp4").unlink()
    with pytest.raises(ReaderError, match="no video"):
        reader.read(other)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    table=st.lists(st.lists(st.floats(width=32), min_size=7, max_size=7), min_size=0, max_size=5),
    index_text=st.text(max_size=40),
)
def test_spatialvid_fuzz_only_raises_reader_errors(tmp_path, table, index_text):
    folder = tmp_path / "annotations" / "g" / "clip"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "poses.npy", np.array(table, dtype=np.float32).reshape(-1, 7))
    (folder / "indexes.txt").write_text(index_text)
    with pytest.raises(ReaderError):
        get_registry().get("readers", "spatialvid").read(folder)  # no video exists, or the data is bad


def _write_robomimic(path, demos=2, frames=6, libero=False):
    import json

    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        env = {"env_name": "LIBERO_Kitchen" if libero else "Lift", "env_kwargs": {"control_freq": 20}}
        data.attrs["env_args"] = json.dumps(env)
        for d in range(demos):
            g = data.create_group(f"demo_{d}")
            actions = rng.uniform(-0.1, 0.1, (frames, 7))
            actions[:, 6] = np.where(np.arange(frames) < frames // 2, -1.0, 1.0)
            g.create_dataset("actions", data=actions)
            img = np.zeros((frames, 32, 32, 3), dtype=np.uint8)
            img[:, :8] = 255  # a white band at the top of the (upright) image
            if libero:
                img = img[:, ::-1, ::-1]  # LIBERO stores it upside down
            g.create_group("obs").create_dataset("agentview_rgb" if libero else "agentview_image", data=img)
    return path


def test_robot_hdf5_robomimic_and_libero(tmp_path):
    reader = get_registry().get("readers", "robot_hdf5")
    path = _write_robomimic(tmp_path / "lift.hdf5")
    assert reader.demos(path) == ["demo_0", "demo_1"]
    ep = reader.read(f"{path}:demo_1")
    raw = ep.actions["robot_ee"]
    import h5py

    with h5py.File(path) as f:
        actions = f["data/demo_1/actions"][()]
    np.testing.assert_allclose(raw[1:, :6], actions[:-1, :6])  # actions[t] leads into frame t + 1
    assert set(np.unique(raw[:, 6])) == {0.0, 1.0} and raw[1, 6] == 0.0  # gripper -1/+1 -> open 0 / closed 1
    assert ep.frames.shape == (3, 6, 64, 64) and ep.fps == 20.0
    assert float(ep.frames[:, 0, :8].mean()) > 0.9  # upright: the band is at the top
    get_registry().get("modalities", "robot_ee").align(raw, 1)
    libero = reader.read(_write_robomimic(tmp_path / "libero.hdf5", demos=1, libero=True))
    assert libero.meta["flipped"] and float(libero.frames[:, 0, :8].mean()) > 0.9
    with pytest.raises(ReaderError, match="holds 2 demonstrations; pick one"):
        reader.read(path)
    with pytest.raises(ReaderError, match="no demonstration 'demo_9'"):
        reader.read(f"{path}:demo_9")
    (tmp_path / "junk.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(ReaderError, match="not a readable HDF5 file"):
        reader.read(tmp_path / "junk.hdf5")


def test_game_log_maps_vpt_records(tmp_path):
    import json

    ep = get_registry().get("worlds", "keyboard_game").episode(seed=3, num_frames=5)
    write_mp4(tmp_path / "run.mp4", frames_to_uint8(ep.frames), fps=20)
    records = [
        {"keyboard": {"keys": ["key.keyboard.w"]}, "mouse": {"dx": 1.5, "dy": 0}},
        {"keyboard": {"keys": ["key.keyboard.w", "key.keyboard.left.shift", "key.keyboard.e"]}, "mouse": {"dx": -2}},
        {"keyboard": {"keys": ["key.keyboard.space"]}, "mouse": {}},
        {"keyboard": {"keys": []}, "mouse": {"dx": 0, "dy": 3}},
        {"keyboard": {"keys": ["key.keyboard.a"]}},
    ]
    (tmp_path / "run.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    out = get_registry().get("readers", "game_log").read(tmp_path / "run.mp4")
    stream = out.actions["discrete_cmd"]
    assert stream["keys"] == [[], ["W"], ["W", "SHIFT"], ["SPACE"], []]
    np.testing.assert_allclose(stream["mouse"][:, 0], [0, 1.5, -2, 0, 0])
    assert out.meta["dropped_keys"] == {"key.keyboard.e": 1} and out.fps == pytest.approx(20.0)
    get_registry().get("modalities", "discrete_cmd").align(stream, 1)
    (tmp_path / "run.jsonl").write_text('{"keyboard": {"keys": "w"}}\n')
    with pytest.raises(ReaderError, match="line 1: keyboard.keys must be a list"):
        get_registry().get("readers", "game_log").read(tmp_path / "run.mp4")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(
        st.one_of(
            st.text(max_size=30),
            st.recursive(
                st.none() | st.booleans() | st.floats() | st.text(max_size=8),
                lambda c: (
                    st.lists(c, max_size=3)
                    | st.dictionaries(st.sampled_from(["keyboard", "mouse", "keys", "dx", "dy"]), c, max_size=3)
                ),
                max_leaves=6,
            ).map(lambda v: __import__("json").dumps(v)),
        ),
        max_size=5,
    )
)
def test_game_log_fuzz_only_raises_reader_errors(tmp_path, lines):
    (tmp_path / "g.jsonl").write_text("\n".join(lines))
    with pytest.raises(ReaderError):
        get_registry().get("readers", "game_log").read(tmp_path / "g.mp4")  # no video exists, or the log is bad


def test_reader_episodes_encode_into_the_latent_cache(tmp_path):
    """`astra encode --reader` takes real-format files into HDF5 shards the trainer reads."""
    from astra_core.apps.cli import main
    from astra_core.data.cache import read_shard

    ep = _toy_episode(frames=5)
    txt = tmp_path / "clip.txt"
    _write_re10k(txt, ep.actions["camera_se3"], np.arange(5) * 100_000)
    write_mp4(tmp_path / "clip.mp4", frames_to_uint8(ep.frames), fps=10)
    game = get_registry().get("worlds", "keyboard_game").episode(seed=2, num_frames=5)
    write_mp4(tmp_path / "g.mp4", frames_to_uint8(game.frames), fps=10)
    (tmp_path / "g.jsonl").write_text('{"keyboard": {"keys": ["key.keyboard.w"]}}\n' * 5)
    out = tmp_path / "cache"
    assert main(["encode", "--reader", "realestate10k", str(txt), "--out", str(out / "re10k")]) == 0
    assert main(["encode", "--reader", "game_log", str(tmp_path / "g.mp4"), "--out", str(out / "game")]) == 0
    (cam,) = read_shard(next((out / "re10k").glob("shard-*.h5")))
    (keys,) = read_shard(next((out / "game").glob("shard-*.h5")))
    assert cam.embodiment == "realestate10k" and cam.latents.shape[1] == 5 and cam.actions["camera_se3"].shape == (5, 9)
    assert keys.actions["discrete_cmd"][1:, 0].tolist() == [1.0] * 4  # W held from frame 1 on


def test_encode_reads_at_the_size_asked_for_and_names_bad_frames(tmp_path):
    from dataclasses import replace

    from astra_core.apps.cli import main
    from astra_core.apps.encode import encode_episode
    from astra_core.data.cache import read_shard
    from astra_core.data.tokenizer import PixelTokenizer
    from astra_core.errors import ShapeError

    game = get_registry().get("worlds", "keyboard_game").episode(seed=2, num_frames=5)
    big = torch.nn.functional.interpolate(game.frames.permute(1, 0, 2, 3), size=(128, 128), mode="nearest")
    write_mp4(tmp_path / "g.mp4", frames_to_uint8(big.permute(1, 0, 2, 3)), fps=10)
    (tmp_path / "g.jsonl").write_text('{"keyboard": {"keys": ["key.keyboard.w"]}}\n' * 5)
    argv = ["encode", "--reader", "game_log", str(tmp_path / "g.mp4"), "--size", "128x128", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0
    (episode,) = read_shard(next((tmp_path / "c").glob("shard-*.h5")))
    assert episode.latents.shape[-2:] == (32, 32)
    # decoded at 128 × 128, not at the reader's 64 × 64 and scaled up: one-pixel detail survives
    latents = torch.as_tensor(episode.latents)
    assert float((latents - PixelTokenizer(4).encode(big.permute(1, 0, 2, 3)[None])[0]).abs().mean()) < 0.05

    modalities = get_registry().modalities
    scaled = replace(game, frames=(game.frames + 1) * 127.5, source="raw.mp4")  # 0 – 255, not [-1, 1]
    with pytest.raises(ShapeError, match=r"raw.mp4: frames: values in \[54.9, 241\].*/ 127.5 - 1"):
        encode_episode(scaled, PixelTokenizer(4), modalities)
    odd = replace(game, frames=game.frames[..., :62, :62], source="odd.mp4")
    with pytest.raises(ShapeError, match=r"odd.mp4: frames of 62×62.*multiples of 8.*--size 56x56"):
        encode_episode(odd, PixelTokenizer(8), modalities)


def _write_nuscenes(root, frames=6):
    """A one-scene nuScenes v1.0 layout: tables in root/v1.0-mini, CAM_FRONT images in samples/ and sweeps/."""
    import json

    car = get_registry().get("worlds", "car")
    ep = car.episode(seed=5, num_frames=frames)
    stream = ep.actions["vehicle_pose"]
    tables = root / "v1.0-mini"
    tables.mkdir(parents=True)
    t = {name: [] for name in ("scene", "sample", "sample_data", "calibrated_sensor", "sensor", "ego_pose")}
    t["sensor"] = [
        {"token": "s-front", "channel": "CAM_FRONT", "modality": "camera"},
        {"token": "s-lidar", "channel": "LIDAR_TOP", "modality": "lidar"},
    ]
    t["calibrated_sensor"] = [
        {"token": "c-front", "sensor_token": "s-front", "translation": [1, 0, 1.5], "rotation": [1, 0, 0, 0]},
        {"token": "c-lidar", "sensor_token": "s-lidar", "translation": [0, 0, 2], "rotation": [1, 0, 0, 0]},
    ]
    t["scene"] = [{"token": "scene-a", "name": "scene-0061", "first_sample_token": "k0"}]
    t["sample"] = [{"token": f"k{i}", "scene_token": "scene-a", "timestamp": 1_000_000 + i * 500_000} for i in (0, 1)]
    for i, frame in enumerate(frames_to_uint8(ep.frames)):
        key = i % 3 == 0
        stamp = 1_000_000 + i * 83_333  # 12 Hz camera
        folder = "samples" if key else "sweeps"
        name = f"{folder}/CAM_FRONT/n008__CAM_FRONT__{stamp}.jpg"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(root / name.replace(".jpg", ".png"), frame)  # lossless stand-in for the jpg
        name = name.replace(".jpg", ".png")
        t["ego_pose"].append(
            {
                "token": f"e{i}",
                "timestamp": stamp,
                "translation": stream["translation"][i].tolist(),
                "rotation": stream["rotation"][i].tolist(),
            }
        )
        common = {"ego_pose_token": f"e{i}", "timestamp": stamp, "is_key_frame": key, "filename": name}
        t["sample_data"].append(
            {"token": f"d{i}", "sample_token": f"k{i // 3}", "calibrated_sensor_token": "c-front"} | common
        )
        t["sample_data"].append(
            {"token": f"l{i}", "sample_token": f"k{i // 3}", "calibrated_sensor_token": "c-lidar"} | common
        )
    t["sample_data"].reverse()  # the reader orders by timestamp, not by file order
    for name, rows in t.items():
        (tables / f"{name}.json").write_text(json.dumps(rows))
    return tables, ep


def test_nuscenes_joins_the_tables(tmp_path):
    tables, ep = _write_nuscenes(tmp_path)
    out = get_registry().get("readers", "nuscenes").read(f"{tables}:scene-0061")
    stream = out.actions["vehicle_pose"]
    np.testing.assert_allclose(stream["translation"], ep.actions["vehicle_pose"]["translation"])
    np.testing.assert_allclose(np.abs(stream["rotation"]), np.abs(ep.actions["vehicle_pose"]["rotation"]), atol=1e-12)
    assert out.frames.shape == (3, 6, 64, 64) and out.fps == pytest.approx(12.0, rel=1e-3)
    np.testing.assert_allclose(out.frames.numpy(), ep.frames.numpy(), atol=1 / 127.5 + 1e-6)
    assert out.meta["key_frame"] == [True, False, False, True, False, False]
    get_registry().get("modalities", "vehicle_pose").align(stream, 1)


def test_nuscenes_errors_name_table_and_token(tmp_path):
    import json

    reader = get_registry().get("readers", "nuscenes")
    tables, _ = _write_nuscenes(tmp_path)
    with pytest.raises(ReaderError, match="no scene named 'scene-9999'"):
        reader.read(f"{tables}:scene-9999")
    with pytest.raises(ReaderError, match="give the tables folder and a scene"):
        reader.read(tables)
    rows = json.loads((tables / "ego_pose.json").read_text())
    (tables / "ego_pose.json").write_text(json.dumps(rows[1:]))
    with pytest.raises(ReaderError, match="sample_data d0 points to ego_pose token 'e0', which does not exist"):
        reader.read(f"{tables}:scene-0061")
    (tables / "sensor.json").unlink()
    with pytest.raises(ReaderError, match="missing table sensor.json"):
        reader.read(f"{tables}:scene-0061")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["token", "sample_token", "calibrated_sensor_token", "ego_pose_token", "timestamp", "filename"]
            ),
            c,
            max_size=4,
        )
    ),
    max_leaves=8,
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=st.sampled_from(["sample_data", "ego_pose", "sensor", "scene", "sample"]), value=_json)
def test_nuscenes_fuzz_only_raises_reader_errors(tmp_path_factory, table, value):
    import json

    root = tmp_path_factory.mktemp("nus")
    tables, _ = _write_nuscenes(root, frames=3)
    (tables / f"{table}.json").write_text(json.dumps(value))
    try:
        get_registry().get("readers", "nuscenes").read(f"{tables}:scene-0061")
    except ReaderError:
        pass  # a clear error; anything else fails the test


def _example(steps=5, seed=0, image_size=(24, 32)):
    import io

    from PIL import Image
    from tfrecord import example_pb2

    rng = np.random.default_rng(seed)
    ex = example_pb2.Example()
    f = ex.features.feature
    world, rot = rng.uniform(-0.05, 0.05, (steps, 3)), rng.uniform(-0.1, 0.1, (steps, 3))
    grip = np.array([0, 1, 0, -1, 0][:steps], dtype=float)
    f["steps/action/world_vector"].float_list.value.extend(world.reshape(-1))
    f["steps/action/rotation_delta"].float_list.value.extend(rot.reshape(-1))
    f["steps/action/gripper_closedness_action"].float_list.value.extend(grip)
    f["steps/is_first"].int64_list.value.extend([1] + [0] * (steps - 1))
    for t in range(steps):
        buf = io.BytesIO()
        Image.fromarray(np.full((*image_size, 3), 40 * t, dtype=np.uint8)).save(buf, format="JPEG")
        f["steps/observation/image"].bytes_list.value.append(buf.getvalue())
    return ex.SerializeToString(), world, rot


def _frame(data: bytes) -> bytes:
    import struct

    from astra_embodiments.readers.rlds import _masked_crc

    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked_crc(length)) + data + struct.pack("<I", _masked_crc(data))


def test_rt1_tfrecord_episodes(tmp_path):
    reader = get_registry().get("readers", "rt1_tfrecord")
    first, _, _ = _example(seed=0)
    second, world, rot = _example(seed=1)
    shard = tmp_path / "fractal20220817_data-train.tfrecord-00000-of-01024"
    shard.write_bytes(_frame(first) + _frame(second))
    ep = reader.read(f"{shard}:1")
    raw = ep.actions["robot_ee"]
    np.testing.assert_allclose(raw[1:, :3], world[:-1], rtol=1e-6)  # float32 on disk
    np.testing.assert_allclose(raw[1:, 3:6], rot[:-1], rtol=1e-6)
    assert raw[:, 6].tolist() == [0, 0, 1, 1, 0]  # commands 0, +1, 0, -1 -> the gripper's state, one step later
    assert ep.frames.shape == (3, 5, 64, 64) and ep.frames[:, 4].mean() > ep.frames[:, 0].mean()
    get_registry().get("modalities", "robot_ee").align(raw, 1)
    assert reader.read(shard).source.endswith(":0")
    with pytest.raises(ReaderError, match="no episode 5"):
        reader.read(f"{shard}:5")


def test_rt1_tfrecord_images_of_two_sizes_are_named(tmp_path):
    import io

    from PIL import Image
    from tfrecord import example_pb2

    data, _, _ = _example(steps=3)
    ex = example_pb2.Example.FromString(data)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 20, 3), dtype=np.uint8)).save(buf, format="PNG")
    ex.features.feature["steps/observation/image"].bytes_list.value[2] = buf.getvalue()
    shard = tmp_path / "s.tfrecord"
    shard.write_bytes(_frame(ex.SerializeToString()))
    with pytest.raises(ReaderError, match=r"step 2 image is 16×20 \(H×W\), step 0's 24×32"):
        get_registry().get("readers", "rt1_tfrecord").read(f"{shard}:0")


def test_rt1_tfrecord_crc_and_truncation_are_reported(tmp_path):
    reader = get_registry().get("readers", "rt1_tfrecord")
    data, _, _ = _example()
    good = _frame(data)
    shard = tmp_path / "s.tfrecord"
    corrupt = bytearray(good + good)
    corrupt[len(good) + 40] ^= 0xFF  # a byte inside the second record's data
    shard.write_bytes(bytes(corrupt))
    reader.read(f"{shard}:0")  # the first record is intact
    with pytest.raises(ReaderError, match=f"record 1 at byte {len(good)}: bad CRC of the data"):
        reader.read(f"{shard}:1")
    shard.write_bytes(good + good[: len(good) // 2])
    with pytest.raises(ReaderError, match="record 1 at byte .*: truncated"):
        reader.read(f"{shard}:1")
    from tfrecord import example_pb2

    ex = example_pb2.Example()
    ex.ParseFromString(data)
    del ex.features.feature["steps/observation/image"]
    shard.write_bytes(_frame(ex.SerializeToString()))
    with pytest.raises(ReaderError, match="missing keys \\['steps/observation/image'\\]"):
        reader.read(shard)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200), framed=st.booleans())
def test_rt1_tfrecord_fuzz_only_raises_reader_errors(tmp_path, raw, framed):
    shard = tmp_path / "fuzz.tfrecord"
    shard.write_bytes(_frame(raw) if framed else raw)
    try:
        get_registry().get("readers", "rt1_tfrecord").read(shard)
    except ReaderError:
        pass


def test_rt1_without_the_extra_names_it(tmp_path, monkeypatch):
    import sys

    shard = tmp_path / "s.tfrecord"
    shard.write_bytes(_frame(_example()[0]))
    monkeypatch.setitem(sys.modules, "tfrecord", None)  # as if the rlds extra were not installed
    with pytest.raises(ReaderError, match='needs the rlds extra: pip install "astra-world\\[rlds\\]"'):
        get_registry().get("readers", "rt1_tfrecord").read(shard)


def test_example_real_data_config_trains_from_reader_shards(tmp_path):
    """examples/configs/real_data.yaml, pointed at shards encoded from reader fixtures, trains."""
    from pathlib import Path

    import yaml

    from astra_core.apps.cli import main
    from astra_core.config import TrainConfig

    root = Path(__file__).resolve().parents[1]
    example = root / "examples" / "configs" / "real_data.yaml"
    TrainConfig.from_yaml(example)  # the shipped file is valid as it stands
    ep = _toy_episode(frames=9)
    clips, robots = [], []
    for i in range(2):  # whole episodes are held out, so each embodiment needs two
        txt = tmp_path / f"clip{i}.txt"
        _write_re10k(txt, ep.actions["camera_se3"], np.arange(9) * 100_000)
        write_mp4(tmp_path / f"clip{i}.mp4", frames_to_uint8(ep.frames), fps=10)
        clips.append(str(txt))
        robots.append(str(_write_robomimic(tmp_path / f"lift{i}.hdf5", demos=1, frames=9)))
    assert main(["encode", "--reader", "realestate10k", *clips, "--out", str(tmp_path / "cache" / "re10k")]) == 0
    assert main(["encode", "--reader", "robot_hdf5", *robots, "--out", str(tmp_path / "cache" / "libero")]) == 0
    cfg = yaml.safe_load(example.read_text())
    cfg["model"]["dit"] = {"preset": "tiny", "dim": 32, "ffn_dim": 64, "num_heads": 2, "num_layers": 1}
    cfg["model"]["dit"] |= {"in_dim": 48, "out_dim": 48}
    cfg["data"]["cache"] = [str(tmp_path / "cache" / "*" / "shard-*.h5")]
    cfg["data"]["weights"] = {"realestate10k": 1.0, "robot_arm": 1.0}
    cfg["data"]["history_chunks"] = 1
    cfg["model"]["history"]["window"] = 2
    cfg |= {"steps": 2, "batch_size": 2, "precision": "fp32", "eval_every": 0, "out_dir": str(tmp_path / "run")}
    (tmp_path / "real.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "real.yaml")]) == 0
    assert (tmp_path / "run" / "model.safetensors").is_file()


def _write_lerobot(root, version="v2.1", episodes=2, frames=6):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    world = get_registry().get("worlds", "tabletop_arm")
    eps = [world.episode(seed=20 + e, num_frames=frames) for e in range(episodes)]
    info = {
        "codebase_version": version,
        "fps": 10,
        "chunks_size": 1000,
        "features": {
            "observation.images.top": {"dtype": "video", "shape": [64, 64, 3]},
            "action": {"dtype": "float32", "shape": [7]},
        },
    }
    if version.startswith("v2"):
        info["data_path"] = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
        info["video_path"] = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
        for e, ep in enumerate(eps):
            acts = ep.actions["robot_ee"]
            table = pa.table(
                {"action": acts.tolist(), "episode_index": [e] * frames, "frame_index": list(range(frames))}
            )
            path = root / f"data/chunk-000/episode_{e:06d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path)
            write_mp4(
                root / f"videos/chunk-000/observation.images.top/episode_{e:06d}.mp4", frames_to_uint8(ep.frames), 10
            )
    else:
        info["data_path"] = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
        info["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
        acts = np.concatenate([ep.actions["robot_ee"] for ep in eps])
        index = [e for e in range(episodes) for _ in range(frames)]
        (root / "data/chunk-000").mkdir(parents=True)
        pq.write_table(
            pa.table({"action": acts.tolist(), "episode_index": index}), root / "data/chunk-000/file-000.parquet"
        )
        video = np.concatenate([frames_to_uint8(ep.frames) for ep in eps])
        write_mp4(root / "videos/observation.images.top/chunk-000/file-000.mp4", video, 10)
        meta = {
            "episode_index": list(range(episodes)),
            "data/chunk_index": [0] * episodes,
            "data/file_index": [0] * episodes,
            "videos/observation.images.top/chunk_index": [0] * episodes,
            "videos/observation.images.top/file_index": [0] * episodes,
            "videos/observation.images.top/from_timestamp": [e * frames / 10 for e in range(episodes)],
        }
        (root / "meta/episodes/chunk-000").mkdir(parents=True)
        pq.write_table(pa.table(meta), root / "meta/episodes/chunk-000/file-000.parquet")
    (root / "meta").mkdir(exist_ok=True)
    (root / "meta/info.json").write_text(json.dumps(info))
    return eps


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_lerobot_layouts(tmp_path, version):
    eps = _write_lerobot(tmp_path, version)
    out = get_registry().get("readers", "lerobot").read(f"{tmp_path}:1")
    truth = eps[1]
    np.testing.assert_allclose(out.actions["robot_ee"][1:], truth.actions["robot_ee"][:-1], atol=1e-12)
    assert out.frames.shape == (3, 6, 64, 64) and out.fps == 10.0
    # The right episode's frames: closer to episode 1's truth than to episode 0's.
    err_right = float((out.frames - truth.frames).abs().mean())
    err_wrong = float((out.frames - eps[0].frames).abs().mean())
    assert err_right < 0.05 and err_right < err_wrong


def test_lerobot_errors(tmp_path, monkeypatch):
    import json
    import sys

    reader = get_registry().get("readers", "lerobot")
    with pytest.raises(ReaderError, match="no meta/info.json"):
        reader.read(f"{tmp_path}:0")
    _write_lerobot(tmp_path, "v2.1", episodes=1)
    with pytest.raises(ReaderError, match="give the dataset folder and an episode index"):
        reader.read(tmp_path)
    with pytest.raises(ReaderError, match="missing parquet file"):
        reader.read(f"{tmp_path}:3")
    info = json.loads((tmp_path / "meta/info.json").read_text())
    (tmp_path / "meta/info.json").write_text(json.dumps(info | {"codebase_version": "v1.6"}))
    with pytest.raises(ReaderError, match="'v1.6' is not v2.x or v3.0"):
        reader.read(f"{tmp_path}:0")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ReaderError, match='needs the lerobot extra: pip install "astra-world\\[lerobot\\]"'):
        reader.read(f"{tmp_path}:0")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(info=_json, version=st.sampled_from(["v2.1", "v3.0"]))
def test_lerobot_fuzz_only_raises_reader_errors(tmp_path_factory, info, version):
    import json

    root = tmp_path_factory.mktemp("lr")
    (root / "meta").mkdir()
    if isinstance(info, dict):
        info = info | {"codebase_version": version, "fps": 10}
    (root / "meta/info.json").write_text(json.dumps(info))
    try:
        get_registry().get("readers", "lerobot").read(f"{root}:0")
    except ReaderError:
        pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    actions_shape=st.lists(st.integers(0, 8), min_size=0, max_size=3),
    image_shape=st.lists(st.integers(0, 6), min_size=0, max_size=5),
    image_dtype=st.sampled_from(["uint8", "float32", "int64"]),
    demo=st.sampled_from(["demo_0", "demo_x", "0"]),
    nan=st.booleans(),
)
def test_robot_hdf5_fuzz_only_raises_reader_errors(
    tmp_path_factory, actions_shape, image_shape, image_dtype, demo, nan
):
    import h5py

    path = tmp_path_factory.mktemp("h5") / "f.hdf5"
    with h5py.File(path, "w") as f:
        g = f.create_group(f"data/{demo}")
        actions = np.zeros(actions_shape)
        if nan and actions.size:
            actions.flat[0] = np.nan
        g.create_dataset("actions", data=actions)
        g.create_dataset("obs/agentview_image", data=np.zeros(image_shape, dtype=image_dtype))
    try:
        get_registry().get("readers", "robot_hdf5").read(path)
    except ReaderError:
        pass
