"""`astra demo`: the shipped model rolls out every preset action script of every embodiment.

For each toy world whose modality the model knows, all presets start from one ground-truth frame
(the same start per world); the presets of all worlds are rolled out together as one batch. Each
rollout is written as an mp4 (2x upscaled) and a gif (ground truth left, prediction right), and one
contact sheet shows every rollout as two rows of frames: ground truth above prediction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from astra_core.checkpoint import write_text_atomically, written_atomically
from astra_core.data.video import frames_to_uint8, side_by_side, write_gif, write_mp4
from astra_core.errors import AstraError
from astra_core.modality import raw_length, raw_rows
from astra_core.world import WorldModel

DEMO_SEED = 3_000_000  # disjoint from the training seeds (from 0) and the benchmark's (from 2,000,000)
SHEET_COLUMNS = 9


@dataclass
class DemoRollout:
    world: str
    preset: str
    truth: torch.Tensor  # [3, T, H, W] in [-1, 1], the start frame first
    prediction: torch.Tensor  # [3, T, H, W], the same start frame first
    files: list[Path] = field(default_factory=list)


@dataclass
class DemoResult:
    rollouts: list[DemoRollout]
    contact_sheet: Path
    generated_frames: int
    generation_seconds: float
    total_seconds: float
    write_seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.generated_frames / max(self.generation_seconds, 1e-9)


def demo_worlds(model: WorldModel, names: list[str] | None = None) -> list:
    """The registered toy worlds the model can drive (optionally only those in `names`)."""
    from astra_core.plugins import get_registry

    worlds = [w for w in get_registry().worlds.values() if w.modality in model.modalities]
    if names:
        known = {w.name: w for w in worlds}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise AstraError(f"--embodiment: unknown {unknown}; this model drives {sorted(known)}")
        worlds = [known[n] for n in names]
    if not worlds:
        raise AstraError(f"no registered toy world uses this model's modalities {sorted(model.modalities)}")
    return worlds


def run_demo(
    checkpoint: str | Path | None = None,
    out_dir: str | Path = "astra-demo",
    num_frames: int = 96,
    embodiments: list[str] | None = None,
    seed: int = DEMO_SEED,
    progress: bool = True,
    **rollout_options,
) -> DemoResult:
    """Roll out every preset of every embodiment for `num_frames` frames and write the videos and the
    contact sheet into `out_dir`."""
    start = time.perf_counter()
    if num_frames < 1:
        raise AstraError(f"--frames {num_frames}: give the number of frames to roll out, 1 or more")
    model = WorldModel.from_checkpoint(checkpoint, **rollout_options)
    out = Path(out_dir)
    rollouts = []
    worlds = demo_worlds(model, embodiments)
    steps = sum(len(w.presets()) for w in worlds) * num_frames
    bar = tqdm(total=steps, desc="demo", unit="frame", disable=not progress)
    jobs = []  # (world, state, start frame, preset name, stream), all rolled out as one batch
    for world in worlds:
        state = world.initial_state(seed)
        first = world.render_states(seed, [state]).permute(1, 0, 2, 3)  # [3, 1, H, W]
        for name in world.presets():
            stream = world.preset_actions(name, state)
            if raw_length(stream) < num_frames + 1:
                raise AstraError(f"{world.name}: preset {name!r} is shorter than the {num_frames} frames asked for")
            jobs.append((world, state, first, name, stream))
    context = torch.stack([first for _, _, first, _, _ in jobs])
    t0 = time.perf_counter()
    pred = model.rollout(
        context,
        [{world.modality: stream} for world, _, _, _, stream in jobs],
        num_frames,
        on_step=_ProgressStep(bar, len(jobs)),
    )
    gen_seconds = time.perf_counter() - t0
    generated = pred.shape[0] * pred.shape[2]
    for (world, state, first, name, stream), p in zip(jobs, pred):
        truth = world.render_future(state, raw_rows(stream, 1, num_frames + 1))
        rollouts.append(DemoRollout(world.name, name, torch.cat([first, truth], 1), torch.cat([first, p.float()], 1)))
    bar.close()
    write_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)  # only now: a run that fails leaves no folder behind
    for r in rollouts:
        folder = out / r.world
        folder.mkdir(exist_ok=True)
        fps = model_fps(worlds, r.world)
        # The mp4 is upscaled 2x for viewing; the gif stays at the model's resolution (gif encoding is slow).
        r.files = [
            write_mp4(folder / f"{r.preset}.mp4", side_by_side(r.truth, r.prediction, scale=2), fps=fps),
            write_gif(folder / f"{r.preset}.gif", side_by_side(r.truth, r.prediction, scale=1), fps=fps),
        ]
    sheet = write_contact_sheet(out / "contact_sheet.png", rollouts)
    write_seconds = time.perf_counter() - write_start
    return DemoResult(rollouts, sheet, generated, gen_seconds, time.perf_counter() - start, write_seconds)


class _ProgressStep:
    """`on_step` callback: advances a frame progress bar by the new frames of a whole batch."""

    def __init__(self, bar, batch: int):
        self.bar, self.batch, self.done = bar, batch, 0

    def __call__(self, frames_done: int) -> None:
        self.bar.update((frames_done - self.done) * self.batch)
        self.done = frames_done


def model_fps(worlds, name: str) -> float:
    return float(next(w.fps for w in worlds if w.name == name))


def write_contact_sheet(path: Path, rollouts: list[DemoRollout], columns: int = SHEET_COLUMNS) -> Path:
    """One PNG: per rollout, a row of ground-truth frames above a row of predicted frames, at evenly
    spaced times (the first column is the shared start frame), with a label strip on the left."""
    groups = [
        [(f"{r.world}\n{r.preset} (truth)", r.truth), (f"{r.world}\n{r.preset} (model)", r.prediction)]
        for r in rollouts
    ]
    return write_sheet(path, groups, columns)


def write_sheet(path: Path, groups: list[list[tuple[str, torch.Tensor]]], columns: int = SHEET_COLUMNS) -> Path:
    """One PNG of labelled rows of frames, in groups with a small gap between them: each row is
    (label, frames [3, T, H, W] in [-1, 1]) drawn at `columns` evenly spaced times (all T frames when T
    is fewer), written over the group's first row. Every row shares H and W; the rows of a group share T."""
    from PIL import Image, ImageDraw

    rows = [row for group in groups for row in group]
    if not rows:
        raise AstraError("contact sheet: no rollouts to draw")
    sizes = {tuple(frames.shape[-2:]) for _, frames in rows}
    if len(sizes) != 1:
        raise AstraError(f"contact sheet: rows of different frame sizes {sorted(sizes)}")
    h, w = sizes.pop()
    for group in groups:
        lengths = {frames.shape[1] for _, frames in group}
        if len(lengths) != 1:
            raise AstraError(f"contact sheet: the rows of {group[0][0]!r} differ in length {sorted(lengths)}")
    label_w, gap = 128, 4
    width = label_w + min(columns, max(frames.shape[1] for _, frames in rows)) * w
    sheet = Image.new("RGB", (width, len(rows) * h + len(groups) * gap), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    top = 0
    for group in groups:
        times = np.linspace(0, group[0][1].shape[1] - 1, min(columns, group[0][1].shape[1])).round().astype(int)
        for label, frames in group:
            strip = frames_to_uint8(frames[:, times])  # [columns, H, W, 3]
            sheet.paste(Image.fromarray(np.concatenate(list(strip), axis=1)), (label_w, top))
            draw.text((4, top + h // 2 - 12), label, fill=(0, 0, 0))
            top += h
        for c, frame in enumerate(times):
            draw.text((label_w + c * w + 2, top - len(group) * h + 2), f"t={frame}", fill=(255, 255, 255))
        top += gap
    with written_atomically(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def run_rollout(
    checkpoint: str | Path | None,
    embodiment: str,
    out_dir: str | Path = "astra-rollout",
    actions: str | Path | None = None,
    preset: str | None = None,
    context: str | Path | None = None,
    num_frames: int | None = None,
    seed: int = 0,
    progress: bool = True,
    **rollout_options,
) -> dict:
    """Roll out one action script (a file, or a toy world's preset) from a context image or video (or the
    toy world's start frame); writes `rollout.mp4`, `rollout.gif` and `actions.json` (the action trace:
    the raw rows fed to the model and the per-latent-frame vectors they became)."""
    import json

    from astra_core.data.action_files import load_action_file, stream_rows_to_json
    from astra_core.data.video import read_context
    from astra_core.plugins import get_registry

    registry = get_registry()
    body = registry.get("embodiments", embodiment)
    model = WorldModel.from_checkpoint(checkpoint, **rollout_options)
    usable = [m for m in body.modalities if m in model.modalities]
    if not usable:
        raise AstraError(
            f"embodiment {embodiment!r} emits {list(body.modalities)}, none of which this model knows "
            f"({sorted(model.modalities)})"
        )
    modality = model.modalities[usable[0]]
    world = registry.worlds.get(body.world) if body.world else None
    if preset is not None:
        if world is None:
            raise AstraError(f"--preset: embodiment {embodiment!r} has no toy world, so no presets; give --actions")
        stream = world.preset_actions(preset, world.initial_state(seed))
    elif actions is not None:
        stream = load_action_file(actions, modality)
    else:
        raise AstraError("give --actions FILE or --preset NAME")
    size = model.frame_size or ((world.height, world.width) if world is not None else (64, 64))
    if context is not None:
        first = read_context(context, size, max_frames=1)
    elif world is not None:
        first = world.render_states(seed, [world.initial_state(seed)]).permute(1, 0, 2, 3)
    else:
        raise AstraError(f"--context: embodiment {embodiment!r} has no toy world to start from; give an image")
    step = model.frames_per_step
    available = (raw_length(stream) - 1) // step * step
    if num_frames is None:
        num_frames = available
    if num_frames < 1 or num_frames > available:
        source = actions or f"preset {preset!r}"
        raise AstraError(
            f"--frames {num_frames}: {source} has {raw_length(stream)} rows, enough for 1 to {available} frames "
            f"(the model makes {step} frames per step)"
        )
    start = time.perf_counter()
    with tqdm(total=num_frames, desc="rollout", unit="frame", disable=not progress) as bar:
        pred = model.rollout(first[None], [{modality.name: stream}], num_frames, on_step=_ProgressStep(bar, 1))
    pred = pred[0].float()
    seconds = time.perf_counter() - start
    out = Path(out_dir)
    video = frames_to_uint8(torch.cat([first, pred], dim=1))
    video = video.repeat(2, axis=1).repeat(2, axis=2)
    fps = float(getattr(world, "fps", 10.0))
    files = [write_mp4(out / "rollout.mp4", video, fps=fps), write_gif(out / "rollout.gif", video, fps=fps)]
    fed = 1 + -(-num_frames // step) * step  # the rows the model was given: whole steps, the last one cut
    aligned = modality.align(raw_rows(stream, 0, fed), model.tokenizer.temporal_factor)
    trace = {
        "embodiment": embodiment,
        "modality": modality.name,
        "checkpoint": str(checkpoint) if checkpoint else "shipped default",
        "context": str(context) if context else f"toy world {body.world}, seed {seed}",
        "actions": str(actions) if actions else f"preset {preset}",
        "frames": num_frames,
        "fps": fps,
        "raw": stream_rows_to_json(stream, 0, fed),
        "latent_actions": aligned.actions.tolist(),
        "latent_mask": aligned.mask.tolist(),
    }
    files.append(write_text_atomically(out / "actions.json", json.dumps(trace, indent=1)))
    return {"files": files, "frames": num_frames, "seconds": seconds}
