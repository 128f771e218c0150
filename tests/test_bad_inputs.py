"""The catalogue of bad inputs: every surface a user or an attacker reaches, each case one clear error of
the project's own type whose message names the field, file or value at fault, with nothing
half-written. Cases run in-process (the play server's in a thread), so the whole catalogue takes
seconds. docs/reliability.md says what this promises and where each promise is tested.

A case is (surface, name, build): `build(tmp)` prepares the input and returns `(call, error, needles)`;
`call()` must raise `error` (a subclass of `AstraError`) with every needle in its message. Web-server
cases return the HTTP status and the needles of the JSON error instead.
"""

from __future__ import annotations

import json
import sys
import types
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from astra_core.checkpoint import load_world_checkpoint
from astra_core.config import DataConfig, TrainConfig
from astra_core.data.action_files import ActionFileError, load_action_file
from astra_core.data.cache import CacheError, read_shard, write_shard
from astra_core.errors import AstraError, CheckpointError, ConfigError, ReaderError, ShapeError
from astra_core.plugins import PluginError, get_registry, hookimpl, plugins, reset_plugins
from astra_core.world import DEFAULT_CHECKPOINT, WorldModel

sys.path.insert(0, str(Path(__file__).parent))
from test_play import _raw  # noqa: E402
from test_readers import _write_re10k, _write_robomimic  # noqa: E402
from test_train import BASE  # noqa: E402

# test_train's small run, shortened: one world, two steps, no evaluation or intermediate checkpoints
TINY = {
    **BASE,
    "data": {**BASE["data"], "weights": {"free_camera": 1.0}},
    "steps": 2,
    "eval_every": 0,
    "checkpoint_every": 0,
}

CASES: list[tuple[str, str, object]] = []


def case(surface: str, name: str):
    def add(build):
        CASES.append((surface, name, build))
        return build

    return add


def _tiny(**changes) -> dict:
    data = json.loads(json.dumps(TINY))
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return data


def _tiny_cache(pattern: str) -> dict:
    """TINY trained on the shards `pattern` matches: without the toy worlds' episode fields."""
    data = _tiny(**{"data.source": "cache", "data.cache": [pattern]})
    for field in DataConfig.WORLD_FIELDS:
        data["data"].pop(field, None)
    return data


def _from_dict(data):
    return lambda: TrainConfig.from_dict(data)


# ------------------------------------------------------------------------------------------------
# configs
# ------------------------------------------------------------------------------------------------
for field, value in [
    ("log_every", 0),
    ("steps", 0),
    ("batch_size", 0),
    ("checkpoint_every", -3),
    ("eval_every", -1),
    ("seed", -1),
    ("optim.lr", -1),
    ("optim.lr", float("inf")),
    ("optim.grad_clip", float("nan")),
    ("optim.warmup_steps", -5),
    ("data.weights.free_camera", -1.0),
    ("data.episode_frames", 1),
    ("model.history.noise_prob", 1.5),
    ("model.guidance.scale", float("nan")),
    ("model.guidance.scale", -1.0),
    ("model.dit.text_dim", -4),
    ("model.flow.sigma_floor", 0.0),
    ("model.dit.in_dim", 50),
    ("model.sampler.num_steps", 0),
    ("model.dit.num_heads", 0),
    ("model.dit.patch_size", [1, 0, 0]),
    ("model.dit.eps", 0.0),
    ("model.flow.weighting_width", 0.0),
    ("model.flow.num_train_timesteps", -1),
    ("init_checkpoint", "base.safetensors"),  # read only in modes adapter and finetune
    ("data.cache", ["shards/*.h5"]),  # read only with data.source cache
]:
    leaf = field.split(".")[-1]
    CASES.append(
        (
            "configs",
            f"{field}={value}",
            lambda tmp, f=field, v=value, n=leaf: (_from_dict(_tiny(**{f: v})), ConfigError, [n]),
        )
    )


@case("configs", "a warp that unstacks patches of another size than the tokenizer's")
def _(tmp):
    warp = {"prediction": "warp", "warp_unshuffle": 2}
    data = _tiny(**{"model.flow": warp, "model.dit.out_dim": 50})  # pixel patches of 4
    return _from_dict(data), ConfigError, ["model.flow.warp_unshuffle=2 must be data.pixel_patch=4"]


@case("configs", "a toy world's episode count in a config that trains on a cache")
def _(tmp):
    data = _tiny(**{"data.source": "cache", "data.cache": ["shards/*.h5"], "data.episodes_per_world": 96})
    return _from_dict(data), ConfigError, ["episodes_per_world=96 applies to source 'worlds' only"]


@case("configs", "toy-world time strides in a config that trains on a cache")
def _(tmp):
    data = _tiny_cache("shards/*.h5")
    data["data"]["time_strides"] = [1, 2]
    return _from_dict(data), ConfigError, ["time_strides=[1, 2] applies to source 'worlds' only"]


@case("configs", "a fresh run into a folder that holds one")
def _(tmp):
    cfg = _run(tmp)  # the catalogue checks that no file of it changes
    return lambda: _trainer_of(cfg), ConfigError, [str(tmp / "run"), "already holds a training run", "--resume"]


@case("configs", "a fresh run into a folder that holds a run's weights and log but no state")
def _(tmp):
    cfg = _run(tmp)
    (tmp / "run" / "state.pt").unlink()  # e.g. deleted to save space: the weights and the log are still a run
    return (
        lambda: _trainer_of(cfg),
        ConfigError,
        ["already holds a training run (model.safetensors, metrics.jsonl); it has no state.pt", "delete those files"],
    )


@case("command line", "train --steps below the config's data.phases")
def _(tmp):
    phases = [{"steps": 4, "weights": {"free_camera": 1.0}, "history_chunks": 0}]
    path = tmp / "phased.yaml"
    path.write_text(json.dumps(_tiny(**{"steps": 6, "data.phases": phases, "out_dir": str(tmp / "p")})))
    return "cli", ["train", str(path), "--steps", "3"], ["phased.yaml with --steps 3", "data.phases cover 4 steps"]


@case("configs", "unknown key")
def _(tmp):
    return _from_dict(_tiny(stepz=3)), ConfigError, ["stepz"]


@case("configs", "unknown preset")
def _(tmp):
    return _from_dict(_tiny(**{"model.dit": {"preset": "huge"}})), ConfigError, ["huge"]


@case("configs", "empty file")
def _(tmp):
    path = tmp / "empty.yaml"
    path.write_text("")
    return lambda: TrainConfig.from_yaml(path), ConfigError, ["empty.yaml", "empty"]


@case("configs", "a list, not a mapping")
def _(tmp):
    path = tmp / "list.yaml"
    path.write_text("- steps: 3\n")
    return lambda: TrainConfig.from_yaml(path), ConfigError, ["list.yaml"]


@case("configs", "YAML syntax error")
def _(tmp):
    path = tmp / "broken.yaml"
    path.write_text("model:\n  dit: {preset: tiny\nsteps: 3\n")
    return lambda: TrainConfig.from_yaml(path), ConfigError, ["broken.yaml"]


@case("configs", "missing file")
def _(tmp):
    return lambda: TrainConfig.from_yaml(tmp / "nope.yaml"), ConfigError, ["nope.yaml"]


def _trainer(data, tmp):
    from astra_core.apps.train import Trainer

    data = {**data, "out_dir": str(tmp / "run")}
    return lambda: Trainer(TrainConfig.from_dict(data), progress=False)


# configs that validate but cannot train: refused by the trainer before any episode is rendered
for name, changes, needles in [
    (
        "a model whose latent channels are not the tokenizer's",
        {"data.pixel_patch": 8},  # 192 channels
        ["data.pixel_patch 8", "makes 3 × 8² = 192 latent channels", "generates 48", "model.dit.out_dim 192"],
    ),
    (
        "episodes too short for a clip",
        {"data.episode_frames": 5},
        ["data.episode_frames=5 gives 5 latent frames and a clip needs 7", "data.history_chunks 2 + 1 chunks"],
    ),
    (
        "a time stride too long for the episodes",
        {"data.time_strides": [1, 2]},
        ["data.time_strides: stride 2 leaves 5 latent frames", "data.episode_frames=9", "a clip needs 7"],
    ),
    (
        "a plain action MLP narrower than the world's actions",
        {"model.action": {"encoder": "mlp", "action_dim": 7, "token_dim": 16}},
        ["data.weights.free_camera", "'camera_se3', 9 values a frame", "action_dim 7", "action_dim: 9"],
    ),
]:
    CASES.append(
        (
            "configs",
            name,
            lambda tmp, c=changes, n=needles: (
                _trainer(_tiny(**c), tmp),
                ConfigError,
                n,
            ),
        )
    )


@case("configs", "a world that is not registered")
def _(tmp):
    return _trainer(_tiny(**{"data.weights": {"moon": 1.0}}), tmp), ConfigError, ["data.weights", "moon"]


@case("configs", "a world whose modality the model lacks")
def _(tmp):
    return _trainer(_tiny(**{"data.weights": {"car": 1.0}}), tmp), ConfigError, ["car", "vehicle_pose"]


@case("configs", "a reader's embodiment as a toy world")
def _(tmp):
    return _trainer(_tiny(**{"data.weights": {"nuscenes": 1.0}}), tmp), ConfigError, ["nuscenes", "data.source: cache"]


@case("configs", "no shard matches data.cache")
def _(tmp):
    data = _tiny_cache(str(tmp / "none" / "*.h5"))
    return _trainer(data, tmp), ConfigError, ["data.cache"]


@case("configs", "caches encoded at two frame sizes")
def _(tmp):
    from astra_core.apps.cli import main

    for name, size in (("small", "32"), ("large", "64x64")):  # N or HxW
        args = ["encode", "--world", "free_camera", "--episodes", "2", "--frames", "9", "--size", size, "--quiet"]
        assert main([*args, "--out", str(tmp / name)]) == 0
    data = _tiny_cache(str(tmp / "*" / "*.h5"))
    needles = ["data.cache", "2 sizes", "64×64 frames in", "large/shard-00000.h5", "32×32 frames in", "--size"]
    return _trainer(data, tmp), ConfigError, needles


@case("configs", "a cache whose latents the DiT's patch does not divide")
def _(tmp):
    from astra_core.apps.cli import main

    args = ["encode", "--world", "free_camera", "--episodes", "2", "--frames", "9", "--size", "36x36", "--quiet"]
    assert main([*args, "--out", str(tmp / "odd")]) == 0  # 9 × 9 latents at the pixel tokenizer's patch 4
    data = _tiny_cache(str(tmp / "odd" / "*.h5"))
    needles = ["data.cache", "36×36 frames in", "odd/shard-00000.h5", "9×9 latents", "model.dit.patch_size", "of 8"]
    return _trainer(data, tmp), ConfigError, needles


@case("configs", "adapter init_checkpoint missing")
def _(tmp):
    data = _tiny(mode="adapter", init_checkpoint=str(tmp / "base.safetensors"))
    return _trainer(data, tmp), CheckpointError, ["base.safetensors"]


@case("configs", "adapter init_checkpoint corrupt")
def _(tmp):
    (tmp / "base.safetensors").write_bytes(b"\x00" * 64)
    data = _tiny(mode="adapter", init_checkpoint=str(tmp / "base.safetensors"))
    return _trainer(data, tmp), CheckpointError, ["base.safetensors"]


@case("configs", "finetune init_checkpoint missing")
def _(tmp):
    data = _tiny(mode="finetune", init_checkpoint=str(tmp / "base.safetensors"))
    return _trainer(data, tmp), CheckpointError, ["base.safetensors", "finetune"]


@case("configs", "finetune without init_checkpoint")
def _(tmp):
    return _trainer(_tiny(mode="finetune"), tmp), ConfigError, ["finetune", "init_checkpoint"]


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------
def _shipped() -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(DEFAULT_CHECKPOINT), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def _edited_checkpoint(tmp, edit) -> Path:
    tensors, metadata = _shipped()
    edit(tensors, metadata)
    path = tmp / "edited.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return path


def _load(path):
    return lambda: load_world_checkpoint(path)


@case("checkpoints", "missing file")
def _(tmp):
    return _load(tmp / "gone.safetensors"), CheckpointError, ["gone.safetensors", "no such"]


@case("checkpoints", "a folder")
def _(tmp):
    return _load(tmp), CheckpointError, [str(tmp)]


@case("checkpoints", "empty file")
def _(tmp):
    (tmp / "empty.safetensors").write_bytes(b"")
    return _load(tmp / "empty.safetensors"), CheckpointError, ["empty.safetensors"]


@case("checkpoints", "junk bytes")
def _(tmp):
    (tmp / "junk.safetensors").write_bytes(b"\x17" * 1000)
    return _load(tmp / "junk.safetensors"), CheckpointError, ["junk.safetensors"]


@case("checkpoints", "truncated")
def _(tmp):
    data = DEFAULT_CHECKPOINT.read_bytes()
    (tmp / "cut.safetensors").write_bytes(data[: len(data) // 2])
    return _load(tmp / "cut.safetensors"), CheckpointError, ["cut.safetensors"]


@case("checkpoints", "a pickle under a checkpoint's name")
def _(tmp):
    torch.save({"x": torch.zeros(2)}, tmp / "pickle.safetensors")
    return _load(tmp / "pickle.safetensors"), CheckpointError, ["pickle.safetensors"]


@case("checkpoints", "NaN weights")
def _(tmp):
    def edit(tensors, metadata):
        tensors["dit.head.head.weight"] = torch.full_like(tensors["dit.head.head.weight"], float("nan"))

    return _load(_edited_checkpoint(tmp, edit)), CheckpointError, ["dit.head.head.weight", "NaN"]


@case("checkpoints", "a newer format version")
def _(tmp):
    def edit(tensors, metadata):
        metadata.update(format_version="99", astra_version="9.0.0")

    return _load(_edited_checkpoint(tmp, edit)), CheckpointError, ["'99'", "9.0.0", "upgrade"]


@case("checkpoints", "another format")
def _(tmp):
    return _load(_edited_checkpoint(tmp, lambda t, m: m.update(format="other"))), CheckpointError, ["'other'"]


@case("checkpoints", "no config")
def _(tmp):
    return _load(_edited_checkpoint(tmp, lambda t, m: m.pop("config"))), CheckpointError, ["'config'"]


@case("checkpoints", "a config that does not validate")
def _(tmp):
    def edit(tensors, metadata):
        config = json.loads(metadata["config"])
        config["history"]["noise_prob"] = 7
        metadata["config"] = json.dumps(config)

    return _load(_edited_checkpoint(tmp, edit)), CheckpointError, ["noise_prob"]


@case("checkpoints", "a missing tensor")
def _(tmp):
    return (
        _load(_edited_checkpoint(tmp, lambda t, m: t.pop("null_action"))),
        CheckpointError,
        ["missing", "null_action"],
    )


@case("checkpoints", "a tensor of the wrong shape")
def _(tmp):
    def edit(tensors, metadata):
        tensors["null_action"] = torch.zeros(7)

    return _load(_edited_checkpoint(tmp, edit)), CheckpointError, ["wrong shape", "null_action"]


@case("checkpoints", "a broken stored tokenizer")
def _(tmp):
    return (
        _load(_edited_checkpoint(tmp, lambda t, m: m.update(tokenizer='{"kind": "warp-drive"}'))),
        CheckpointError,
        ["tokenizer"],
    )


@case("checkpoints", "the shipped model asked for in latent space only")
def _(tmp):
    path = _edited_checkpoint(tmp, lambda t, m: m.pop("tokenizer"))
    return lambda: WorldModel.from_checkpoint(path), ShapeError, ["no tokenizer"]


def _run(tmp) -> TrainConfig:
    """A finished 2-step run in `tmp/run`."""
    from astra_core.apps.train import Trainer

    cfg = TrainConfig.from_dict({**TINY, "out_dir": str(tmp / "run")})
    Trainer(cfg, progress=False).train()
    return cfg


def _resume(cfg, **kwargs):
    from astra_core.apps.train import Trainer

    return lambda: Trainer(cfg, resume=True, progress=False, **kwargs)


class _RunsOnLoad:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@case("checkpoints", "a training state that would run code")
def _(tmp):
    from astra_core.apps.train import read_training_state

    cfg = _run(tmp)
    state = read_training_state(tmp / "run" / "state.pt")
    state["sampler"] = _RunsOnLoad(tmp / "code-ran")
    torch.save(state, tmp / "run" / "state.pt")
    return _resume(cfg), CheckpointError, ["state.pt", "refused unread"]


@case("checkpoints", "resume with no training state")
def _(tmp):
    cfg = TrainConfig.from_dict({**TINY, "out_dir": str(tmp / "fresh")})
    return _resume(cfg), ConfigError, ["resume: no training state", str(tmp / "fresh")]


@case("checkpoints", "a truncated training state")
def _(tmp):
    cfg = _run(tmp)
    state = tmp / "run" / "state.pt"
    state.write_bytes(state.read_bytes()[:200])
    return _resume(cfg), CheckpointError, ["state.pt"]


@case("checkpoints", "resume with another model shape")
def _(tmp):
    _run(tmp)
    wider = TrainConfig.from_dict({**_tiny(**{"model.dit.ffn_dim": 96}), "out_dir": str(tmp / "run")})
    return _resume(wider), ConfigError, ["ffn_dim"]


@case("checkpoints", "resume with an edited learning rate")
def _(tmp):
    _run(tmp)
    edited = TrainConfig.from_dict({**_tiny(**{"optim.lr": 0.5}), "out_dir": str(tmp / "run")})
    return _resume(edited), ConfigError, ["optim.lr"]


@case("checkpoints", "resume where nothing was trained")
def _(tmp):
    cfg = TrainConfig.from_dict({**TINY, "out_dir": str(tmp / "never")})
    return _resume(cfg), AstraError, ["never"]


# ------------------------------------------------------------------------------------------------
# caches
# ------------------------------------------------------------------------------------------------
def _shard(tmp, edit=None, name="s.h5") -> Path:
    from astra_core.apps.encode import encode_episode
    from astra_core.data.tokenizer import PixelTokenizer

    episode = get_registry().worlds["car"].episode(0, 5)
    encoded = encode_episode(episode, PixelTokenizer(4), get_registry().modalities)
    path = write_shard(tmp / name, [encoded], PixelTokenizer(4).describe(), 1)
    if edit is not None:
        with h5py.File(path, "r+") as f:
            edit(f["episodes/00000"], f)
    return path


def _read(path, **kw):
    return lambda: read_shard(path, **kw)


@case("caches", "data.weights naming no embodiment of the cache")
def _(tmp):
    from astra_core.apps.encode import encode_episode
    from astra_core.apps.train import Trainer
    from astra_core.data.tokenizer import PixelTokenizer

    world = get_registry().worlds["free_camera"]
    encoded = [encode_episode(world.episode(i, 9), PixelTokenizer(4), get_registry().modalities) for i in range(2)]
    path = write_shard(tmp / "cam.h5", encoded, PixelTokenizer(4).describe(), 1)
    data = _tiny_cache(str(path))
    data["data"]["weights"] = {"free_camra": 1.0}
    cfg = TrainConfig.from_dict({**data, "out_dir": str(tmp / "typo")})
    return lambda: Trainer(cfg, progress=False), ConfigError, ["data.weights", "'free_camra'", "['free_camera']"]


@case("caches", "missing shard")
def _(tmp):
    return _read(tmp / "gone.h5"), CacheError, ["gone.h5"]


@case("caches", "junk file")
def _(tmp):
    (tmp / "junk.h5").write_bytes(b"junk" * 100)
    return _read(tmp / "junk.h5"), CacheError, ["junk.h5"]


@case("caches", "truncated shard")
def _(tmp):
    path = _shard(tmp)
    path.write_bytes(path.read_bytes()[:3000])
    return _read(path), CacheError, ["s.h5"]


@case("caches", "NaN latents")
def _(tmp):
    def edit(g, f):
        lat = g["latents"][()]
        lat[0, 1, 2, 3] = np.nan
        g["latents"][...] = lat

    return _read(_shard(tmp, edit)), CacheError, ["s.h5", "episode 00000", "latent", "NaN"]


@case("caches", "no masks dataset")
def _(tmp):
    return _read(_shard(tmp, lambda g, f: g["masks"].pop("vehicle_pose"))), CacheError, ["masks/vehicle_pose"]


@case("caches", "no masks group")
def _(tmp):
    return _read(_shard(tmp, lambda g, f: g.pop("masks"))), CacheError, ["'masks'"]


@case("caches", "fewer action rows than latents")
def _(tmp):
    def edit(g, f):
        rows = g["actions/vehicle_pose"][()]
        del g["actions/vehicle_pose"]
        g["actions"].create_dataset("vehicle_pose", data=rows[:-2])

    return _read(_shard(tmp, edit)), CacheError, ["actions/vehicle_pose", "one row per latent frame"]


@case("caches", "NaN actions")
def _(tmp):
    def edit(g, f):
        rows = g["actions/vehicle_pose"][()]
        rows[2, 0] = np.inf
        g["actions/vehicle_pose"][...] = rows

    return _read(_shard(tmp, edit)), CacheError, ["actions/vehicle_pose", "NaN or infinite"]


@case("caches", "latents of the wrong rank")
def _(tmp):
    def edit(g, f):
        lat = g["latents"][()]
        del g["latents"]
        g.create_dataset("latents", data=lat[0])

    return _read(_shard(tmp, edit)), CacheError, ["latents of shape", "[C, F, H, W]"]


@case("caches", "another format")
def _(tmp):
    return _read(_shard(tmp, lambda g, f: f.attrs.__setitem__("format", "other"))), CacheError, ["not an astra"]


@case("caches", "a newer cache version")
def _(tmp):
    return _read(_shard(tmp, lambda g, f: f.attrs.__setitem__("version", 99))), CacheError, ["version 99"]


@case("caches", "another tokenizer")
def _(tmp):
    return _read(_shard(tmp), expected_tokenizer={"kind": "pixel", "patch": 8}), CacheError, ["made by tokenizer"]


@case("caches", "encode into a used folder")
def _(tmp):
    from astra_core.apps.encode import encode_to_shards
    from astra_core.data.tokenizer import PixelTokenizer

    _shard(tmp, name="shard-00000.h5")
    episodes = [get_registry().worlds["car"].episode(1, 5)]
    return lambda: encode_to_shards(episodes, PixelTokenizer(4), tmp), ConfigError, ["already holds", "--overwrite"]


@case("caches", "encode frames of two sizes")
def _(tmp):
    from dataclasses import replace

    from astra_core.apps.encode import encode_to_shards
    from astra_core.data.tokenizer import PixelTokenizer

    world = get_registry().worlds["car"]
    big = world.episode(1, 5)
    big = replace(big, frames=torch.nn.functional.interpolate(big.frames, size=(32, 48)), source="big.mp4")
    call = lambda: encode_to_shards([world.episode(0, 5), big], PixelTokenizer(4), tmp / "out")  # noqa: E731
    return call, ShapeError, ["big.mp4", "32×48", "--size"]


# ------------------------------------------------------------------------------------------------
# readers
# ------------------------------------------------------------------------------------------------
def _reader(name):
    return get_registry().get("readers", name)


def _re10k(tmp, edit):
    poses = np.tile(np.eye(4), (3, 1, 1))
    path = tmp / "clip.txt"
    _write_re10k(path, poses, [0, 33_000, 66_000])
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")
    return lambda: _reader("realestate10k").read(path), ReaderError, ["clip.txt"]


for label, edit, needle in [
    ("re10k: a short line", lambda lines: lines[:2] + ["1 2 3"], "values, expected 19"),
    (
        "re10k: a word where a number goes",
        lambda lines: lines[:2] + [lines[2].replace("0.5", "half", 1)],
        "not a number",
    ),
    ("re10k: NaN", lambda lines: lines[:2] + [lines[2].replace("0.5", "nan", 1)], "NaN"),
    ("re10k: one frame line", lambda lines: lines[:2], "at least 2"),
    ("re10k: time going back", lambda lines: [lines[0], lines[2], lines[1]], "timestamps must increase"),
    ("re10k: no frames beside it", lambda lines: lines, "no frames"),
]:

    def build(tmp, edit=edit, needle=needle):
        call, error, needles = _re10k(tmp, edit)
        return call, error, needles + [needle]

    CASES.append(("readers", label, build))


@case("readers", "robot hdf5: missing file")
def _(tmp):
    return lambda: _reader("robot_hdf5").read(tmp / "none.hdf5"), ReaderError, ["none.hdf5", "no such"]


@case("readers", "robot hdf5: not HDF5")
def _(tmp):
    (tmp / "fake.hdf5").write_bytes(b"not hdf5")
    return lambda: _reader("robot_hdf5").read(tmp / "fake.hdf5"), ReaderError, ["fake.hdf5"]


@case("readers", "robot hdf5: actions of 6 columns")
def _(tmp):
    path = _write_robomimic(tmp / "demo.hdf5", demos=1)
    with h5py.File(path, "r+") as f:
        rows = f["data/demo_0/actions"][()]
        del f["data/demo_0/actions"]
        f["data/demo_0"].create_dataset("actions", data=rows[:, :6])
    return lambda: _reader("robot_hdf5").read(path), ReaderError, ["demo.hdf5", "[T, 7]"]


@case("readers", "robot hdf5: NaN actions")
def _(tmp):
    path = _write_robomimic(tmp / "demo.hdf5", demos=1)
    with h5py.File(path, "r+") as f:
        rows = f["data/demo_0/actions"][()]
        rows[1, 1] = np.nan
        f["data/demo_0/actions"][...] = rows
    return lambda: _reader("robot_hdf5").read(path), ReaderError, ["demo.hdf5", "NaN"]


@case("readers", "robot hdf5: no data group")
def _(tmp):
    with h5py.File(tmp / "empty.hdf5", "w") as f:
        f.create_group("other")
    return lambda: _reader("robot_hdf5").read(tmp / "empty.hdf5"), ReaderError, ["empty.hdf5", "'data'"]


@case("readers", "game log: not JSON")
def _(tmp):
    from astra_core.data.video import frames_to_uint8, write_mp4

    write_mp4(tmp / "g.mp4", frames_to_uint8(torch.zeros(3, 4, 16, 16)), fps=10)
    (tmp / "g.jsonl").write_text('{"keyboard": {"keys": []}}\nnot json\n{}\n')
    return lambda: _reader("game_log").read(tmp / "g.mp4"), ReaderError, ["g.jsonl", "line 2"]


@case("readers", "game log: longer than its video")
def _(tmp):
    from astra_core.data.video import frames_to_uint8, write_mp4

    write_mp4(tmp / "g.mp4", frames_to_uint8(torch.zeros(3, 4, 16, 16)), fps=10)
    (tmp / "g.jsonl").write_text('{"keyboard": {"keys": []}}\n' * 7)
    return lambda: _reader("game_log").read(tmp / "g.mp4"), ReaderError, ["g.jsonl", "7 lines for a video of 4 frames"]


@case("readers", "game log: an empty line between frames")
def _(tmp):
    from astra_core.data.video import frames_to_uint8, write_mp4

    write_mp4(tmp / "g.mp4", frames_to_uint8(torch.zeros(3, 4, 16, 16)), fps=10)
    (tmp / "g.jsonl").write_text('{"keyboard": {"keys": []}}\n\n{}\n{}\n\n')  # the trailing one is fine
    return lambda: _reader("game_log").read(tmp / "g.mp4"), ReaderError, ["g.jsonl", "line 2 is empty"]


@case("readers", "game log: missing log")
def _(tmp):
    from astra_core.data.video import frames_to_uint8, write_mp4

    write_mp4(tmp / "g.mp4", frames_to_uint8(torch.zeros(3, 4, 16, 16)), fps=10)
    return lambda: _reader("game_log").read(tmp / "g.mp4"), ReaderError, ["g.jsonl", "no such"]


@case("readers", "nuscenes: no tables folder")
def _(tmp):
    return lambda: _reader("nuscenes").read(f"{tmp / 'v1.0-mini'}:scene-1"), ReaderError, ["v1.0-mini"]


@case("readers", "rt1: missing shard")
def _(tmp):
    return lambda: _reader("rt1_tfrecord").read(tmp / "gone.tfrecord"), ReaderError, ["gone.tfrecord"]


@case("readers", "lerobot: no episode index")
def _(tmp):
    return lambda: _reader("lerobot").read(tmp / "pusht"), ReaderError, ["pusht", "episode index"]


# ------------------------------------------------------------------------------------------------
# action files
# ------------------------------------------------------------------------------------------------
def _actions(tmp, name, content, modality="robot_ee"):
    path = tmp / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict) and name.endswith(".npz"):
        np.savez(path, **content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return lambda: load_action_file(path, get_registry().modalities[modality]), ActionFileError, [name]


ROW = [0.01, 0, 0, 0, 0, 0, 0]
for label, name, content, modality, needle in [
    ("missing file", "none.json", None, "robot_ee", "no such"),
    ("unknown suffix", "a.csv", "1,2", "robot_ee", "'.csv'"),
    ("not JSON", "a.json", "{rows", "robot_ee", "cannot parse"),
    ("not YAML", "a.yaml", "a: [1, 2\n", "robot_ee", "cannot parse"),
    ("empty npz", "a.npz", {}, "robot_ee", "no arrays"),
    ("rows of 6 where 7 are expected", "a.json", [ROW[:6]] * 3, "robot_ee", "[T, 7]"),
    ("one row only", "a.json", [ROW], "robot_ee", "at least 2 rows"),
    ("another modality's file", "a.json", {"camera_se3": [ROW] * 3}, "robot_ee", "'camera_se3'"),
    ("words where numbers go", "a.json", [["a"] * 7] * 3, "robot_ee", "expected numbers"),
    ("NaN", "a.json", "[[NaN, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]]", "robot_ee", "NaN"),
    ("1e30 beyond the declared bounds", "a.json", [[1e30] + ROW[1:]] * 3, "robot_ee", "declared bounds"),
    ("an unknown key", "k.json", {"keys": [[], ["JUMP"]]}, "discrete_cmd", "unknown key 'JUMP'"),
    ("mouse of the wrong shape", "k.json", {"keys": [[], ["W"]], "mouse": [1, 2]}, "discrete_cmd", "mouse"),
    ("camera poses that are no rotations", "c.json", [np.full((4, 4), 2.0).tolist()] * 2, "camera_se3", "rotation"),
    (
        "a zero quaternion",
        "v.json",
        {"translation": [[0, 0, 0]] * 2, "rotation": [[0, 0, 0, 0]] * 2},
        "vehicle_pose",
        "zero",
    ),
    (
        "1e30 metres",
        "v.json",
        {"translation": [[1e30, 0, 0]] * 2, "rotation": [[1, 0, 0, 0]] * 2},
        "vehicle_pose",
        "bounds",
    ),
]:

    def build(tmp, name=name, content=content, modality=modality, needle=needle):
        if content is None:
            call = lambda: load_action_file(tmp / name, get_registry().modalities[modality])  # noqa: E731
            return call, ActionFileError, [name, needle]
        call, error, needles = _actions(tmp, name, content, modality)
        return call, error, needles + [needle]

    CASES.append(("action files", label, build))


# ------------------------------------------------------------------------------------------------
# the Python API
# ------------------------------------------------------------------------------------------------
_MODEL: dict = {}


def _model(**options) -> WorldModel:
    key = tuple(sorted(options.items()))
    if key not in _MODEL:
        _MODEL[key] = WorldModel.from_checkpoint(None, **options)
    return _MODEL[key]


def _arm():
    return get_registry().worlds["tabletop_arm"].episode(0, 5)


def _session():
    wm = _model(num_steps=1)
    ep = _arm()
    wm.reset(ep.frames[:, :1])
    return wm, ep


def _net(data):
    from astra_core.model.actions import AstraNet

    return AstraNet(TrainConfig.from_dict(data).model)


API = [
    ("num_steps=-2", lambda: WorldModel.from_checkpoint(None, num_steps=-2), AstraError, ["num_steps", "-2"]),
    ("guidance nan", lambda: WorldModel.from_checkpoint(None, guidance_scale=float("nan")), AstraError, ["guidance"]),
    (
        "frames in [0, 255]",
        lambda: _model().reset(_arm().frames[:, :1] * 127.5 + 127.5),
        ShapeError,
        ["frames", "uint8"],
    ),
    ("NaN frames", lambda: _model().reset(_arm().frames[:, :1] * float("nan")), ShapeError, ["frames", "NaN"]),
    ("frames of 2 dims", lambda: _model().reset(torch.zeros(64, 64)), ShapeError, ["frames", "[3, T, H, W]"]),
    ("step before reset", lambda: WorldModel.from_checkpoint(None).step(np.zeros((3, 7))), AstraError, ["reset"]),
]


def _step(actions, error, needles):
    def call():
        wm, _ = _session()
        wm.step(actions)

    return call, error, needles


API += [
    (
        "rows [T, 6] where [T, 7] are expected",
        *_step({"robot_ee": np.zeros((3, 6))}, ShapeError, ["robot_ee", "[T, 7]"]),
    ),
    ("1e30 actions", *_step({"robot_ee": np.full((3, 7), 1e30)}, ShapeError, ["robot_ee", "declared bounds"])),
    ("NaN actions", *_step({"robot_ee": np.full((3, 7), np.nan)}, ShapeError, ["robot_ee", "NaN"])),
    ("too many rows", *_step({"robot_ee": np.zeros((9, 7))}, ShapeError, ["rows"])),
    ("a modality the model lacks", *_step({"sonar": np.zeros((3, 7))}, ShapeError, ["sonar"])),
    ("a bare array for a model of four modalities", *_step(np.zeros((3, 7)), ShapeError, ["dict keyed by modality"])),
    ("an unknown config key", lambda: TrainConfig.from_dict({"modle": {}}), ConfigError, ["modle"]),
    ("an unknown router", lambda: _net(_tiny(**{"model.action.router": "oracle"})), PluginError, ["oracle"]),
    (
        "router options the router does not take",
        lambda: _net(_tiny(**{"model.action.router_options": {"q": 1}})),
        ConfigError,
        ["topk", "'q'"],
    ),
    (
        "a checkpoint path that is no file",
        lambda: WorldModel.from_checkpoint("/no/such.safetensors"),
        CheckpointError,
        ["/no/such.safetensors"],
    ),
    (
        "a rollout of 0 frames",
        lambda: _model().rollout(_arm().frames[None, :, :1], [_arm().actions], 0),
        ShapeError,
        ["num_frames=0", "1 or more"],
    ),
    (
        "a rollout's streams as one dict instead of a list of them",
        lambda: _model().rollout(_arm().frames[None, :, :1], _arm().actions, 2),
        ShapeError,
        ["streams", "list of one dict", "[streams]"],
    ),
    (
        "uint8 frames as a numpy array",
        lambda: _model().reset((_arm().frames[:, :1].numpy() * 127.5 + 127.5).astype(np.uint8)),
        ShapeError,
        ["frames", "uint8", "/ 127.5 - 1"],
    ),
    ("frames as a list", lambda: _model().reset([[0.0]]), ShapeError, ["frames", "expected a tensor", "list"]),
    (
        "a step with a modality the context had no row of",
        lambda: _context_then_step({"camera_se3": np.zeros((2, 7))}),
        ShapeError,
        ["camera_se3", "expected 3 rows", "got 2", "no row of it at the last frame"],
    ),
    (
        "a latent step with an empty actions dict",
        lambda: _latent_session().step({}),
        ShapeError,
        ["actions: an empty dict"],
    ),
    (
        "state_at with an episode of another world",
        lambda: get_registry().worlds["car"].state_at(_arm(), 2),
        AstraError,
        ["car", "state_at", "'tabletop_arm'"],
    ),
    ("a Trainer given a list", lambda: _trainer_of([1]), ConfigError, ["Trainer", "TrainConfig", "list"]),
    ("a registry kind that does not exist", lambda: get_registry().get("world", "car"), PluginError, ["'world'"]),
]


def _context_then_step(actions):
    wm = _model(num_steps=1)
    ep = _arm()
    wm.reset(ep.frames[:, :1], {"robot_ee": ep.actions["robot_ee"][:1]})
    wm.step(actions)


def _latent_session():
    wm = _model(num_steps=1)
    wm.reset(_arm().frames[:, :1])
    return wm.latent


def _trainer_of(cfg, **kwargs):
    from astra_core.apps.train import Trainer

    return Trainer(cfg, progress=False, **kwargs)


for label, call, error, needles in API:
    CASES.append(("python api", label, lambda tmp, c=call, e=error, n=needles: (c, e, n)))


# ------------------------------------------------------------------------------------------------
# plugins
# ------------------------------------------------------------------------------------------------
def _plugin(**hooks):
    module = types.ModuleType("catalogue_plugin")
    for name, fn in hooks.items():
        setattr(module, name, hookimpl(fn))
    return module


def _raises(error):
    def hook(register):
        raise error

    return hook


PLUGIN_HOOKS = [
    ("a hook that raises", dict(astra_register_modalities=_raises(RuntimeError("boom"))), "RuntimeError: boom"),
    ("register(object())", dict(astra_register_modalities=lambda register: register(object())), "no string `name`"),
    (
        "a modality of the wrong type",
        dict(astra_register_modalities=lambda register: register(types.SimpleNamespace(name="x"))),
        "not an astra_core.Modality",
    ),
    (
        "a router without its class",
        dict(astra_register_routers=lambda register: register("r")),
        "register(name, router_class)",
    ),
    ("a reader without a name", dict(astra_register_readers=lambda register: register(3)), "no string `name`"),
    (
        "a reader without read()",
        dict(astra_register_readers=lambda register: register(types.SimpleNamespace(name="npz2"))),
        "reader 'npz2' (SimpleNamespace) has no read",
    ),
    (
        "a world without episode() or modality",
        dict(astra_register_worlds=lambda register: register(types.SimpleNamespace(name="w2"))),
        "world 'w2' (SimpleNamespace) has no episode, modality",
    ),
    (
        "an embodiment of the wrong type",
        dict(astra_register_embodiments=lambda register: register(types.SimpleNamespace(name="e2"))),
        "not an astra_core.Embodiment",
    ),
    (
        "a router that is no Router",
        dict(astra_register_routers=lambda register: register("r2", dict)),
        "router 'r2' is <class 'dict'>, not a subclass of astra_core.Router",
    ),
    (
        "a world that raises",
        dict(astra_register_worlds=_raises(ImportError("no renderer"))),
        "ImportError: no renderer",
    ),
    (
        "an embodiment named twice",
        dict(astra_register_embodiments=lambda register: register(get_registry().embodiments["car"])),
        "'car' is registered by both",
    ),
]


def _plugin_case(hooks, needle):
    def call():
        reset_plugins()
        manager = plugins()
        manager.register_plugin(_plugin(**hooks), "catalogue")
        registry = manager.registry()
        assert {"camera_se3", "robot_ee"} <= set(registry.modalities)  # the rest still works
        # the failed plugin is listed with its reason; asking for what it would have given names it
        registry.get("modalities", "catalogue_modality")

    return call, PluginError, ["catalogue", needle]


for label, hooks, needle in PLUGIN_HOOKS:
    CASES.append(("plugins", label, lambda tmp, h=hooks, n=needle: _plugin_case(h, n)))

for label, kind, name in [
    ("an unknown modality", "modalities", "sonar"),
    ("an unknown reader", "readers", "vhs"),
    ("an unknown world", "worlds", "moon"),
    ("an unknown router", "routers", "oracle"),
]:
    CASES.append(
        (
            "plugins",
            label,
            lambda tmp, k=kind, n=name: (lambda: get_registry().get(k, n), PluginError, [repr(n), "registered"]),
        )
    )


@case("plugins", "one entry-point name declared by two packages")
def _(tmp):
    from astra_core.plugins import manager as plugin_manager

    class EntryPoint:
        def __init__(self, package):
            self.name, self.value = "twin", f"{package}.plugin"
            self.dist = types.SimpleNamespace(version="1.0", name=package)

        def load(self):
            return _plugin()

    def call():
        original = plugin_manager.entry_points
        plugin_manager.entry_points = lambda group: [EntryPoint("astra-twin-a"), EntryPoint("astra-twin-b")]
        try:
            reset_plugins()
            get_registry().get("modalities", "twin_modality")
        finally:
            plugin_manager.entry_points = original

    return call, PluginError, ["'twin' is taken by plugin 'twin' (package 'astra-twin-a')", "rename one of the two"]


@case("plugins", "a plugin name taken twice by hand")
def _(tmp):
    def call():
        reset_plugins()
        plugins().register_plugin(_plugin(), "twice")
        plugins().register_plugin(_plugin(), "twice")

    return call, PluginError, ["'twice'", "already registered"]


# ------------------------------------------------------------------------------------------------
# the play server
# ------------------------------------------------------------------------------------------------
_SERVER: dict = {}


def _server():
    from astra_core.apps.play import PlayServer, PlaySession

    if "srv" not in _SERVER:
        session = PlaySession(_model(num_steps=1), get_registry().get("worlds", "keyboard_game"), seed=1)
        _SERVER["srv"] = PlayServer(session, port=0, timeout=0.5, max_connections=8).start()
    return _SERVER["srv"]


def _http(request: bytes) -> tuple[int, str]:
    reply = _raw(_server(), request).decode("utf-8", "replace")
    return int(reply.split(" ", 2)[1]), reply


def _post(body: bytes, **headers) -> bytes:
    port = _server().httpd.server_address[1]
    fields = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json", "Content-Length": str(len(body))}
    fields.update({k.replace("_", "-"): v for k, v in headers.items()})
    head = "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v is not None)
    return f"POST /step HTTP/1.1\r\n{head}Connection: close\r\n\r\n".encode() + body


def _get(path: str) -> bytes:
    port = _server().httpd.server_address[1]
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()


WEB = [
    ("a foreign Origin", lambda: _post(b'{"keys": ["W"]}', Origin="http://evil.example"), 403, ["evil.example"]),
    ("a foreign Host", lambda: _post(b'{"keys": ["W"]}', Host="rebind.example:80"), 403, ["rebind.example"]),
    ("text/plain", lambda: _post(b'{"keys": ["W"]}', Content_Type="text/plain"), 415, ["application/json"]),
    ("not JSON", lambda: _post(b"not json"), 400, ["JSON"]),
    ("bytes that are no UTF-8", lambda: _post(b"\xff\xfe"), 400, ["error"]),
    ("an unknown key", lambda: _post(b'{"keys": ["W", "NOPE"]}'), 400, ["NOPE"]),
    ("keys not a list", lambda: _post(b'{"keys": "W"}'), 400, ["list"]),
    ("a JSON list", lambda: _post(b"[1, 2]"), 400, ["error"]),
    ("an unknown field", lambda: _post(b'{"jump": 1}'), 400, ["jump"]),
    ("nested 1,500 deep", lambda: _post(b"[" * 1500 + b"]" * 1500), 400, ["nested"]),
    ("a negative Content-Length", lambda: _post(b"", Content_Length="-5"), 400, ["Content-Length"]),
    ("a Content-Length that is no number", lambda: _post(b"", Content_Length="12abc"), 400, ["Content-Length"]),
    ("a body over the limit", lambda: _post(json.dumps({"keys": ["W"] * 5000}).encode()), 413, ["at most"]),
    ("an unknown path", lambda: _get("/admin"), 404, ["404"]),
]
for label, request, status, needles in WEB:
    CASES.append(("web server", label, lambda tmp, r=request, s=status, n=needles: ("http", r, s, n)))


@case("web server", "a busy port")
def _(tmp):
    from astra_core.apps.play import PlayServer, PlaySession

    port = _server().httpd.server_address[1]
    session = PlaySession(_model(num_steps=1), get_registry().get("worlds", "keyboard_game"), seed=1)
    return lambda: PlayServer(session, port=port), AstraError, [f"port {port}", "--port 0"]


# ------------------------------------------------------------------------------------------------
# the command line: exit status 2 and one line naming the value
# ------------------------------------------------------------------------------------------------
ROLLOUT = ["rollout", "--preset", "reach", "--out", "{tmp}/r"]
CLI = [
    ("rollout --steps -3", ROLLOUT + ["--embodiment", "tabletop_arm", "--steps", "-3"], ["num_steps", "-3"]),
    ("rollout --guidance nan", ROLLOUT + ["--embodiment", "tabletop_arm", "--guidance", "nan"], ["guidance"]),
    ("rollout an unknown embodiment", ROLLOUT + ["--embodiment", "moon"], ["moon"]),
    ("encode --episodes 0", ["encode", "--world", "car", "--episodes", "0", "--out", "{tmp}/c"], ["--episodes 0"]),
    (
        "train-tokenizer --held-out 0",
        ["train-tokenizer", "--out", "{tmp}/v.safetensors", "--held-out", "0"],
        ["--held-out 0"],
    ),
    ("eval --threads -1", ["eval", "--checkpoint", "{tmp}/m", "--threads", "-1", "--out", "{tmp}/e"], ["--threads -1"]),
    ("encode --reader without files", ["encode", "--reader", "game_log", "--out", "{tmp}/c"], ["PATHS"]),
    ("train an empty config", ["train", "{tmp}/empty.yaml"], ["empty.yaml", "empty"]),
    (
        "train a config giving a key twice",
        ["train", "{tmp}/twice.yaml"],
        ["twice.yaml: cannot read config: the key 'steps' is given twice in one mapping (line 3, column 1)"],
    ),
    ("info on a missing checkpoint", ["info", "{tmp}/none.safetensors"], ["none.safetensors"]),
    ("eval --episodes 0", ["eval", "--checkpoint", "{tmp}/m", "--episodes", "0", "--out", "{tmp}/e"], ["episodes"]),
    (
        "ablate --steps within the config's data.phases",
        ["ablate", "--steps", "100", "--out", "{tmp}/a"],
        ["ablation full", "data.phases cover 167 steps"],
    ),
    ("eval --cache with --episodes", ["eval", "--cache", "{tmp}/*.h5", "--episodes", "3"], ["--episodes choose"]),
    ("rollout --seed -1", ROLLOUT + ["--embodiment", "tabletop_arm", "--seed", "-1"], ["--seed -1"]),
    ("play --port 70000", ["play", "--web", "--port", "70000"], ["--port 70000"]),
    ("play --timeout nan", ["play", "--web", "--timeout", "nan"], ["--timeout nan"]),
    ("play --size without --env", ["play", "--size", "32", "--fit", "crop"], ["--size/--fit: for --env"]),
    ("play --env-arg without --env", ["play", "--env-arg", "frameskip=2"], ["--env-arg: for --env"]),
    ("play --web with --out", ["play", "--web", "--out", "{tmp}/p.mp4"], ["--out: for the terminal mode"]),
    ("play --port in the terminal mode", ["play", "--port", "9000"], ["--port: for --web"]),
    ("play --env with --embodiment", ["play", "--env", "CartPole-v1", "--embodiment", "car"], ["--embodiment"]),
    (
        "train-tokenizer --width 12",
        ["train-tokenizer", "--out", "{tmp}/v.safetensors", "--width", "12"],
        ["--width 12"],
    ),
    ("encode --patch 0", ["encode", "--world", "car", "--patch", "0", "--out", "{tmp}/c"], ["--patch 0"]),
    (
        "encode --reader with --episodes and --seed",
        ["encode", "--reader", "game_log", "{tmp}/g.mp4", "--episodes", "3", "--seed", "1", "--out", "{tmp}/c"],
        ["--episodes/--seed", "for --world"],
    ),
    ("encode --world with files", ["encode", "--world", "car", "{tmp}/g.mp4", "--out", "{tmp}/c"], ["PATHS", "g.mp4"]),
    (
        "encode --patch with a trained tokenizer",
        ["encode", "--world", "car", "--tokenizer", "{tmp}/v.safetensors", "--patch", "8", "--out", "{tmp}/c"],
        ["--patch", "v.safetensors"],
    ),
    ("ablate --eval-episodes 0", ["ablate", "--eval-episodes", "0", "--out", "{tmp}/a"], ["--eval-episodes 0"]),
    ("ablate --horizons 16 0", ["ablate", "--horizons", "16", "0", "--out", "{tmp}/a"], ["--horizons [16, 0]"]),
    (
        "ablate --variants full full",
        ["ablate", "--variants", "full", "no_afg", "full", "--out", "{tmp}/a"],
        ["--variants: ['full'] named twice"],
    ),
    ("demo --frames 0", ["demo", "--frames", "0", "--out", "{tmp}/d"], ["--frames 0", "1 or more"]),
    # where a command writes is checked before its work: a file where a folder goes, and the reverse
    ("eval --out on a file", ["eval", "--out", "{tmp}/empty.yaml"], ["--out", "empty.yaml: a file of that name"]),
    ("demo --out on a file", ["demo", "--out", "{tmp}/empty.yaml"], ["--out", "a file of that name is there"]),
    (
        "rollout --out under a file",
        ROLLOUT[:-1] + ["{tmp}/empty.yaml/r", "--embodiment", "car"],
        ["--out", "empty.yaml is a file, not a folder"],
    ),
    ("ablate --results on a folder", ["ablate", "--results", "{tmp}"], ["--results", "a folder of that name is there"]),
    ("train-tokenizer --out on a folder", ["train-tokenizer", "--out", "{tmp}"], ["--out", "a folder of that name"]),
    ("play --out on a folder", ["play", "--out", "{tmp}"], ["--out", "give a file name"]),
    ("train --out on a file", ["train", "{tmp}/empty.yaml", "--out", "{tmp}/empty.yaml"], ["--out", "give a folder"]),
]
for label, argv, needles in CLI:
    CASES.append(("command line", label, lambda tmp, a=argv, n=needles: ("cli", a, n)))


def test_outputs_may_be_existing_folders_or_new_paths(tmp_path, monkeypatch):
    from astra_core.apps import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for flag, value, kind in [("--out", ".", "folder"), ("--out", "runs", "folder"), ("--out", "new/deeper", "folder")]:
        cli._check_output(flag, value, kind)
    cli._check_output("--results", "runs/results.md", "file")
    # a folder written into is checked itself, not the folder above it
    writable = {tmp_path / "runs"}
    monkeypatch.setattr(cli.os, "access", lambda path, mode: Path(path) in writable)
    cli._check_output("--out", "runs", "folder")
    with pytest.raises(ConfigError, match=r"--out new: .* is not writable"):
        cli._check_output("--out", "new", "folder")


@pytest.fixture(scope="module", autouse=True)
def _shutdown_server():
    yield
    if "srv" in _SERVER:
        _SERVER.pop("srv").shutdown()
    reset_plugins()


# ------------------------------------------------------------------------------------------------
def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("surface, name, build", CASES, ids=[f"{s}: {n}" for s, n, _ in CASES])
def test_a_bad_input_is_one_clear_error(surface, name, build, tmp_path, capsys):
    built = build(tmp_path)
    if built[0] == "cli":
        from astra_core.apps.cli import main

        (tmp_path / "empty.yaml").write_text("")
        (tmp_path / "twice.yaml").write_text("steps: 50\nbatch_size: 2\nsteps: 20000\n")
        argv = [a.replace("{tmp}", str(tmp_path)) for a in built[1]]
        before = _files(tmp_path)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"astra {argv[0]}: error: "), err
        for needle in built[2]:
            assert needle in err, err
        assert _files(tmp_path) == before
        return
    if built[0] == "http":
        _, request, status, needles = built
        got, reply = _http(request())
        assert got == status, reply
        for needle in needles:
            assert needle in reply, reply
        return
    call, error, needles = built
    assert issubclass(error, AstraError)
    before = _files(tmp_path)
    try:
        with pytest.raises(AstraError) as caught:
            call()
    finally:
        if surface == "plugins":
            reset_plugins()
    assert isinstance(caught.value, error), f"{type(caught.value).__name__}: {caught.value}"
    message = str(caught.value)
    for needle in needles:
        assert needle in message, message
    assert "Traceback" not in message
    after = _files(tmp_path)
    # nothing half-written: no file appeared but a failed training run's empty folder, no file changed
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [k for k in after if k not in before and ".tmp" in k]


def test_the_catalogue_covers_every_surface():
    counts = Counter(surface for surface, _, _ in CASES)
    assert len(CASES) >= 120, len(CASES)
    for surface in (
        "configs",
        "checkpoints",
        "caches",
        "readers",
        "action files",
        "python api",
        "plugins",
        "web server",
    ):
        assert counts[surface] >= 10, (surface, counts[surface])
