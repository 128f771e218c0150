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
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from astra_core.checkpoint import write_text_atomically, written_atomically
from astra_core.data import Episode
from astra_core.data.cache import split_episodes
from astra_core.errors import AstraError, ConfigError
from astra_core.modality import concat_raw, raw_length, raw_rows
from astra_core.world import WorldModel

EVAL_SEED = 2_000_000


# The error of rounding frames in [-1, 1] to 8 bits: a uniform error of one step 2/255 has this mean square.
# PSNR stops there (58.9 dB): a prediction closer than the video's own quantisation is not any better, and an
# exact copy (copy-last-frame on a still scene) would otherwise score 106 dB and swamp a mean over episodes.
QUANTISATION_MSE = (2 / 255) ** 2 / 12


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB for frames in [-1, 1], at most 58.9 dB (8-bit quantisation); `mask` [.., H, W]
    restricts it to some pixels."""
    err = (pred - target).pow(2).mean(dim=0)  # over channels -> [T, H, W]
    if mask is not None:
        if not bool(mask.any()):
            return float("nan")
        err = err[mask]
    return 10 * math.log10(4.0 / max(float(err.mean()), QUANTISATION_MSE))


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


def gradient_energy(frames: torch.Tensor) -> torch.Tensor:
    """Mean squared spatial gradient of frames [..., H, W]: horizontal plus vertical finite differences."""
    dx = frames[..., :, 1:] - frames[..., :, :-1]
    dy = frames[..., 1:, :] - frames[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()


# Below this mean squared spatial gradient (in [-1, 1] pixel units; a tenth of one 8-bit level per pixel
# step) the truth is a flat colour, e.g. a game's view pressed against a wall, and a ratio to its detail
# says nothing: sharpness is NaN there, and the means over episodes leave it out.
FLAT_ENERGY = 1e-6


def detail_ratio(pred_energy: float, true_energy: float) -> float:
    """Detail of a prediction over the truth's, both as gradient energies; NaN where the truth is flat."""
    return pred_energy / true_energy if true_energy >= FLAT_ENERGY else float("nan")


def sharpness(pred: torch.Tensor, target: torch.Tensor) -> float:
    """How much spatial detail a prediction carries against the truth: the mean squared spatial gradient
    of `pred` over that of `target` (same shape, [..., H, W]). 1 is as detailed as the truth; a blurred
    mean scores far below 1, noise far above. Blur plus noise can score 1, so read it beside a PSNR.
    NaN where the truth has no detail to compare with (`FLAT_ENERGY`)."""
    return detail_ratio(float(gradient_energy(pred.float())), float(gradient_energy(target.float())))


@dataclass
class EvalSettings:
    episodes: int = 20
    horizons: tuple[int, ...] = (16, 48, 96)
    context_frames: int = 1
    change_threshold: float = 0.1  # per-pixel |GT − last context|, summed over channels, in [-1, 1] units
    switch_frames: int = 8
    # Teacher-forced next step: ground-truth context of 1, 1 + n, ..., 1 + (k − 1)·n frames (n frames per
    # step) and the true actions -> the next step's frames, against copy-last-frame on the same frames.
    teacher_forced_contexts: int = 4
    first_seed: int = EVAL_SEED  # episodes first_seed, first_seed + 1, ...: the benchmark's held-out seeds
    sheet_episodes: int = 0  # rollouts of the first N episodes per embodiment kept for a contact sheet
    # recorded episodes (evaluate_data) shorter than this are left out, so that a few short ones (a
    # crash ending an episode early) do not cut every other episode of their embodiment to their length
    min_frames: int = 0

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"episodes={self.episodes}: evaluate at least 1 episode per embodiment")
        if not self.horizons or min(self.horizons) < 1:
            raise ConfigError(f"horizons={list(self.horizons)}: give at least one horizon of 1 frame or more")
        if self.context_frames < 1 or self.teacher_forced_contexts < 1 or self.switch_frames < 1:
            raise ConfigError(
                f"context_frames={self.context_frames}, teacher_forced_contexts={self.teacher_forced_contexts}, "
                f"switch_frames={self.switch_frames}: each must be at least 1"
            )
        if self.first_seed < 0:
            raise ConfigError(f"first_seed={self.first_seed} must not be negative")
        if self.sheet_episodes < 0:
            raise ConfigError(f"sheet_episodes={self.sheet_episodes} must not be negative")
        if self.min_frames < 0:
            raise ConfigError(f"min_frames={self.min_frames} must not be negative")


def _rollout(wm: WorldModel, frames: torch.Tensor, streams: list[dict], context: int, horizon: int):
    """Predict `horizon` frames after `context` context frames for a batch of episodes; `streams` holds
    each episode's raw actions keyed by modality."""
    return wm.rollout(frames[:, :, :context], streams, horizon)


def _splice(wm: WorldModel, streams: dict, others: dict, at: int) -> dict:
    """Each modality's stream up to `at`, then the other episode's, by that modality's own rule."""
    return {m: wm.modalities[m].splice(stream, others[m], at) for m, stream in streams.items()}


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
        out[f"{prefix}sharpness@{h}"] = sharpness(p, t)
    return out


def _object_psnr(pred, truth, mask, settings: EvalSettings, prefix: str) -> dict[str, float]:
    """PSNR on the object pixels over the first h frames (NaN where a horizon holds no object pixel)."""
    out = {}
    for h in settings.horizons:
        m = mask[:h]
        out[f"{prefix}object_psnr@{h}"] = psnr(pred[:, :h], truth[:, :h], m) if bool(m.any()) else float("nan")
    return out


@torch.no_grad()
def teacher_forced(wm: WorldModel, frames: torch.Tensor, streams: list, contexts: int) -> list[dict[str, object]]:
    """The next step from ground truth, per episode: for k = 0 .. contexts − 1, the true context of
    1 + k·n frames (the context frame, then k true chunks observed as history, with their actions) and
    the true actions of the next step -> its n frames. frames [B, 3, T, H, W] hold whole episodes and
    `streams` their raw actions ({modality: stream} per sample, T rows).

    Returns per episode: `tf_psnr` (mean over the context lengths), `tf_psnr_by_context` (the list),
    the same for copy-last-frame (`tf_copy_last_psnr`, ...), `tf_margin` (model − copy-last, dB) and
    `tf_sharpness` (all predicted frames against the truth; NaN where the truth is flat)."""
    latent, tokenizer = wm.latent, wm.tokenizer
    chunk, n = latent.history_cfg.chunk_size, wm.frames_per_step
    if 1 + contexts * n > frames.shape[2]:
        raise AstraError(f"teacher forcing over {contexts} context lengths needs {1 + contexts * n} frames")
    latents = tokenizer.encode(frames.float().to(latent.device))
    vectors, masks = wm.align_streams(streams, frames.shape[2])

    def actions(a: int, b: int):
        return wm._for_net({k: v[:, a:b] for k, v in vectors.items()}, {k: m[:, a:b] for k, m in masks.items()})

    model_psnr, copy_psnr, energy_pred, energy_true = [], [], [], []
    for k in range(contexts):
        latent.reset(latents[:, :, :1], *actions(0, 1))
        for j in range(k):
            a = 1 + j * chunk
            latent.observe(latents[:, :, a : a + chunk], *actions(a, a + chunk))
        a = 1 + k * chunk
        predicted = latent.step(*actions(a, a + chunk))
        decoded = tokenizer.decode(torch.cat([latents[:, :, a - 1 : a], predicted.to(latents.dtype)], dim=2))
        pred = decoded[:, :, 1:].clamp(-1, 1).float().cpu()
        start = 1 + k * n
        truth, last = frames[:, :, start : start + n].float(), frames[:, :, start - 1 : start].float()
        model_psnr.append([psnr(pred[i], truth[i]) for i in range(len(pred))])
        copy_psnr.append([psnr(last[i].expand_as(truth[i]), truth[i]) for i in range(len(pred))])
        energy_pred.append([float(gradient_energy(pred[i])) for i in range(len(pred))])
        energy_true.append([float(gradient_energy(truth[i])) for i in range(len(pred))])
    out = []
    for i in range(frames.shape[0]):
        by_context = [row[i] for row in model_psnr]
        copy_by_context = [row[i] for row in copy_psnr]
        mean, copy_mean = sum(by_context) / contexts, sum(copy_by_context) / contexts
        pred_energy, true_energy = (sum(row[i] for row in rows) / contexts for rows in (energy_pred, energy_true))
        detail = detail_ratio(pred_energy, true_energy)
        out.append(
            {
                "tf_psnr": mean,
                "tf_psnr_by_context": by_context,
                "tf_copy_last_psnr": copy_mean,
                "tf_copy_last_psnr_by_context": copy_by_context,
                "tf_margin": mean - copy_mean,
                "tf_sharpness": detail,
            }
        )
    return out


@torch.no_grad()
def evaluate_episodes(
    label: str,
    episodes: list[Episode],
    others: list[Episode] | None,
    models: dict[str, WorldModel],
    settings: EvalSettings,
    progress: bool = True,
    responsiveness=None,
    counterfactual: tuple[list[dict], torch.Tensor] | None = None,
    objects: torch.Tensor | None = None,
    samples: list | None = None,
) -> dict[str, float]:
    """Mean metrics (and their spread) over `episodes` of one embodiment, for each model and for
    copy-last-frame: rollout PSNR/SSIM/sharpness at `settings.horizons`, the teacher-forced next
    step, and, with `others` (one per episode), action following: the error of a rollout driven by
    the other episode's actions (spliced by each modality's rule) over that of the true actions.
    `responsiveness(wm)`, where a world can render any future, adds per-episode responsiveness PSNRs.
    `counterfactual` = (streams, frames [B, 3, T, H, W]): the other episodes' actions from the context
    on as a real environment took them, with the environment's own frames after the context (a replay,
    `astra_core.apps.record.replay_episode`); the swapped rollouts are then driven by those streams and
    also scored against the environment's frames (`counterfactual_psnr@h`, and `env_following@h`: the
    swapped rollout's error against the original future over its error against what the environment
    did with the swapped actions; above 1 means the model moves the way the environment does).
    `objects` (bool [B, T, H, W] over the frames after the context: where the objects that matter are,
    e.g. Breakout's ball and paddle) adds `object_psnr@h`, the PSNR on those pixels only.
    `samples`, a list, receives the rows of a contact sheet (`sample_rows`) for the first
    `settings.sheet_episodes` episodes, from the first model. Episodes are rolled out together as
    one batch, so they must share length and modalities."""
    horizon, context = max(settings.horizons), settings.context_frames
    frames = torch.stack([ep.frames for ep in episodes])
    streams = [ep.actions for ep in episodes]
    if counterfactual is not None:
        spliced, cf_truth = counterfactual
    else:
        spliced = [_splice(next(iter(models.values())), s, o.actions, context) for s, o in zip(streams, others or [])]
        cf_truth = None
    truth = frames[:, :, context : context + horizon]
    last = frames[:, :, context - 1]
    per_episode: list[dict[str, float]] = [
        _metrics(last[i][:, None].expand_as(truth[i]), truth[i], last[i], settings, "copy_last/")
        for i in range(len(episodes))
    ]
    cf_horizons = () if cf_truth is None else tuple(h for h in settings.horizons if h <= cf_truth.shape[2])
    for i, results in enumerate(per_episode):
        if objects is not None:
            results.update(
                _object_psnr(last[i][:, None].expand_as(truth[i]), truth[i], objects[i], settings, "copy_last/")
            )
        for h in cf_horizons:
            results[f"copy_last/counterfactual_psnr@{h}"] = psnr(
                last[i][:, None].expand_as(cf_truth[i][:, :h]), cf_truth[i][:, :h]
            )
    for name, wm in tqdm(models.items(), desc=f"eval {label}", unit="model", leave=False, disable=not progress):
        pred = _rollout(wm, frames, streams, context, horizon)
        wrong = _rollout(wm, frames, spliced, context, horizon) if spliced else None
        responsive = responsiveness(wm) if responsiveness is not None else None
        forced = teacher_forced(wm, frames, streams, settings.teacher_forced_contexts)
        if samples is not None and name == next(iter(models)):
            samples.extend(sample_rows(label, episodes, last, truth, pred, wrong, cf_truth, settings.sheet_episodes))
        for i, results in enumerate(per_episode):
            results.update(_metrics(pred[i], truth[i], last[i], settings, f"{name}/"))
            if objects is not None:
                results.update(_object_psnr(pred[i], truth[i], objects[i], settings, f"{name}/"))
            if wrong is not None:
                for h in settings.horizons:
                    err_true = float((pred[i][:, :h] - truth[i][:, :h]).pow(2).mean())
                    err_shuffled = float((wrong[i][:, :h] - truth[i][:, :h]).pow(2).mean())
                    results[f"{name}/action_following@{h}"] = err_shuffled / max(err_true, 1e-10)
                results[f"{name}/action_following"] = results[f"{name}/action_following@{horizon}"]
                for h in cf_horizons:
                    err_env = float((wrong[i][:, :h] - cf_truth[i][:, :h]).pow(2).mean())
                    err_original = float((wrong[i][:, :h] - truth[i][:, :h]).pow(2).mean())
                    results[f"{name}/counterfactual_psnr@{h}"] = psnr(wrong[i][:, :h], cf_truth[i][:, :h])
                    results[f"{name}/env_following@{h}"] = err_original / max(err_env, 1e-10)
            if responsive is not None:
                results[f"{name}/responsiveness_psnr"] = responsive[i]
            for key, value in forced[i].items():
                if key.startswith("tf_copy_last"):
                    results[f"copy_last/{key.replace('_copy_last', '')}"] = value
                else:
                    results[f"{name}/{key}"] = value
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
            out[f"{key}/std"] = statistics.pstdev(values)  # the spread over episodes
    modalities = sorted({m for s in streams for m in s})
    for name, wm in models.items():
        if len(modalities) == 1:
            usage = router_usage(wm, [s[modalities[0]] for s in streams], modalities[0])
            if usage is not None:
                out[f"{name}/router_usage"] = usage
    return out


def sample_rows(label, episodes, last, truth, pred, wrong, cf_truth, count: int) -> list:
    """Contact-sheet groups (`demo.write_sheet`) for the first `count` episodes: the truth, the model's
    rollout, and where there are, the rollout driven by the other episode's actions and what the
    environment did with them; each row starts with the last context frame."""
    groups = []
    for i in range(min(count, len(episodes))):
        start = last[i][:, None].float()
        name = f"{label} {i}"
        rows = [(f"{name}\ntruth", truth[i]), (f"{name}\nmodel", pred[i])]
        if wrong is not None:
            rows.append((f"{name}\nmodel, other acts", wrong[i]))
        if cf_truth is not None and cf_truth.shape[2] >= truth.shape[2]:
            rows.append((f"{name}\nenv, other acts", cf_truth[i][:, : truth.shape[2]]))
        groups.append([(text, torch.cat([start, frames.float()], 1)) for text, frames in rows])
    return groups


def evaluate_embodiment(
    world, models: dict[str, WorldModel], settings: EvalSettings, progress: bool = True, samples: list | None = None
) -> dict[str, float]:
    """The toy benchmark for one world: held-out episodes from `settings.first_seed` on, others (for
    action following and responsiveness) from 10,000 seeds further, scored by `evaluate_episodes`."""
    horizon, context = max(settings.horizons), settings.context_frames
    step = next(iter(models.values())).frames_per_step
    needed = max(horizon, step + max(settings.switch_frames, step), settings.teacher_forced_contexts * step)
    total = context + math.ceil(needed / step) * step
    seed = settings.first_seed
    episodes = [world.episode(seed + i, total) for i in range(settings.episodes)]
    others = [world.episode(seed + 10_000 + i, total) for i in range(settings.episodes)]

    def as_eval(ep):
        return replace(ep, actions={world.modality: ep.actions[world.modality]})

    return evaluate_episodes(
        world.name,
        [as_eval(ep) for ep in episodes],
        [as_eval(o) for o in others],
        models,
        settings,
        progress,
        responsiveness=lambda wm: _responsiveness(wm, world, episodes, others, context, settings),
        samples=samples,
    )


@torch.no_grad()
def router_usage(wm: WorldModel, streams: list, modality: str) -> list[float] | None:
    """The share of routing weight each expert gets for this modality's actions (MoAE models only)."""
    moae = wm.net.moae
    if moae is None or not hasattr(moae, "router") or modality not in moae.names:
        return None
    vectors, masks = wm.align_streams([{modality: s} for s in streams], raw_length(streams[0]))
    stats = moae(vectors, masks).stats
    return [float(x) for x in stats["usage"][modality]]


def _responsiveness(wm, world, episodes, others, context, settings) -> list[float]:
    """Run on true actions, switch to another episode's actions after the first step, and score the
    frames right after the switch against the ground truth of the switched stream."""
    step = wm.frames_per_step
    horizon = step + max(settings.switch_frames, step)
    modality = wm.modalities[world.modality]
    switched = [
        modality.splice(ep.actions[world.modality], o.actions[world.modality], context + step)
        for ep, o in zip(episodes, others)
    ]
    frames = torch.stack([ep.frames for ep in episodes])
    pred = _rollout(wm, frames, [{world.modality: s} for s in switched], context, horizon)
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
    precision: str = "fp32",
    samples: list | None = None,
    warp_residual: float | None = None,
    warp_anchor: bool | None = None,
) -> dict:
    """{embodiment: metrics} for the models in `checkpoints` ({label: path}); embodiments are those the
    first model's modalities cover. `precision`: the DiT's, "fp32" or "bf16". `samples`: see
    `evaluate_episodes`. `guidance`, `num_steps`, `warp_residual` and `warp_anchor` override the
    checkpoints' defaults."""
    from astra_core.plugins import get_registry

    chosen = {
        "guidance_scale": guidance,
        "num_steps": num_steps,
        "warp_residual": warp_residual,
        "warp_anchor": warp_anchor,
    }
    options = {k: v for k, v in chosen.items() if v is not None}
    options["precision"] = precision
    models = {label: WorldModel.from_checkpoint(path, **options) for label, path in checkpoints.items()}
    first = next(iter(models.values()))
    registry = get_registry()
    results = {}
    covered = [w for w in registry.worlds.values() if w.modality in first.modalities]
    if not covered:
        raise AstraError(
            f"the checkpoint's modalities {sorted(first.modalities)} drive none of the toy worlds "
            f"({', '.join(f'{w.name}: {w.modality}' for w in registry.worlds.values())}); evaluate it on "
            "your own data with --cache or --reader"
        )
    for world in covered:
        if world.modality in first.modalities:
            results[world.name] = evaluate_embodiment(world, models, settings, progress, samples)
            for label, wm in models.items():  # the settings every figure was taken at
                results[world.name][f"{label}/sampling_steps"] = wm.latent.num_steps
                results[world.name][f"{label}/guidance"] = wm.latent.guidance_scale
                results[world.name][f"{label}/warp_residual"] = wm.latent.warp_residual
                results[world.name][f"{label}/warp_anchor"] = float(wm.latent.warp_anchor)
                results[world.name][f"{label}/bf16"] = float(wm.latent.dtype == torch.bfloat16)
    return results


def episodes_from_cache(patterns: list[str], tokenizer, held_out: bool = True) -> list[Episode]:
    """The (held-out) episodes of the shards matching `patterns`, decoded to frames by `tokenizer`
    (which must be the one that encoded them)."""
    import glob

    from astra_core.data.cache import read_shard

    paths = sorted({p for pattern in patterns for p in glob.glob(pattern)})
    if not paths:
        raise ConfigError(f"--cache: no shard matches {patterns}")
    episodes = [e for p in paths for e in read_shard(p, tokenizer.describe())]
    chosen = split_episodes(episodes)[1] if held_out else episodes
    out = []
    for e in chosen:
        frames = tokenizer.decode(e.latents[None].float())[0].clamp(-1, 1)
        length = frames.shape[1]
        streams = {m: raw_rows(r, 0, length) for m, r in e.raw.items()}
        out.append(Episode(e.embodiment, streams, frames, e.fps, e.source))
    return out


def episodes_from_reader(reader, paths: list[str], held_out: bool = True) -> list[Episode]:
    """Episodes read from `paths` by a registered reader; the held-out rule picks among them unless
    `held_out` is False (then all are scored, e.g. files kept apart for testing)."""
    episodes = []
    for path in paths:
        episode = reader.read(path)
        if episode.frames is None:
            raise AstraError(f"{path}: the reader {reader.name!r} gives no frames, so it cannot be evaluated")
        episodes.append(replace(episode, frames=episode.frames.float(), source=str(path)))
    return split_episodes(episodes)[1] if held_out else episodes


def replayed_counterfactual(
    episodes: list[Episode], others: list[Episode], context: int, length: int, progress: bool = True
) -> tuple[list[dict], torch.Tensor] | None:
    """For episodes recorded by `astra record`: each episode replayed in its environment up to its last
    context frame, then driven by the other episode's recorded actions, for the frames up to `length`.
    -> (the streams the model gets: the episode's own rows over the context, then the rows the
    environment measured; the environment's frames after the context [B, 3, T, H, W]), or None when
    an episode is not a recording. Replays that end early (the game is lost) cut every episode to the
    shortest."""
    from astra_core.apps.record import is_recording, recorded_env_actions, replay_episode
    from astra_core.data.video import resize_crop, uint8_to_frames

    if not all(is_recording(e.source) and is_recording(o.source) for e, o in zip(episodes, others)):
        return None
    streams, futures = [], []
    for episode, other in tqdm(
        list(zip(episodes, others)), desc="replay", unit="episode", leave=False, disable=not progress
    ):
        actions = recorded_env_actions(other.source)[context - 1 : length - 1]
        replay = replay_episode(episode.source, actions=actions, start=context - 1)
        own = episode.actions[replay.modality]
        streams.append({replay.modality: concat_raw(raw_rows(own, 0, context), raw_rows(replay.stream, 1, None))})
        future = uint8_to_frames(replay.frames[1:])
        if tuple(future.shape[-2:]) != tuple(episode.frames.shape[-2:]):
            future = resize_crop(future, tuple(episode.frames.shape[-2:]))
        futures.append(future)
    shortest = min(f.shape[1] for f in futures)
    if shortest < 1:
        return None
    streams = [{m: raw_rows(r, 0, context + shortest) for m, r in s.items()} for s in streams]
    return streams, torch.stack([f[:, :shortest] for f in futures])


def recorded_objects(episodes: list[Episode], context: int, length: int) -> torch.Tensor | None:
    """For episodes recorded by `astra record` whose adapter knows where the objects are (Breakout: the
    ball and paddle, from the RAM): bool [B, length − context, H, W] at the episodes' frame size."""
    from astra_core.apps.record import is_recording, object_masks

    if not all(is_recording(e.source) for e in episodes):
        return None
    masks = []
    for episode in episodes:
        m = object_masks(episode.source)
        if m is None or len(m) < length:
            return None
        m = torch.from_numpy(m[context:length]).float()
        if tuple(m.shape[-2:]) != tuple(episode.frames.shape[-2:]):
            m = F.interpolate(m[:, None], size=tuple(episode.frames.shape[-2:]), mode="bilinear")[:, 0]
        masks.append(m > 0)
    return torch.stack(masks)


def evaluate_data(
    episodes: list[Episode],
    models: dict[str, WorldModel],
    settings: EvalSettings,
    progress: bool = True,
    replay: bool = True,
    samples: list | None = None,
) -> dict:
    """{embodiment: metrics} for recorded episodes (`evaluate_episodes` per embodiment). Episodes shorter
    than `settings.min_frames` are left out (their count is stored as `episodes_left_out`); the rest of
    one embodiment are cut to the shortest one's length; horizons beyond it and teacher-forced contexts
    that do not fit are dropped (the settings used are stored with the figures); action following
    drives each episode with the next one's actions, so it needs two episodes of an embodiment. With
    `replay`, episodes recorded by `astra record` are also replayed in their environment with the next
    episode's actions (`replayed_counterfactual`), so following is scored against what the environment
    really does."""
    first = next(iter(models.values()))
    groups: dict[str, list[Episode]] = {}
    for episode in episodes:
        groups.setdefault(episode.embodiment or "episodes", []).append(episode)
    usable = {name: g for name, g in groups.items() if all(set(e.actions) <= set(first.modalities) for e in g)}
    if not usable:
        data = sorted({m for e in episodes for m in e.actions})
        raise AstraError(
            f"the checkpoint's modalities {sorted(first.modalities)} cover none of the data's modalities {data}"
        )
    context, step = settings.context_frames, first.frames_per_step
    results = {}
    for name, all_of_them in usable.items():
        group = [e for e in all_of_them if e.frames.shape[1] >= settings.min_frames]
        if not group:
            longest = max(e.frames.shape[1] for e in all_of_them)
            raise AstraError(
                f"{name}: no episode has --min-frames {settings.min_frames} frames (the longest has {longest})"
            )
        length = min(e.frames.shape[1] for e in group)
        if length - context < step:
            raise AstraError(
                f"{name}: the shortest episode ({min(group, key=lambda e: e.frames.shape[1]).source}) has "
                f"{length} frames; evaluation needs at least {context + step}"
            )
        others = group[1:] + group[:1] if len(group) > 1 else None
        counterfactual = (
            replayed_counterfactual(group, others, context, length, progress) if replay and others else None
        )
        if counterfactual is not None:  # a replay the environment ended early shortens the whole group
            length = min(length, context + counterfactual[1].shape[2])
            if length - context < step:
                counterfactual = None
                length = min(e.frames.shape[1] for e in group)
        available = (length - context) // step * step
        horizons = tuple(h for h in settings.horizons if h <= available) or (available,)
        contexts = max(1, min(settings.teacher_forced_contexts, (length - 1) // step))
        cut = [
            replace(e, frames=e.frames[:, :length], actions={m: raw_rows(r, 0, length) for m, r in e.actions.items()})
            for e in group
        ]
        others = cut[1:] + cut[:1] if len(cut) > 1 else None
        if counterfactual is not None:
            streams, future = counterfactual
            counterfactual = (
                [{m: raw_rows(r, 0, length) for m, r in s.items()} for s in streams],
                future[:, :, : length - context],
            )
        here = replace(settings, horizons=horizons, teacher_forced_contexts=contexts)
        objects = recorded_objects(cut, context, length)
        results[name] = evaluate_episodes(
            name, cut, others, models, here, progress, counterfactual=counterfactual, objects=objects, samples=samples
        )
        results[name]["episodes"] = len(group)
        results[name]["episodes_left_out"] = len(all_of_them) - len(group)
        for label, wm in models.items():
            results[name][f"{label}/sampling_steps"] = wm.latent.num_steps
            results[name][f"{label}/guidance"] = wm.latent.guidance_scale
            results[name][f"{label}/warp_residual"] = wm.latent.warp_residual
            results[name][f"{label}/warp_anchor"] = float(wm.latent.warp_anchor)
            results[name][f"{label}/bf16"] = float(wm.latent.dtype == torch.bfloat16)
    return results


def _settings_line(results: dict, labels: list[str]) -> str:
    first = next(iter(results.values()), {})
    parts = []
    for label in labels:
        if f"{label}/sampling_steps" in first:
            precision = "bf16" if first.get(f"{label}/bf16") else "fp32"
            residual = first.get(f"{label}/warp_residual", 1.0)
            weighed = f", warp residual {residual:g}" if residual != 1.0 else ""
            weighed += ", anchored warp" if first.get(f"{label}/warp_anchor") else ""
            parts.append(
                f"{label}: {first[f'{label}/sampling_steps']} sampling steps, guidance "
                f"{first[f'{label}/guidance']:g}{weighed}, {precision}"
            )
    counts = [f"{name} {r['episodes']}" for name, r in results.items() if "episodes" in r]
    if counts:
        left = {name: r["episodes_left_out"] for name, r in results.items() if r.get("episodes_left_out")}
        note = (
            f" ({', '.join(f'{n}: {k} shorter than --min-frames left out' for n, k in left.items())})" if left else ""
        )
        parts.append("episodes scored: " + ", ".join(counts) + note)
    return "Settings: " + "; ".join(parts) if parts else ""


def _figure(value: float | None, digits: int) -> str:
    """A table cell: the value at `digits` decimals, or "–" where there is none (absent or NaN)."""
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def next_step_table(results: dict, horizons=(16, 48)) -> str:
    """The teacher-forced next step, sharpness and action following: the figures that blur cannot pass."""
    labels = sorted({k.split("/")[0] for r in results.values() for k in r if k.endswith("/tf_psnr")})
    short, long = horizons[0], max(horizons)
    following = [short] if long == short else [short, long]
    header = (
        "| embodiment | model | next step PSNR | copy-last PSNR | margin dB | sharpness (next step) | "
        f"sharpness@{short} | " + " | ".join(f"action following@{h}" for h in following) + " |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]

    def cell(r, key, digits=2):
        return _figure(r.get(key), digits)

    for emb, r in results.items():
        for label in labels:
            std = r.get(f"{label}/tf_margin/std")
            margin = cell(r, f"{label}/tf_margin") + (f" ± {std:.2f}" if std is not None else "")
            cells = [
                cell(r, f"{label}/tf_psnr"),
                cell(r, "copy_last/tf_psnr"),
                margin,
                cell(r, f"{label}/tf_sharpness"),
                cell(r, f"{label}/sharpness@{short}"),
                *(cell(r, f"{label}/action_following@{h}") for h in following),
            ]
            lines.append(f"| {emb} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def counterfactual_table(results: dict, horizons=(16, 48)) -> str:
    """Recorded environments replayed with another episode's actions: the swapped rollout's PSNR against
    what the environment did (copy-last on the same frames beside it) and env following (above 1: the
    model moves the way the environment does)."""
    labels = sorted({k.split("/")[0] for r in results.values() for k in r if "/counterfactual_psnr@" in k})
    header = "| embodiment | model | " + " | ".join(
        f"PSNR vs the environment@{h} | env following@{h}" for h in horizons
    )
    lines = [header + " |", "|" + "---|" * (header.count("|") + 0)]
    for emb, r in results.items():
        for label in labels:
            cells = []
            for h in horizons:
                cells += [_figure(r.get(f"{label}/counterfactual_psnr@{h}"), 2)]
                cells += [_figure(r.get(f"{label}/env_following@{h}"), 2)]
            if any(c != "–" for c in cells):
                lines.append(f"| {emb} | {label} | " + " | ".join(cells) + " |")
    note = "Each held-out episode replayed in its environment with the next episode's actions from the context on."
    return "\n".join(lines) + "\n\n" + note


def object_table(results: dict, horizons=(16, 48)) -> str:
    """PSNR on the pixels of the objects that matter (Breakout: ball and paddle, from the RAM)."""
    labels = sorted({k.split("/")[0] for r in results.values() for k in r if "/object_psnr@" in k})
    header = "| embodiment | model | " + " | ".join(f"object PSNR@{h}" for h in horizons) + " |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for emb, r in results.items():
        for label in labels:
            cells = [r.get(f"{label}/object_psnr@{h}") for h in horizons]
            if any(c is not None for c in cells):
                shown = " | ".join(_figure(c, 2) for c in cells)
                lines.append(f"| {emb} | {label} | {shown} |")
    return "\n".join(lines)


def markdown_table(results: dict, horizons=(16, 48)) -> str:
    """The rollout table (PSNR, changed-pixel PSNR and SSIM at horizons, action following over the
    longest, responsiveness), then the next-step table and the settings the figures were taken at."""
    labels = sorted({k.split("/")[0] for r in results.values() for k in r if "/" in k})
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
            for h in horizons:  # "–" where an embodiment's episodes were too short for the horizon
                cells += [
                    _figure(r.get(f"{label}/psnr@{h}"), 2),
                    _figure(r.get(f"{label}/psnr_changed@{h}"), 2),
                    _figure(r.get(f"{label}/ssim@{h}"), 3),
                ]
            af = r.get(f"{label}/action_following")
            rp = r.get(f"{label}/responsiveness_psnr")
            cells += [_figure(af, 2), _figure(rp, 2)]
            lines.append(f"| {emb} | {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    if any(k.endswith("/tf_psnr") for r in results.values() for k in r):
        text += "\n\n" + next_step_table(results, horizons)
    if any("/counterfactual_psnr@" in k for r in results.values() for k in r):
        text += "\n\n" + counterfactual_table(results, horizons)
    if any("/object_psnr@" in k for r in results.values() for k in r):
        text += "\n\n" + object_table(results, horizons)
    settings = _settings_line(results, [x for x in labels if x != "copy_last"])
    return text + ("\n\n" + settings if settings else "")


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

    next_step = _next_step_figure(results, plt, min(horizons))
    if next_step is not None:
        paths.append(_save_figure(next_step, out / "next_step_and_sharpness.png"))
        plt.close(next_step)

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


def _next_step_figure(results: dict, plt, horizon: int):
    """Bars per embodiment: the teacher-forced margin over copy-last (with its spread over episodes), and
    sharpness teacher-forced and at rollout@horizon against the band where detail matches the truth."""
    worlds = list(results)
    labels = sorted({k.split("/")[0] for r in results.values() for k in r if k.endswith("/tf_margin")})
    if not labels:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / len(labels)
    for j, label in enumerate(labels):
        xs = [i + j * width for i in range(len(worlds))]
        margins = [results[w].get(f"{label}/tf_margin", float("nan")) for w in worlds]
        spread = [results[w].get(f"{label}/tf_margin/std", 0.0) for w in worlds]
        left.bar(xs, margins, width, yerr=spread, capsize=3, label=label.replace("_", " "))
        forced = [results[w].get(f"{label}/tf_sharpness", float("nan")) for w in worlds]
        rolled = [results[w].get(f"{label}/sharpness@{horizon}", float("nan")) for w in worlds]
        right.bar([x - width / 4 for x in xs], forced, width / 2, label=f"{label.replace('_', ' ')}, next step")
        right.bar([x + width / 4 for x in xs], rolled, width / 2, label=f"{label.replace('_', ' ')}, rollout@{horizon}")
    for ax in (left, right):
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(worlds))], worlds, fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    left.axhline(0, color="0.3", lw=0.8)
    left.set_ylabel("next step PSNR − copy-last (dB)")
    left.set_title("teacher-forced next step")
    right.axhspan(0.7, 1.3, color="C2", alpha=0.12, zorder=0)
    right.axhline(1, color="0.3", lw=0.8)
    right.set_ylabel("sharpness (1 = the truth's detail)")
    right.set_title("sharpness")
    fig.tight_layout()
    return fig


def _save_figure(fig, path: Path) -> Path:
    with written_atomically(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110)
    return path
