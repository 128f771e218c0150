"""`astra demo` and `astra rollout`: outputs on disk, presets, action files and their errors."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import yaml
from astra_embodiments.toy.worlds import PRESET_FRAMES

from astra_core.apps.cli import main
from astra_core.apps.demo import run_demo
from astra_core.data.action_files import ActionFileError, load_action_file
from astra_core.errors import AstraError
from astra_core.plugins import get_registry


def test_every_preset_is_long_enough_for_the_demo():
    for world in get_registry().worlds.values():
        state = world.initial_state(0)
        assert len(world.presets()) >= 3
        for name in world.presets():
            stream = world.preset_actions(name, state)
            states, _ = world.advance(state, _rows(stream, 1))
            assert len(states) == PRESET_FRAMES >= 96
        # The presets of a world drive one start along different paths.
        paths = [_path(world, state, world.preset_actions(n, state)) for n in world.presets()]
        for i in range(len(paths)):
            for j in range(i + 1, len(paths)):
                assert np.abs(paths[i] - paths[j]).max() > 0.05, (world.name, i, j)
    assert len(get_registry().get("worlds", "free_camera").presets()) == 7


def _path(world, state, stream) -> np.ndarray:
    """The numeric state fields every 12 frames, flattened."""
    states, _ = world.advance(state, _rows(stream, 1))
    picked = states[11::12]
    return np.concatenate(
        [np.ravel(np.asarray(v, dtype=float)) for s in picked for k, v in sorted(s.items()) if k != "seed"]
    )


def _rows(stream, start):
    from astra_core.modality import raw_rows

    return raw_rows(stream, start, None)


def test_demo_writes_videos_and_a_contact_sheet(tmp_path):
    result = run_demo(None, tmp_path, num_frames=4, embodiments=["car", "keyboard_game"], progress=False, num_steps=2)
    assert [(r.world, r.preset) for r in result.rollouts] == [
        ("car", "straight"),
        ("car", "turn"),
        ("car", "stop"),
        ("keyboard_game", "wwww"),
        ("keyboard_game", "wasd"),
        ("keyboard_game", "turn_and_jump"),
    ]
    for r in result.rollouts:
        assert r.truth.shape == r.prediction.shape == (3, 5, 64, 64)
        assert (r.truth[:, 0] == r.prediction[:, 0]).all()  # the shared ground-truth start
        mp4, gif = r.files
        assert mp4.suffix == ".mp4" and gif.suffix == ".gif"
        video = iio.imread(mp4, index=None)
        assert video.shape[0] == 5 and video.shape[1] == 128  # 2x upscaled, truth | prediction
        assert iio.imread(gif, index=None).shape[:3] == (5, 64, 130)  # the gif at the model's resolution
    sheet = iio.imread(result.contact_sheet)
    assert sheet.shape[0] == 6 * (2 * 64 + 4) and sheet.shape[2] == 3
    assert result.generated_frames == 6 * 4 and result.frames_per_second > 0
    assert not list(tmp_path.rglob("*.tmp*"))


def test_demo_cli_and_unknown_embodiment(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path), "--frames", "2", "--embodiment", "tabletop_arm", "--steps", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "contact sheet" in out and "frames/s" in out and (tmp_path / "tabletop_arm" / "grip.gif").is_file()
    assert main(["demo", "--out", str(tmp_path), "--embodiment", "submarine"]) == 2
    assert "unknown ['submarine']" in capsys.readouterr().err


def test_rollout_from_files_in_every_format(tmp_path):
    registry = get_registry()
    car = registry.get("modalities", "vehicle_pose")
    world = registry.get("worlds", "car")
    stream = world.preset_actions("turn", world.initial_state(0))
    as_json = {"translation": stream["translation"][:9].tolist(), "rotation": stream["rotation"][:9].tolist()}
    (tmp_path / "a.json").write_text(json.dumps(as_json))
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"vehicle_pose": as_json}))
    np.savez(tmp_path / "a.npz", translation=stream["translation"][:9], rotation=stream["rotation"][:9])
    for name in ("a.json", "a.yaml", "a.npz"):
        loaded = load_action_file(tmp_path / name, car)
        np.testing.assert_allclose(loaded["translation"], stream["translation"][:9])
    keys = registry.get("modalities", "discrete_cmd")
    np.savez(tmp_path / "k.npz", keys=np.array(["", "W", "W+LEFT"]), mouse=np.zeros((3, 2)))
    assert load_action_file(tmp_path / "k.npz", keys)["keys"] == [[], ["W"], ["W", "LEFT"]]
    np.savez(tmp_path / "keys_only.npz", keys=np.array(["", "W", "W+LEFT"]))  # the mouse is optional
    assert load_action_file(tmp_path / "keys_only.npz", keys)["keys"] == [[], ["W"], ["W", "LEFT"]]

    out = tmp_path / "out"
    code = main(["rollout", "--embodiment", "car", "--actions", str(tmp_path / "a.yaml"), "--out", str(out)])
    assert code == 0
    trace = json.loads((out / "actions.json").read_text())
    assert trace["frames"] == 8 and len(trace["raw"]) == 9 and len(trace["latent_actions"]) == 9
    assert trace["latent_mask"][0] == 0 and trace["latent_mask"][1] == 1
    assert iio.imread(out / "rollout.mp4", index=None).shape[0] == 9  # context frame + 8
    # 3 frames in steps of 2: the model was given the rows of 2 whole steps, and the trace holds those
    argv = ["rollout", "--embodiment", "car", "--actions", str(tmp_path / "a.yaml"), "--frames", "3", "--steps", "1"]
    assert main([*argv, "--out", str(tmp_path / "three")]) == 0
    trace = json.loads((tmp_path / "three" / "actions.json").read_text())
    assert trace["frames"] == 3 and len(trace["raw"]) == 5 and len(trace["latent_actions"]) == 5
    assert iio.imread(tmp_path / "three" / "rollout.mp4", index=None).shape[0] == 4


def test_rollout_with_a_context_image(tmp_path, capsys):
    img = (np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "ctx.png", img)
    argv = ["rollout", "--embodiment", "keyboard_game", "--preset", "wasd", "--frames", "4"]
    argv += ["--context", str(tmp_path / "ctx.png"), "--steps", "1"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 0
    video = iio.imread(tmp_path / "o" / "rollout.mp4", index=None)
    assert video.shape == (5, 128, 128, 3)
    assert "rollout: 100%" in capsys.readouterr().err  # a frame progress bar, filled
    assert main([*argv, "--out", str(tmp_path / "q"), "--quiet"]) == 0
    assert "rollout:" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("{not json", ".json", "cannot parse"),
        ('{"robot_ee": [[0,0,0,0,0,0,0]]}', ".json", "holds actions for 'robot_ee'"),
        ('{"translation": [[0,0,0],[1,0,0]]}', ".json", "expected a dict with 'translation' .* and 'rotation'"),
        ('{"translation": [[0,0,0]], "rotation": [[1,0,0,0]]}', ".json", "at least 2 rows"),
        ('{"translation": [[0,0,0],[1,0,0]], "rotation": [[1,0,0,0]]}', ".json", "not a valid vehicle_pose"),
        ('{"translation": [["a","b","c"],[1,0,0]], "rotation": [[1,0,0,0],[1,0,0,0]]}', ".json", "expected numbers"),
        ("translation: [[0, 0, .nan], [0, 0, 1]]\nrotation: [[1, 0, 0, 0], [1, 0, 0, 0]]", ".yaml", "NaN"),
        ("[1, 2]", ".txt", "unknown action file type"),
        ("translation: [[0, 0, 0]]\ntranslation: [[1, 0, 0]]\n", ".yaml", "'translation' is given twice"),
    ],
)
def test_bad_action_files_name_the_file(tmp_path, content, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(ActionFileError, match=message) as err:
        load_action_file(path, get_registry().get("modalities", "vehicle_pose"))
    assert str(path) in str(err.value)


def test_rollout_errors(tmp_path, capsys):
    assert main(["rollout", "--embodiment", "car", "--preset", "loop", "--out", str(tmp_path)]) == 2
    assert "unknown preset 'loop'" in capsys.readouterr().err
    assert main(["rollout", "--embodiment", "car", "--preset", "turn", "--frames", "500", "--out", str(tmp_path)]) == 2
    assert "--frames 500" in capsys.readouterr().err
    missing = tmp_path / "nope.png"
    args = ["rollout", "--embodiment", "car", "--preset", "turn", "--context", str(missing), "--out", str(tmp_path)]
    assert main(args) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(AstraError, match="no such action file"):
        load_action_file(tmp_path / "none.json", get_registry().get("modalities", "camera_se3"))


def test_rollout_without_the_kv_cache_makes_the_same_frames(tmp_path, monkeypatch):
    """`--no-cache` reaches the sampler (the history recomputed every chunk) and changes nothing but the
    time: the frames match the cached rollout's up to rounding."""
    from astra_core.model import rollout

    made = []
    original = rollout.LatentWorldModel.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self.use_kv_cache)

    monkeypatch.setattr(rollout.LatentWorldModel, "__init__", spy)
    argv = ["rollout", "--embodiment", "car", "--preset", "turn", "--frames", "6", "--steps", "1", "--quiet"]
    videos = []
    for name, extra in (("cached", []), ("recomputed", ["--no-cache"])):
        assert main([*argv, *extra, "--out", str(tmp_path / name)]) == 0
        videos.append(iio.imread(tmp_path / name / "rollout.mp4", index=None).astype(np.float32))
    assert made == [True, False]
    assert videos[0].shape == videos[1].shape and np.abs(videos[0] - videos[1]).mean() < 0.5
