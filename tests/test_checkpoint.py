import json

import pytest
import torch
from _helpers import make_config, make_net
from safetensors.torch import save_file

import astra_core
from astra_core.apps.cli import main
from astra_core.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from astra_core.errors import CheckpointError
from astra_core.model.actions import AstraNet


def test_round_trip_keeps_weights_config_and_outputs(tmp_path):
    net = make_net()
    path = save_checkpoint(tmp_path / "m.safetensors", net, {"note": "hello"})
    config, tensors, meta = read_checkpoint(path)
    assert (
        config == net.config
        and meta["note"] == "hello"
        and meta["format_version"] == "6"
        and meta["astra_version"] == astra_core.__version__
    )
    loaded = load_checkpoint(path)
    x, t = torch.randn(1, 8, 2, 4, 4), torch.rand(1, 2) * 1000
    a = torch.randn(1, 2, 3)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, loaded.action_features(a)), net(x, t, net.action_features(a)))
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_frame_size_is_stored_and_the_header_keys_it_owns_are_refused(tmp_path):
    from astra_core.checkpoint import frame_size

    net = make_net()
    path = save_checkpoint(tmp_path / "m.safetensors", net, frame_size=(48, 80))
    assert frame_size(read_checkpoint(path)[2], path) == (48, 80)
    assert "frame_size" not in read_checkpoint(save_checkpoint(tmp_path / "any.safetensors", net))[2]
    for bad in ((48,), (48, 0), (48.0, 80), (True, 80)):
        with pytest.raises(CheckpointError, match=r"frame_size=.*expected \(height, width\)"):
            save_checkpoint(tmp_path / "bad.safetensors", net, frame_size=bad)
    # the keys the checkpoint writes itself cannot come in through extra_metadata; values must be strings
    for key in ("format_version", "config", "frame_size", "tokenizer"):
        with pytest.raises(CheckpointError, match=rf"extra_metadata\['{key}'\]: a key the checkpoint writes itself"):
            save_checkpoint(tmp_path / "bad.safetensors", net, {key: "99"})
    with pytest.raises(CheckpointError, match=r"extra_metadata\['step'\] = 5: the header holds strings only"):
        save_checkpoint(tmp_path / "bad.safetensors", net, {"step": 5})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["any.safetensors", "m.safetensors"]


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.safetensors", make_net(seed=1))
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("astra_core.checkpoint.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, make_net(seed=2))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_mismatched_shapes_are_named(tmp_path):
    net = make_net()
    other = AstraNet(make_config(dim=32, heads=2))
    path = tmp_path / "bad.safetensors"
    meta = {"format": "astra-world", "format_version": "1", "config": net.config.model_dump_json()}
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=r"bad.safetensors.*wrong shape: .*dit\.blocks\.0\.ffn\.0\.weight"):
        load_checkpoint(path)


def test_bad_files_and_configs_fail_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 40)
    with pytest.raises(CheckpointError, match="junk.safetensors: not a readable"):
        load_checkpoint(junk)
    path = save_checkpoint(tmp_path / "ok.safetensors", make_net())
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        load_checkpoint(truncated)
    cfg = json.loads(make_net().config.model_dump_json())
    cfg["dit"]["num_layrs"] = 3
    odd = tmp_path / "odd.safetensors"
    save_file(
        {"x": torch.zeros(1)},
        str(odd),
        metadata={"format": "astra-world", "format_version": "1", "config": json.dumps(cfg)},
    )
    with pytest.raises(CheckpointError, match=r"dit\.num_layrs"):
        load_checkpoint(odd)
    future = tmp_path / "future.safetensors"
    save_file(
        {"x": torch.zeros(1)},
        str(future),
        metadata={"format": "astra-world", "format_version": "99", "config": "{}"},
    )
    with pytest.raises(
        CheckpointError, match="format_version '99', written by astra-world an unknown version, is newer"
    ):
        load_checkpoint(future)
    # a version-1 checkpoint (written before the format named its writer) still loads
    net = make_net()
    old = tmp_path / "v1.safetensors"
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()},
        str(old),
        metadata={"format": "astra-world", "format_version": "1", "config": net.config.model_dump_json()},
    )
    assert torch.equal(load_checkpoint(old).null_action, net.null_action)
    # NaN weights are refused at load, naming the tensor
    poisoned = {k: v.clone().contiguous() for k, v in net.state_dict().items()}
    poisoned["null_action"][0] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_file(
        poisoned,
        str(bad),
        metadata={"format": "astra-world", "format_version": "2", "config": net.config.model_dump_json()},
    )
    with pytest.raises(CheckpointError, match="nan.safetensors: tensor 'null_action' holds NaN"):
        load_checkpoint(bad)


def test_cli_info_and_presets(tmp_path, capsys):
    path = save_checkpoint(tmp_path / "m.safetensors", make_net(), {"note": "hi"}, frame_size=(48, 80))
    assert main(["info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["dit"]["dim"] == 64 and info["parameters"] > info["backbone_parameters"]
    assert info["frame_size"] == [48, 80] and info["extra_metadata"] == {"note": "hi"}
    assert main(["info", str(tmp_path / "nope.safetensors")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["presets"]) == 0
    assert "wan2.1-1.3b" in capsys.readouterr().out


def test_checkpoints_get_ordinary_file_permissions(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "m.safetensors", make_net())
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_world_model_takes_frames_of_the_size_it_was_trained_on(tmp_path):
    from safetensors import safe_open

    from astra_core.errors import ShapeError
    from astra_core.world import DEFAULT_CHECKPOINT, WorldModel

    model = WorldModel.from_checkpoint(None, num_steps=1)
    assert model.frame_size == (64, 64)  # the trainer records it; the shipped model's header holds it
    with pytest.raises(ShapeError, match=r"frames: 32×48, but this model was trained on 64×64 frames.*resize_crop"):
        model.reset(torch.zeros(3, 1, 32, 48))
    model.reset(torch.zeros(3, 1, 64, 64))
    with safe_open(str(DEFAULT_CHECKPOINT), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    path = tmp_path / "m.safetensors"
    for bad in ('"64x64"', "[64]", "[0, 64]", "[64, 64.5]", "{"):
        save_file(tensors, str(path), metadata={**meta, "frame_size": bad})
        with pytest.raises(CheckpointError, match="m.safetensors: metadata 'frame_size'"):
            WorldModel.from_checkpoint(path)
    del meta["frame_size"]  # a checkpoint written before the size was recorded: any size the tokenizer takes
    save_file(tensors, str(path), metadata=meta)
    older = WorldModel.from_checkpoint(path, num_steps=1)
    assert older.frame_size is None
    older.reset(torch.zeros(3, 1, 32, 48))
