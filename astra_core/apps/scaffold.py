"""`astra new-plugin NAME`: a pip-installable plugin package to start an embodiment from.

The package it writes works as it stands: a modality (NAME_cmd, a 2-D velocity command per frame)
with its normaliser and expert encoder, a reader for a documented file layout (one `.npz` per episode
holding `frames` uint8 [T, H, W, 3] and `actions` float [T, 2]), an embodiment, a generator of a small
sample dataset (a square that moves as its commands say), a training config, tests and a README. The
author replaces the modality's meaning, the reader's layout and the sample generator with their own.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

from astra_core.errors import ConfigError

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{1,30}")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "astra-$dash"
version = "0.1.0"
description = "An Astra world plugin: the $name embodiment, its modality and its reader"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["astra-world>=$astra_version", "numpy"]

[project.optional-dependencies]
test = ["pytest>=8"]

[project.entry-points.astra]
$name = "astra_$name.plugin"

[tool.setuptools]
packages = ["astra_$name"]
"""

INIT = '''\
"""The $name embodiment for Astra world."""

__version__ = "0.1.0"
'''

PLUGIN = '''\
"""The $name plugin: its modality, reader and embodiment, registered through Astra's hooks.

Astra finds this module through the entry point in pyproject.toml (group "astra"); each hook calls
`register` once per item. Run `astra plugins` to see what it registers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from astra_core import hookimpl
from astra_core.data import Episode
from astra_core.errors import ReaderError, ShapeError
from astra_core.modality import AlignedActions, Embodiment, Modality, latent_frame_indices
from astra_core.data.video import resize_crop, uint8_to_frames

MODALITY = "${name}_cmd"
READER = "${name}_npz"
EMBODIMENT = "$name"


class ${camel}Command(Modality):
    """Raw: [T, 2] per frame, a velocity command (vx, vy) in pixels per frame; row t is the command
    that leads from frame t−1 into frame t (row 0 is ignored). Vector (2): the commands of the raw
    frames inside the latent frame, summed (the displacement over that latent frame)."""

    name = MODALITY
    action_dim = 2
    raw_format = "per frame [T, 2]: velocity command vx, vy in pixels per frame"
    vector_format = "summed velocity over the frames leading into the latent frame (2)"
    bounds = {"raw": (-50.0, 50.0)}  # no command moves more than 50 pixels a frame

    def align(self, raw, temporal_factor: int) -> AlignedActions:
        a = np.asarray(raw, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 2:
            raise ShapeError(f"{self.name}: expected raw actions [T, 2], got {a.shape}")
        self.check_values(a)
        idx = latent_frame_indices(len(a), temporal_factor)
        vectors = [a[s + 1 : e + 1].sum(0) for s, e in zip(idx[:-1], idx[1:])]
        return self._aligned(np.array(vectors).reshape(-1, 2))

    # The defaults serve here: `normalizer()` standardises each dimension with statistics fitted on the
    # training data, `encoder(token_dim)` is a small MLP. Override them when the defaults do not fit.


class ${camel}Reader:
    """One episode per `.npz` file: `frames` uint8 [T, H, W, 3] and `actions` float [T, 2] (the
    modality's raw format), optional `fps` (a scalar). Frames are scaled and centre-cropped to `size`."""

    name = READER
    modalities = (MODALITY,)

    def __init__(self, size: tuple[int, int] = (64, 64)):
        self.size = size

    def read(self, path) -> Episode:
        path = Path(path)
        if not path.is_file():
            raise ReaderError(f"{path}: no such episode file")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [key for key in ("frames", "actions") if key not in data.files]
                if missing:
                    raise ReaderError(f"{path}: no {missing} array(s); expected 'frames' and 'actions'")
                frames, actions = data["frames"], data["actions"]
                fps = float(data["fps"]) if "fps" in data.files else 10.0
        except ReaderError:
            raise
        except (OSError, ValueError) as err:
            raise ReaderError(f"{path}: not a readable .npz file ({err})") from None
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ReaderError(f"{path}: frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
        if actions.shape != (len(frames), 2):
            raise ReaderError(f"{path}: actions must be [T, 2] = [{len(frames)}, 2], got {actions.shape}")
        if len(frames) < 2:
            raise ReaderError(f"{path}: an episode needs at least 2 frames, got {len(frames)}")
        video = resize_crop(uint8_to_frames(frames), self.size)
        return Episode(EMBODIMENT, {MODALITY: actions.astype(np.float64)}, video, fps, str(path))


@hookimpl
def astra_register_modalities(register):
    register(${camel}Command())


@hookimpl
def astra_register_readers(register):
    register(${camel}Reader())


@hookimpl
def astra_register_embodiments(register):
    register(Embodiment(EMBODIMENT, (MODALITY,), reader=READER, description="$name (edit this description)"))
'''

SAMPLE = '''\
"""A small sample dataset in the reader's layout: `python -m astra_$name.sample OUT [--episodes N]`.

Each episode is a coloured square on a textured floor that moves by its velocity command every
frame, so a model trained on it has something to learn from the actions. Replace this with a
converter from your own recordings to the same layout (or change the reader)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def episode(seed: int, frames: int = 17, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    floor = (((yy // 8) + (xx // 8)) % 2 * 40 + 60).astype(np.uint8)
    background = np.stack([floor, floor + 20, floor + 10], axis=-1)
    colour = rng.integers(120, 255, 3)
    position = rng.uniform(16, size - 16, 2)
    actions = np.zeros((frames, 2))
    video = np.zeros((frames, size, size, 3), dtype=np.uint8)
    velocity = rng.uniform(-2, 2, 2)
    for t in range(frames):
        if t > 0:
            if rng.random() < 0.2:
                velocity = rng.uniform(-2, 2, 2)
            actions[t] = velocity
            position = np.clip(position + velocity, 6, size - 6)
        image = background.copy()
        y, x = position.round().astype(int)
        image[y - 5 : y + 5, x - 5 : x + 5] = colour
        video[t] = image
    return video, actions


def write(out: Path, episodes: int = 20, frames: int = 17) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(episodes):
        video, actions = episode(i, frames)
        path = out / f"episode_{i:04d}.npz"
        np.savez_compressed(path, frames=video, actions=actions, fps=np.float64(10.0))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--frames", type=int, default=17)
    args = parser.parse_args()
    paths = write(args.out, args.episodes, args.frames)
    print(f"wrote {len(paths)} episodes to {args.out}")


if __name__ == "__main__":
    main()
'''

CONFIG = """\
# Train a small world model on the $name sample data (see README.md for the steps before this):
#   astra train configs/train.yaml
# The choices of Astra world's shipped toy model, at a smaller width: each new frame is the last one
# warped by a predicted flow plus a residual (so an untrained model starts as copy-last-frame), with
# the last frame beside the noisy one on the input channels.
model:
  dit: {preset: tiny, dim: 96, ffn_dim: 384, num_heads: 4, num_layers: 3, in_dim: 96, out_dim: 50}
  action:
    encoder: moae
    modalities: [${name}_cmd]
    router: topk
    num_experts: 2
    router_options: {k: 1}
    token_dim: 32
    expert_hidden: 64
  history: {chunk_size: 2, context_frames: 1, window: 2, last_frame_channels: true}  # data.history_chunks x chunk_size
  guidance: {action_dropout: 0.1, scale: 1.0}
  sampler: {name: euler, num_steps: 4}
  flow: {prediction: warp, warp_unshuffle: 4, warp_mode: bicubic, sigma_floor: 0.9}
data:
  source: cache
  cache: [cache/shard-*.h5]
  weights: {$name: 1.0}
  history_chunks: 1
optim: {lr: 0.001, warmup_steps: 50}
steps: 400
batch_size: 8
eval_every: 0
checkpoint_every: 100
out_dir: runs/$name
"""

TESTS = '''\
"""Tests of the $name plugin: registration, the modality's alignment and bounds, the reader."""

import numpy as np
import pytest

from astra_core.errors import ReaderError, ShapeError
from astra_core.plugins import get_registry

from astra_$name import sample
from astra_$name.plugin import EMBODIMENT, MODALITY, READER


def test_the_plugin_registers_its_modality_reader_and_embodiment():
    registry = get_registry()
    assert MODALITY in registry.modalities and READER in registry.readers
    assert registry.embodiments[EMBODIMENT].modalities == (MODALITY,)


def test_alignment_sums_the_commands_of_each_latent_frame():
    modality = get_registry().modalities[MODALITY]
    raw = np.array([[0, 0], [1, 0], [1, 2], [0, 1], [3, 3]], dtype=float)
    aligned = modality.align(raw, temporal_factor=2)
    np.testing.assert_allclose(aligned.actions, [[0, 0], [2, 2], [3, 4]])
    assert aligned.mask.tolist() == [0, 1, 1]
    with pytest.raises(ShapeError, match="declared bounds"):
        modality.align(np.full((3, 2), 1e6), 1)


def test_the_reader_reads_the_sample_layout(tmp_path):
    (path,) = sample.write(tmp_path, episodes=1, frames=5)
    episode = get_registry().readers[READER].read(path)
    assert episode.frames.shape == (3, 5, 64, 64) and float(episode.frames.abs().max()) <= 1
    assert episode.actions[MODALITY].shape == (5, 2) and episode.embodiment == EMBODIMENT
    np.savez(tmp_path / "bad.npz", frames=np.zeros((5, 8, 8, 3), np.uint8))
    with pytest.raises(ReaderError, match=r"no \\['actions'\\] array"):
        get_registry().readers[READER].read(tmp_path / "bad.npz")
'''

README = """\
# astra-$dash

An [Astra world](https://pypi.org/project/astra-world/) plugin: the `$name` embodiment, its action
modality `${name}_cmd` and its reader `${name}_npz`. Written by `astra new-plugin $name`; edit it into
your own.

## What is in it

- `astra_$name/plugin.py`: the modality (a velocity command [T, 2] per frame, summed per latent
  frame), the reader (one `.npz` per episode: `frames` uint8 [T, H, W, 3], `actions` float [T, 2],
  optional `fps`) and the embodiment, registered through the `astra` entry point in `pyproject.toml`.
- `astra_$name/sample.py`: writes a small sample dataset in the reader's layout.
- `configs/train.yaml`: a small training config over the encoded sample.
- `tests/`: the plugin's own tests (`pytest tests`).

## From zero to an evaluated model

```bash
pip install -e .                             # registers the plugin with astra
astra plugins                                # lists $name: its modality, reader and embodiment
python -m pytest -q tests                    # the plugin's own tests
python -m astra_$name.sample data          # 20 sample episodes in the reader's layout
astra encode --reader ${name}_npz data/*.npz --out cache
astra train configs/train.yaml               # a few minutes on a laptop CPU
astra eval --checkpoint runs/$name/model.safetensors --cache "cache/*.h5" --horizons 8
astra eval --checkpoint runs/$name/model.safetensors --reader ${name}_npz data/*.npz --horizons 8 --out eval-files
```

## Make it yours

Change the modality's `raw_format`, `action_dim`, `bounds` and `align` to your actions (the timing
rule: row t leads from frame t−1 into frame t), the reader to your files, and the sample generator to
a converter from your recordings. Checkpoints you train store this package's name and version, so
loading one elsewhere says which package to install.
"""

FILES = {
    "pyproject.toml": PYPROJECT,
    "README.md": README,
    "astra_$name/__init__.py": INIT,
    "astra_$name/plugin.py": PLUGIN,
    "astra_$name/sample.py": SAMPLE,
    "configs/train.yaml": CONFIG,
    "tests/test_plugin.py": TESTS,
}


def _check_package_names(name: str) -> None:
    """The package would be the distribution `astra-NAME`, import `astra_NAME` and register the entry point
    NAME in the `astra` group: refuse a name any of which an installed package already uses (`world` would
    write a second `astra-world` depending on itself; `core` would shadow `astra_core`)."""
    import importlib.metadata
    import importlib.util

    dist, package = f"astra-{name.replace('_', '-')}", f"astra_{name}"
    try:
        importlib.metadata.distribution(dist)
        taken = f"the installed distribution {dist!r}"
    except importlib.metadata.PackageNotFoundError:
        taken = None
    if taken is None and importlib.util.find_spec(package) is not None:
        taken = f"the importable package {package!r}"
    if taken is None:
        owners = [ep.value for ep in importlib.metadata.entry_points(group="astra") if ep.name == name]
        taken = f"the plugin entry point {name!r} ({owners[0]})" if owners else None
    if taken:
        raise ConfigError(f"plugin name {name!r}: its package would clash with {taken}; choose another name")


def new_plugin(name: str, out: str | Path | None = None) -> Path:
    """Write the plugin package for embodiment `name` into `out` (default: ./astra-NAME); returns its
    folder. Refuses a name that is not a lowercase identifier and a folder that exists."""
    from astra_core import __version__

    if not NAME_PATTERN.fullmatch(name) or keyword.iskeyword(name):
        raise ConfigError(
            f"plugin name {name!r}: use 2 – 31 lowercase letters, digits and underscores, starting with a letter"
        )
    from astra_core.plugins import get_registry, plugins
    from astra_core.plugins.manager import SINGULAR

    registry = get_registry()
    for kind, taken in (("embodiments", name), ("modalities", f"{name}_cmd"), ("readers", f"{name}_npz")):
        if taken in getattr(registry, kind):  # the installed package would collide with it and fail to load
            owner = plugins().info[registry.owner[(kind, taken)]].label
            raise ConfigError(
                f"plugin name {name!r}: {owner} already registers the {SINGULAR[kind]} {taken!r}; choose another name"
            )
    _check_package_names(name)
    folder = Path(out) if out is not None else Path(f"astra-{name.replace('_', '-')}")
    if folder.exists():
        raise ConfigError(f"{folder}: already exists; choose another --out or remove it")
    values = {
        "name": name,
        "dash": name.replace("_", "-"),
        "camel": "".join(part.capitalize() for part in name.split("_")),
        "astra_version": __version__,
    }
    staging = folder.with_name(f".{folder.name}.writing")
    if staging.exists():
        import shutil

        shutil.rmtree(staging)
    for relative, text in FILES.items():
        path = staging / Template(relative).substitute(values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(text).substitute(values))
    staging.rename(folder)
    return folder
