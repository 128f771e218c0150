"""The toy benchmark (`astra eval`): rollouts against the exact ground truth of the toy worlds.

For each embodiment, held-out episodes (seeds never used in training) are rolled out from their first
context frames with the true actions and compared with the world's own rendering of the future:
PSNR and SSIM at several horizons, on all pixels and on the pixels that change in the ground truth
(those that differ from the last context frame), so that a fixed camera cannot make copy-last-frame
look good. Also: the action-following score (error with shuffled actions over error with the true
ones; above 1 means the model follows its actions), a responsiveness test (PSNR in the frames right
after the actions switch to another episode's), and the baselines copy-last-frame and, when given,
the same architecture trained without actions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import write_text_atomically, written_atomically
from .errors import AstraError
from .modality import raw_length, raw_rows
from .world import WorldModel

EVAL_SEED = 2_000_000


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB for frames in [-1, 1]; `mask` [.., H, W] restricts it to some pixels."""
    err = (pred - target).pow(2).mean(dim=0)  # over channels -> [T, H, W]
    if mask is not None:
        if not bool(mask.any()):
            return float("nan")
        err = err[mask]
    return 10 * math.log10(4.0 / max(float(err.mean()), 1e-10))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean SSIM (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5) of [3, T, H, W] frames in [-1, 1]."""
    x = (pred.permute(1, 0, 2, 3) + 1) / 2
    y = (target.permute(1, 0, 2, 3) + 1) / 2
    g = torch.exp(-((torch.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2).expand(3, 1, 11, 11)

    def blur(z):
        return F.conv2d(z, window, groups=3)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


@dataclass
class EvalSettings:
    episodes: int = 20
    horizons: tuple[int, ...] = (16, 48, 96)
    context_frames: int = 1
    change_threshold: float = 0.1  # per-pixel |GT − last context|, summed over channels, in [-1, 1] units
    switch_frames: int = 8


def _rollout(wm: WorldModel, frames: torch.Tensor, streams: list, modality: str, context: int, horizon: int):
    """Predict `horizon` frames after `context` context frames for a batch of episodes."""
    return wm.rollout(frames[:, :, :context], [{modality: s} for s in streams], horizon)


def _metrics(pred, truth, last, settings: EvalSettings, prefix: str) -> dict[str, float | list[float]]:
    out: dict[str, float | list[float]] = {
        f"{prefix}psnr_curve": [psnr(pred[:, t : t + 1], truth[:, t : t + 1]) for t in range(truth.shape[1])]
    }
    changed = (truth - last[:, None]).abs().sum(0) > settings.change_threshold
    for h in settings.horizons:
        p, t = pred[:, :h], truth[:, :h]
        out[f"{prefix}psnr@{h}"] = psnr(p, t)
        out[f"{prefix}psnr_changed@{h}"] = psnr(p, t, changed[:h])
        out[f"{prefix}ssim@{h}"] = ssim(p, t)
    return out


@torch.no_grad()
def evaluate_embodiment(
    world, models: dict[str, WorldModel], settings: EvalSettings, progress: bool = True
) -> dict[str, float]:
    """Mean metrics over held-out episodes for each model and for copy-last-frame; the episodes of an
    embodiment are rolled out together as one batch."""
    horizon, context = max(settings.horizons), settings.context_frames
    step = next(iter(models.values())).frames_per_step
    needed = max(horizon, step + max(settings.switch_frames, step))
    total = context + math.ceil(needed / step) * step
    episodes = [world.episode(EVAL_SEED + i, total) for i in range(settings.episodes)]
    others = [world.episode(EVAL_SEED + 10_000 + i, total) for i in range(settings.episodes)]
    frames = torch.stack([ep.frames for ep in episodes])
    streams = [ep.actions[world.modality] for ep in episodes]
    spliced = [_splice(s, o.actions[world.modality], context) for s, o in zip(streams, others)]
    truth = frames[:, :, context : context + horizon]
    last = frames[:, :, context - 1]
    per_episode: list[dict[str, float]] = [
        _metrics(last[i][:, None].expand_as(truth[i]), truth[i], last[i], settings, "copy_last/")
        for i in range(len(episodes))
    ]
    for name, wm in tqdm(models.items(), desc=f"eval {world.name}", unit="model", leave=False, disable=not progress):
        pred = _rollout(wm, frames, streams, world.modality, context, horizon)
        wrong = _rollout(wm, frames, spliced, world.modality, context, horizon)
        responsive = _responsiveness(wm, world, episodes, others, context, settings)
        for i, results in enumerate(per_episode):
            results.update(_metrics(pred[i], truth[i], last[i], settings, f"{name}/"))
            err_true = float((pred[i] - truth[i]).pow(2).mean())
            err_shuffled = float((wrong[i] - truth[i]).pow(2).mean())
            results[f"{name}/action_following"] = err_shuffled / max(err_true, 1e-10)
            results[f"{name}/responsiveness_psnr"] = responsive[i]
    sums: dict[str, list] = {}
    for results in per_episode:
        for key, value in results.items():
            if isinstance(value, list) or not math.isnan(value):
                sums.setdefault(key, []).append(value)
    out: dict = {}
    for key, values in sums.items():
        if isinstance(values[0], list):  # per-frame curves: the mean over episodes, frame by frame
            out[key] = [sum(col) / len(col) for col in zip(*values)]
        else:
            out[key] = sum(values) / len(values)
    for name, wm in models.items():
        usage = router_usage(wm, streams, world.modality)
        if usage is not None:
            out[f"{name}/router_usage"] = usage
    return out


@torch.no_grad()
def router_usage(wm: WorldModel, streams: list, modality: str) -> list[float] | None:
    """The share of routing weight each expert gets for this modality's actions (MoAE models only)."""
    moae = wm.net.moae
    if moae is None or not hasattr(moae, "router") or modality not in moae.names:
        return None
    vectors, masks = wm.align_streams([{modality: s} for s in streams], raw_length(streams[0]))
    stats = moae(vectors, masks).stats
    return [float(x) for x in stats["usage"][modality]]


def _splice(stream, other, context: int):
    """Another episode's actions after the context (pose streams re-anchored to this episode's last pose)."""
    from .modality import concat_raw

    return concat_raw(raw_rows(stream, 0, context), _reanchor(stream, other, context))


def _reanchor(stream, other, context: int):
    import numpy as np

    rest = raw_rows(other, context, None)
    if isinstance(stream, np.ndarray) and stream.ndim == 3:  # absolute camera poses: keep other's motion
        anchor = stream[context - 1] @ np.linalg.inv(other[context - 1])
        return anchor[None] @ rest
    if isinstance(stream, dict) and "translation" in stream:  # ego poses: the same, in SE(3)
        return _reanchor_ego(stream, other, context)
    return rest


def _reanchor_ego(stream, other, context: int):
    import numpy as np
    import quaternion

    def pose(s, i):
        m = np.eye(4)
        m[:3, :3] = quaternion.as_rotation_matrix(quaternion.from_float_array(s["rotation"][i]))
        m[:3, 3] = s["translation"][i]
        return m

    anchor = pose(stream, context - 1) @ np.linalg.inv(pose(other, context - 1))
    poses = [anchor @ pose(other, i) for i in range(context, len(other["translation"]))]
    rot = quaternion.as_float_array(quaternion.from_rotation_matrix(np.stack([p[:3, :3] for p in poses])))
    return {"translation": np.stack([p[:3, 3] for p in poses]), "rotation": rot}


def _responsiveness(wm, world, episodes, others, context, settings) -> list[float]:
    """Run on true actions, switch to another episode's actions after the first step, and score the
    frames right after the switch against the ground truth of the switched stream."""
    step = wm.frames_per_step
    horizon = step + max(settings.switch_frames, step)
    switched = [
        _splice(ep.actions[world.modality], o.actions[world.modality], context + step)
        for ep, o in zip(episodes, others)
    ]
    frames = torch.stack([ep.frames for ep in episodes])
    pred = _rollout(wm, frames, switched, world.modality, context, horizon)
    after = slice(step, step + settings.switch_frames)
    scores = []
    for i, ep in enumerate(episodes):
        state = world.state_at(ep, context - 1)
        truth = world.render_future(state, raw_rows(switched[i], context, context + horizon))
        scores.append(psnr(pred[i][:, after], truth[:, after]))
    return scores


def run_benchmark(
    checkpoints: dict[str, str],
    settings: EvalSettings,
    guidance: float | None = None,
    num_steps: int | None = None,
    progress: bool = True,
) -> dict:
    """{embodiment: metrics} for the models in `checkpoints` ({label: path}); embodiments are those the
    first model's modalities cover."""
    from .plugins import get_registry

    options = {k: v for k, v in {"guidance_scale": guidance, "num_steps": num_steps}.items() if v is not None}
    models = {label: WorldModel.from_checkpoint(path, **options) for label, path in checkpoints.items()}
    first = next(iter(models.values()))
    registry = get_registry()
    results = {}
    for world in registry.worlds.values():
        if world.modality in first.modalities:
            results[world.name] = evaluate_embodiment(world, models, settings, progress)
    return results


def markdown_table(results: dict, horizons=(16, 48)) -> str:
    labels = sorted({k.split("/")[0] for r in results.values() for k in r})
    lines = []
    header = (
        "| embodiment | model | "
        + " | ".join(f"PSNR@{h} | PSNR changed@{h} | SSIM@{h}" for h in horizons)
        + " | action following | responsiveness PSNR |"
    )
    lines.append(header)
    lines.append("|" + "---|" * (header.count("|") - 1))
    for emb, r in results.items():
        for label in labels:
            cells = []
            for h in horizons:
                cells += [
                    f"{r.get(f'{label}/psnr@{h}', float('nan')):.2f}",
                    f"{r.get(f'{label}/psnr_changed@{h}', float('nan')):.2f}",
                    f"{r.get(f'{label}/ssim@{h}', float('nan')):.3f}",
                ]
            af = r.get(f"{label}/action_following")
            rp = r.get(f"{label}/responsiveness_psnr")
            cells += [f"{af:.2f}" if af is not None else "–", f"{rp:.2f}" if rp is not None else "–"]
            lines.append(f"| {emb} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(results: dict, out: Path, horizons=(16, 48)) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out / "eval.json", json.dumps(results, indent=2))
    write_text_atomically(out / "eval.md", markdown_table(results, horizons) + "\n")


def write_plots(results: dict, out: Path, horizons=(16, 48, 96)) -> list[Path]:
    """PNG figures: PSNR against horizon per embodiment with the baselines drawn, and the router's
    expert usage per modality. Needs matplotlib (the `plots` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise AstraError('--plots needs matplotlib: pip install "astra-world[plots]"') from None
    out.mkdir(parents=True, exist_ok=True)
    worlds = list(results)
    cols = min(2, len(worlds))
    rows = math.ceil(len(worlds) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.8 * rows), squeeze=False)
    styles = {"astra": ("C0", "-"), "no_action": ("C1", "--"), "copy_last": ("0.4", ":")}
    for ax, world in zip(axes.flat, worlds):
        r = results[world]
        for key, curve in r.items():
            if not key.endswith("/psnr_curve"):
                continue
            label = key.split("/")[0]
            color, style = styles.get(label, (None, "-"))
            ax.plot(range(1, len(curve) + 1), curve, style, color=color, label=label.replace("_", " "))
        for h in horizons:
            ax.axvline(h, color="0.85", lw=0.8, zorder=0)
        ax.set_title(world)
        ax.set_xlabel("frames after the context")
        ax.set_ylabel("PSNR per frame (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(worlds) :]:
        ax.axis("off")
    fig.tight_layout()
    paths = [_save_figure(fig, out / "psnr_vs_horizon.png")]
    plt.close(fig)

    usage = {w: r[k] for w in worlds for k in r if k.endswith("/router_usage") and k.startswith("astra/")}
    if usage:
        fig, ax = plt.subplots(figsize=(1.6 * len(usage) + 2.5, 3.6))
        names = list(usage)
        bottom = [0.0] * len(names)
        for e in range(len(next(iter(usage.values())))):
            shares = [usage[n][e] for n in names]
            ax.bar(names, shares, bottom=bottom, label=f"expert {e}")
            bottom = [b + s for b, s in zip(bottom, shares)]
        ax.set_ylabel("share of routing weight")
        ax.set_title("router usage per modality (held-out actions)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        paths.append(_save_figure(fig, out / "router_usage.png"))
        plt.close(fig)
    return paths


def _save_figure(fig, path: Path) -> Path:
    with written_atomically(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110)
    return path
