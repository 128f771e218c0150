"""`astra ablate`: the paper's ablations at toy scale, with equal steps for every variant.

Each variant is the base config with a few fields changed, trained once per seed into
OUT/VARIANT/seed-S (a run that already finished is reused, one that was stopped resumes from its
state), then evaluated on the toy benchmark. A finished run's records are `done.json` (its config and
training time) and `ablate_eval.json` (its figures): with those two files alone, its weights deleted or
the folder copied to another machine, the run still counts as finished and evaluated, so a table can be
rebuilt, and extended, from records kept beside it. The table gives, per variant, the mean over its seeds of
the mean over embodiments of each figure, with the seeds' spread; a variant differs from the full model
only where the gap exceeds both spreads. The JSON beside it holds every seed's and every embodiment's
figures, and, for the variants with a learned router, what the router learned: the share of each
modality's routing weight per expert, and the teacher-forced next step through each expert alone.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astra_core.checkpoint import write_text_atomically
from astra_core.config import TrainConfig
from astra_core.errors import ConfigError

MARK_START = "<!-- astra ablate: start -->"
MARK_END = "<!-- astra ablate: end -->"


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    changes: dict[str, Any]  # dotted config paths -> values
    # further changes computed from the base config (dumped to a dict), for values that depend on it
    derived: Callable[[dict], dict[str, Any]] | None = None


def _without_frame_channels(data: dict) -> dict[str, Any]:
    """The input channels that `last_frame_channels` adds (half of in_dim) go with it."""
    if not data["model"]["history"].get("last_frame_channels"):
        raise ConfigError(
            "ablation no_frame_channels: the base config has no last frame on the input channels "
            "(model.history.last_frame_channels) to remove"
        )
    return {"model.dit.in_dim": data["model"]["dit"]["in_dim"] // 2}


VARIANTS = {
    v.name: v
    for v in (
        Variant("full", "MoAE with a learned top-k router, action-free guidance, noise-augmented history", {}),
        Variant(
            "no_afg",
            "no action dropout in training and guidance scale 1 (no action-free guidance)",
            {"model.guidance.action_dropout": 0.0, "model.guidance.scale": 1.0},
        ),
        Variant("no_noise_history", "history latents never noised in training", {"model.history.noise_prob": 0.0}),
        Variant(
            "shared_encoder",
            "one shared action encoder over inputs padded to one width, no experts, no routing",
            {"model.action.encoder": "shared"},
        ),
        Variant(
            "fixed_router",
            "MoAE with the fixed modality -> expert table instead of the learned router",
            {"model.action.router": "fixed", "model.action.router_options": {}},
        ),
        Variant(
            "no_frame_channels",
            "no last history frame on the input channels: the history reaches new frames through attention only",
            {"model.history.last_frame_channels": False},
            derived=_without_frame_channels,
        ),
        # Beyond the paper: the action also modulates AdaLN (see DiTConfig.action_modulation).
        Variant(
            "action_modulation",
            "full, plus the action feature added to each frame's AdaLN time embedding",
            {"model.dit.action_modulation": True},
        ),
    )
}

SUMMARY = (
    ("tf_margin", "next-step margin dB"),
    ("tf_sharpness", "sharpness, next step"),
    ("sharpness@16", "sharpness@16"),
    ("psnr@16", "PSNR@16"),
    ("psnr_changed@16", "changed@16"),
    ("action_following@16", "following@16"),
    ("responsiveness_psnr", "responsiveness PSNR"),
)
DIGITS = {"tf_sharpness": 2, "sharpness@16": 2, "action_following@16": 3}  # the rest: 2 decimals of dB


def variant_config(
    base: TrainConfig, variant: Variant, out_dir: Path, steps: int | None, seed: int | None = None
) -> TrainConfig:
    """The base config with the variant's changes, its own output folder, the shared step count and
    (when given) the run's seed."""
    data = base.model_dump(mode="json")
    changes = dict(variant.changes)
    if variant.derived is not None:
        changes.update(variant.derived(data))
    for path, value in changes.items():
        node = data
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        if leaf not in node:
            raise ConfigError(f"ablation {variant.name}: the config has no field {path!r}")
        node[leaf] = value
    data["out_dir"] = str(out_dir)
    if steps is not None:
        data["steps"] = steps
    if seed is not None:
        data["seed"] = seed
    return TrainConfig.from_dict(data, source=f"ablation {variant.name}")


def stop_when_orphaned(parent: int, interval: float = 1.0, grace: float = 120.0) -> threading.Thread:
    """Watch, from a worker process, for the death of `parent`; then send this process SIGTERM, on
    which a running trainer saves its state and stops (a resumable run, not a stray process). A worker
    still alive `grace` seconds later (one idle in its pool, waiting for work that cannot come) exits."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)

    thread = threading.Thread(target=watch, name="astra-orphan-watch", daemon=True)
    thread.start()
    return thread


def _variant_worker(
    cfg_json: str,
    name: str,
    settings: dict,
    threads: int,
    progress: bool,
    parent: int | None = None,
    jobs: int = 1,
) -> dict:
    """Train one run of a variant (or reuse / resume it) and evaluate it (or reuse its evaluation).

    Runs in the calling process or, with `parent` set, in a worker process of `--jobs`; returns
    {"bench": {...}, "experts": {...} or None, "train"/"eval": wall seconds, "train_cpu"/"eval_cpu": CPU
    seconds (None for records that did not keep them), "jobs"/"threads": how many runs trained at once
    and on how many torch threads each (None where the record predates them)}.
    """
    import torch

    if parent is not None:
        stop_when_orphaned(parent)
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        return _train_and_evaluate(cfg_json, name, settings, progress, jobs)
    finally:
        if parent is not None and os.getppid() != parent:  # stopped because the ablation was: leave now
            os._exit(1)


def _train_and_evaluate(cfg_json: str, name: str, settings: dict, progress: bool, jobs: int = 1) -> dict:
    import torch

    from astra_core.apps.evaluate import EvalSettings, run_benchmark
    from astra_core.apps.train import RUN_FILES, Trainer

    cfg = TrainConfig.model_validate_json(cfg_json)
    folder = Path(cfg.out_dir)
    done = folder / "done.json"
    if not done.is_file():
        resume = (folder / "state.pt").is_file()
        if not resume:  # stopped before its first checkpoint: what it logged or wrote starts again
            for stale in RUN_FILES:
                (folder / stale).unlink(missing_ok=True)
        trainer = Trainer(cfg, resume=resume, progress=progress)
        trainer.train()
        if trainer.step < cfg.steps:
            raise ConfigError(f"ablation {name}: training stopped at step {trainer.step}; run again to resume")
        record = {
            "steps": trainer.step,
            "train_seconds": trainer.elapsed(),
            "train_cpu_seconds": trainer.cpu_elapsed(),
            "jobs": jobs,  # runs trained at once; their wall seconds depend on it
            "threads": torch.get_num_threads(),
            "config": cfg.model_dump(mode="json"),
        }
        write_text_atomically(done, json.dumps(record, indent=1))
    finished = json.loads(done.read_text())
    changed = changed_fields(finished["config"], cfg) if "config" in finished else []
    if changed:
        raise ConfigError(
            f"ablation {name}: {folder} holds a finished run of another config (fields {', '.join(changed)}); "
            "delete the folder to train it again, or give another --out"
        )
    train = {
        "train": finished["train_seconds"],
        "train_cpu": finished.get("train_cpu_seconds"),
        "jobs": finished.get("jobs"),
        "threads": finished.get("threads"),
    }
    model = folder / "model.safetensors"
    cached = folder / "ablate_eval.json"
    previous = json.loads(cached.read_text()) if cached.is_file() else None
    if previous is not None and "experts" in previous:
        same_settings = previous.get("key", {}).get("settings") == settings
        # Same weights (or the weights were dropped and the record kept), same benchmark: reuse.
        if same_settings and (not model.is_file() or previous["key"] == _eval_key(settings, model)):
            return {
                "bench": previous["bench"],
                "experts": previous["experts"],
                **train,
                "eval": previous["eval_seconds"],
                "eval_cpu": previous.get("eval_cpu_seconds"),
            }
    if not model.is_file():
        raise ConfigError(
            f"ablation {name}: {folder} holds a finished run without its weights ({model.name}) and without an "
            "evaluation of them under these benchmark settings; delete the folder to train it again"
        )
    key = _eval_key(settings, model)
    start, cpu_start = time.time(), time.process_time()
    eval_settings = EvalSettings(episodes=settings["episodes"], horizons=tuple(settings["horizons"]))
    bench = run_benchmark({name: str(model)}, eval_settings, progress=progress)
    experts = expert_specialisation(str(model), eval_settings) if learned_router(cfg) else None
    eval_seconds, eval_cpu = time.time() - start, time.process_time() - cpu_start
    record = {
        "key": key,
        "bench": bench,
        "experts": experts,
        "eval_seconds": eval_seconds,
        "eval_cpu_seconds": eval_cpu,
    }
    write_text_atomically(cached, json.dumps(record))
    return {"bench": bench, "experts": experts, **train, "eval": eval_seconds, "eval_cpu": eval_cpu}


def _eval_key(settings: dict, model: Path) -> dict[str, Any]:
    stat = model.stat()
    return {"settings": settings, "model_size": stat.st_size, "model_mtime_ns": stat.st_mtime_ns}


def changed_fields(stored: dict, cfg: TrainConfig) -> list[str]:
    """The fields where a finished run's stored config differs from `cfg`, its output folder aside (a
    run's records may move); fields the record predates count at their defaults, as on `--resume`."""
    from astra_core.apps.train_state import _differences, _with_defaults

    return [k for k in _differences(_with_defaults(stored), cfg.model_dump(mode="json")) if k != "out_dir"]


def learned_router(cfg: TrainConfig) -> bool:
    """Whether the config's action path routes tokens by a router with parameters (not the fixed
    table, not one shared expert, not the shared-encoder ablation)."""
    return cfg.model.action.encoder == "moae" and cfg.model.action.router not in ("fixed", "shared")


@contextmanager
def only_expert(moae, expert: int):
    """Route every modality's tokens to one expert, with weight 1, inside the block."""
    from astra_core.model.moae import FixedRouter

    learned = moae.router
    router = FixedRouter({name: expert for name in moae.names})
    router.setup(learned.token_dim, moae.num_experts, moae.names)
    moae.router = router
    try:
        yield
    finally:
        moae.router = learned


def expert_specialisation(checkpoint: str, settings) -> dict[str, dict[str, Any]] | None:
    """What a learned router chose, per toy world the checkpoint drives (each has one modality): the
    share of that modality's routing weight each expert gets (`usage`), and the teacher-forced next
    step's PSNR (`tf_psnr`, as in the benchmark, on its held-out episodes) with the learned routing and
    through each expert alone (`tf_psnr_expert_alone`). Experts that specialise show as large losses
    through the experts a modality does not use. None for a model without MoAE experts."""
    import torch

    from astra_core.apps.evaluate import router_usage, teacher_forced
    from astra_core.model.moae import MoAE
    from astra_core.plugins import get_registry
    from astra_core.world import WorldModel

    wm = WorldModel.from_checkpoint(checkpoint)
    moae = wm.net.moae
    if not isinstance(moae, MoAE):
        return None
    contexts = settings.teacher_forced_contexts
    out: dict[str, dict[str, Any]] = {}
    for world in get_registry().worlds.values():
        if world.modality not in wm.modalities:
            continue
        length = 1 + contexts * wm.frames_per_step
        episodes = [world.episode(settings.first_seed + i, length) for i in range(settings.episodes)]
        frames = torch.stack([ep.frames for ep in episodes])
        streams = [{world.modality: ep.actions[world.modality]} for ep in episodes]

        def mean_psnr(frames=frames, streams=streams) -> float:
            scores = teacher_forced(wm, frames, streams, contexts)
            return sum(float(s["tf_psnr"]) for s in scores) / len(scores)

        alone = []
        for expert in range(moae.num_experts):
            with only_expert(moae, expert):
                alone.append(mean_psnr())
        out[world.name] = {
            "modality": world.modality,
            "usage": router_usage(wm, [s[world.modality] for s in streams], world.modality),
            "tf_psnr": mean_psnr(),
            "tf_psnr_expert_alone": alone,
        }
    return out


def run_ablation(
    config: str | Path,
    out: str | Path = "runs/ablate",
    variants: list[str] | None = None,
    steps: int | None = None,
    eval_episodes: int = 10,
    horizons: tuple[int, ...] = (16, 48),
    progress: bool = True,
    jobs: int = 1,
    seeds: tuple[int, ...] = (0, 1),
) -> dict:
    """Train and evaluate every variant once per seed; returns {"variants": {name: mean summary},
    "spread": {name: the seeds' range per figure}, "differences": {...}, "runs": ..., ...}.

    `jobs` > 1 runs that many trainings at once in worker processes, the machine's cores shared among
    them (one torch thread each on a 2-core machine with `jobs=2`). Finished trainings and their
    evaluations are reused, so a run split over several commands costs no more than one.
    """
    import torch

    from astra_core.apps.evaluate import EvalSettings

    names = variants or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ConfigError(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"--variants: {twice} named twice; each variant trains once per seed")
    if max(horizons) < 16 or 16 not in horizons:
        raise ConfigError(f"--horizons {list(horizons)}: the table needs the horizon 16 among them")
    if jobs < 1:
        raise ConfigError(f"--jobs: expected at least 1, got {jobs}")
    seeds = tuple(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds {list(seeds)}: give one or more distinct seeds, none negative")
    try:  # the benchmark's own checks, before any variant is trained
        EvalSettings(episodes=eval_episodes, horizons=tuple(horizons))
    except ConfigError as err:
        raise ConfigError(f"--eval-episodes {eval_episodes} --horizons {list(horizons)}: {err}") from None
    base = TrainConfig.from_yaml(config)
    out = Path(out)
    settings = {"episodes": eval_episodes, "horizons": list(horizons)}
    runs = [(name, seed) for name in names for seed in seeds]
    configs = {
        (name, seed): variant_config(base, VARIANTS[name], out / name / f"seed-{seed}", steps, seed)
        for name, seed in runs
    }
    started = time.time()
    outcomes: dict[tuple[str, int], dict] = {}
    threads = torch.get_num_threads()
    if jobs == 1 or len(runs) == 1:
        jobs = 1
        for run in runs:
            outcomes[run] = _variant_worker(configs[run].model_dump_json(), run[0], settings, 0, progress)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        workers = min(jobs, len(runs))
        threads = max(1, torch.get_num_threads() // workers)
        context = multiprocessing.get_context("spawn")  # no forked torch thread pools
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {
                pool.submit(
                    _variant_worker, configs[r].model_dump_json(), r[0], settings, threads, False, os.getpid(), workers
                ): r
                for r in runs
            }
            try:
                for future in as_completed(futures):
                    run = futures[future]
                    outcomes[run] = future.result()
                    if progress:
                        took = (outcomes[run]["train"] + outcomes[run]["eval"]) / 60
                        print(
                            f"ablation: {run[0]} (seed {run[1]}) finished ({took:.1f} min of training and evaluation)",
                            flush=True,
                        )
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # runs not started yet are dropped
                raise
    results: dict[str, Any] = {
        "config": str(config),
        "seeds": list(seeds),
        "variants": {},
        "spread": {},
        "runs": {},
        "per_embodiment": {},
        "router": {},
        "seconds": {},
    }
    for name in names:  # the table keeps the order of `names`, whatever order the workers finished in
        per_seed = {seed: summarize(outcomes[(name, seed)]["bench"], name) for seed in seeds}
        results["runs"][name] = {str(seed): per_seed[seed] for seed in seeds}
        results["variants"][name], results["spread"][name] = mean_and_spread(list(per_seed.values()))
        results["per_embodiment"][name] = {
            str(seed): {
                world: {k: v for k, v in r.items() if not isinstance(v, list)}
                for world, r in outcomes[(name, seed)]["bench"].items()
            }
            for seed in seeds
        }
        experts = {str(seed): outcomes[(name, seed)]["experts"] for seed in seeds}
        if any(e is not None for e in experts.values()):
            results["router"][name] = experts
        results["seconds"][name] = {
            str(seed): {
                k: outcomes[(name, seed)].get(k) for k in ("train", "eval", "train_cpu", "eval_cpu", "jobs", "threads")
            }
            for seed in seeds
        }
    if "full" in results["variants"]:
        results["differences"] = differences(results)
        results["differences_by_world"] = differences_by_world(results)
    # The same held-out episodes for every variant, so one copy-last-frame row serves as the reference.
    results["baseline"] = summarize(outcomes[runs[0]]["bench"], "copy_last")
    results["steps"] = steps or base.steps
    results["eval"] = {"episodes": eval_episodes, "horizons": list(horizons)}
    results["jobs"] = jobs
    results["threads_per_job"] = threads
    results["wall_seconds"] = time.time() - started
    results["machine"] = machine()
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out / "ablation.json", json.dumps(results, indent=2))
    write_text_atomically(out / "ablation.md", ablation_table(results) + "\n")
    if results["router"]:
        write_router_plot(results, out / "router.png")
    return results


def summarize(bench: dict, label: str) -> dict[str, float]:
    """Mean over embodiments of each summary figure."""
    out = {}
    for key, _ in SUMMARY:
        values = [r[f"{label}/{key}"] for r in bench.values() if f"{label}/{key}" in r]
        if values:
            out[key] = sum(values) / len(values)
    return out


def mean_and_spread(summaries: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per figure: the mean over the runs (seeds) and the spread, max − min (0 for one run)."""
    means, spreads = {}, {}
    for key in dict.fromkeys(k for s in summaries for k in s):  # in the summaries' order
        values = [s[key] for s in summaries if key in s]
        means[key] = sum(values) / len(values)
        spreads[key] = max(values) - min(values)
    return means, spreads


def differences(results: dict) -> dict[str, dict[str, dict[str, Any]]]:
    """Each variant against `full`, per figure: the gap of the means, the larger of the two seed
    spreads, and whether the gap exceeds it (`shown`; False: no difference at these seeds)."""
    full, full_spread = results["variants"]["full"], results["spread"]["full"]
    out = {}
    for name, summary in results["variants"].items():
        if name == "full":
            continue
        out[name] = {}
        for key, value in summary.items():
            if key not in full:
                continue
            gap = value - full[key]
            spread = max(results["spread"][name].get(key, 0.0), full_spread.get(key, 0.0))
            out[name][key] = {"gap": gap, "spread": spread, "shown": abs(gap) > spread}
    return out


def differences_by_world(results: dict) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """As `differences`, world by world: {variant: {world: {figure: {gap, spread, shown}}}}, from each
    seed's figures on that world. A variant can differ on one world where the mean over worlds hides it."""
    per = results["per_embodiment"]

    def seeds_of(name: str, world: str, key: str) -> list[float]:
        values = [runs[world].get(f"{name}/{key}") for runs in per[name].values() if world in runs]
        return [v for v in values if v is not None]

    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for name in per:
        if name == "full":
            continue
        worlds = [w for w in next(iter(per["full"].values())) if all(w in r for r in per[name].values())]
        for world in worlds:
            for key, _ in SUMMARY:
                ours, full = seeds_of(name, world, key), seeds_of("full", world, key)
                if not ours or not full:
                    continue
                gap = sum(ours) / len(ours) - sum(full) / len(full)
                spread = max(max(ours) - min(ours), max(full) - min(full))
                entry = {"gap": gap, "spread": spread, "shown": abs(gap) > spread}
                out.setdefault(name, {}).setdefault(world, {})[key] = entry
    return out


def _cell(key: str, value: float | None, spread: float | None = None) -> str:
    if value is None:
        return "–"
    digits = DIGITS.get(key, 2)
    text = f"{value:.{digits}f}"
    return text if not spread else f"{text} ± {spread / 2:.{digits}f}"


def _shown_gaps(figures: dict[str, dict[str, Any]]) -> str:
    """The gaps beyond the spread, as 'figure +gap (spread s); ...' ('' when there are none)."""
    titles = dict(SUMMARY)
    return "; ".join(
        f"{titles[k]} {d['gap']:+.{DIGITS.get(k, 2)}f} (spread {d['spread']:.{DIGITS.get(k, 2)}f})"
        for k, d in figures.items()
        if d["shown"]
    )


def ablation_table(results: dict) -> str:
    """The variants (mean ± half the seeds' range), copy-last, and the gaps to `full` that exceed the
    seeds' spread."""
    seeds = results.get("seeds", [0])
    lines = [
        "| variant | " + " | ".join(title for _, title in SUMMARY) + " | train min per seed | what changes |",
        "|" + "---|" * (len(SUMMARY) + 3),
    ]
    for name, summary in results["variants"].items():
        spread = results["spread"][name]
        cells = " | ".join(_cell(key, summary.get(key), spread.get(key)) for key, _ in SUMMARY)
        minutes = [results["seconds"][name][str(s)]["train"] / 60 for s in seeds]
        lines.append(f"| {name} | {cells} | {' / '.join(f'{m:.1f}' for m in minutes)} | {VARIANTS[name].description} |")
    if results.get("baseline"):
        cells = " | ".join(_cell(key, results["baseline"].get(key)) for key, _ in SUMMARY)
        lines.append(f"| copy last frame | {cells} | – | baseline: the last context frame repeated |")
    diffs = results.get("differences")
    if diffs:
        lines += [
            "",
            "Gaps to `full` larger than the seeds' spread (the larger of the two ranges); other gaps: none.",
            "",
        ]
        for name, figures in diffs.items():
            lines.append(f"- {name}: " + (_shown_gaps(figures) or "none"))
        by_world = results.get("differences_by_world", {})
        rows = [
            f"- {name}, {world}: {_shown_gaps(figures)}"
            for name, worlds in by_world.items()
            for world, figures in worlds.items()
            if _shown_gaps(figures)
        ]
        if rows:
            lines += ["", "World by world, the gaps to `full` larger than that world's seed spread:", "", *rows]
    router = results.get("router", {}).get("full")
    if router:
        lines += ["", router_table(router)]
    return "\n".join(lines)


def router_table(per_seed: dict[str, dict | None]) -> str:
    """The learned router of one variant, per world (seeds averaged): the share of routing weight per
    expert, and the teacher-forced next step with the learned routing and through each expert alone."""
    runs = [r for r in per_seed.values() if r]
    worlds = list(runs[0])
    experts = len(runs[0][worlds[0]]["tf_psnr_expert_alone"])
    weights = " | ".join(f"weight to expert {e}" for e in range(experts))
    alone = " | ".join(f"expert {e} alone" for e in range(experts))
    lines = [
        f"| world (modality) | {weights} | next-step PSNR, learned routing | {alone} |",
        "|" + "---|" * (2 + 2 * experts),
    ]

    def mean(values):
        return sum(values) / len(values)

    for world in worlds:
        usage = [
            mean([r[world]["usage"][e] for r in runs if r[world]["usage"]] or [float("nan")]) for e in range(experts)
        ]
        alone = [mean([r[world]["tf_psnr_expert_alone"][e] for r in runs]) for e in range(experts)]
        learned = mean([r[world]["tf_psnr"] for r in runs])
        lines.append(
            f"| {world} ({runs[0][world]['modality']}) | "
            + " | ".join(f"{u:.2f}" for u in usage)
            + f" | {learned:.2f} | "
            + " | ".join(f"{a:.2f}" for a in alone)
            + " |"
        )
    return "\n".join(lines)


def write_router_plot(results: dict, path: Path) -> Path | None:
    """Per variant with a learned router: a heat map of routing weight (world × expert) and the next
    step's PSNR through each expert alone, less the learned routing's. Needs matplotlib (`plots`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    variants = [(name, [r for r in per_seed.values() if r]) for name, per_seed in results["router"].items()]
    variants = [(name, runs) for name, runs in variants if runs]
    fig, axes = plt.subplots(len(variants), 2, figsize=(10, 3.2 * len(variants)), squeeze=False)
    for row, (name, runs) in enumerate(variants):
        worlds = list(runs[0])
        experts = len(runs[0][worlds[0]]["tf_psnr_expert_alone"])
        usage = [[sum(r[w]["usage"][e] for r in runs) / len(runs) for e in range(experts)] for w in worlds]
        loss = [
            [sum(r[w]["tf_psnr_expert_alone"][e] - r[w]["tf_psnr"] for r in runs) / len(runs) for e in range(experts)]
            for w in worlds
        ]
        left, right = axes[row]
        image = left.imshow(usage, vmin=0, vmax=1, cmap="viridis")
        left.set_xticks(range(experts), [str(e) for e in range(experts)])
        left.set_xlabel("expert")
        left.set_yticks(range(len(worlds)), worlds)
        for i, values in enumerate(usage):
            for e, value in enumerate(values):
                left.text(e, i, f"{value:.2f}", ha="center", va="center", color="w" if value < 0.5 else "k")
        left.set_title(f"{name}: share of routing weight")
        fig.colorbar(image, ax=left)
        width = 0.8 / experts
        for e in range(experts):
            right.bar([i + e * width for i in range(len(worlds))], [v[e] for v in loss], width, label=f"expert {e}")
        right.axhline(0, color="k", linewidth=0.8)
        right.set_xticks([i + 0.4 - width / 2 for i in range(len(worlds))], [w.replace("_", "\n") for w in worlds])
        right.set_ylabel("dB against the learned routing")
        right.set_title("next step through one expert alone")
        right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def how_trained(runs: list[dict]) -> str:
    """How the runs trained, from their records: "2 runs at a time, 1 torch thread each"; where the
    records differ, each setting with its count of runs, and the count whose records predate the fields."""
    settings: dict[tuple[int, int], int] = {}
    for r in runs:
        if r.get("jobs") is not None and r.get("threads") is not None:
            settings[(r["jobs"], r["threads"])] = settings.get((r["jobs"], r["threads"]), 0) + 1
    texts = {
        key: f"{'one run' if key[0] == 1 else f'{key[0]} runs'} at a time, "
        f"{key[1]} torch thread{'s' if key[1] != 1 else ''} each"
        for key in settings
    }
    if len(settings) == 1 and sum(settings.values()) == len(runs):
        return next(iter(texts.values()))
    parts = [f"{count} run{'s' if count != 1 else ''}: {texts[key]}" for key, count in sorted(settings.items())]
    unknown = len(runs) - sum(settings.values())
    if unknown:
        parts.append(f"{unknown} run{'s' if unknown != 1 else ''}: not in the records")
    return "; ".join(parts)


def write_results_section(path: str | Path, results: dict, command: str) -> Path:
    """Put the ablation table into a markdown file between the ablate markers (appended the first time)."""
    path = Path(path)
    text = path.read_text() if path.is_file() else "# Results\n"
    m = results["machine"]
    runs = [r for per_seed in results["seconds"].values() for r in per_seed.values()]
    total = sum(r["train"] + r["eval"] for r in runs) / 60
    timed = [r for r in runs if r.get("train_cpu") is not None and r.get("eval_cpu") is not None]
    cpu = sum(r["train_cpu"] + r["eval_cpu"] for r in timed) / 60
    cpu_text = f"{cpu:.0f} CPU-minutes"
    if len(timed) < len(runs):
        cpu_text += f" in the {len(timed)} of {len(runs)} runs whose records hold them"
    section = "\n".join(
        [
            MARK_START,
            f"Command: `{command}`. {results['steps']} training steps per variant and seed "
            f"(seeds {', '.join(map(str, results.get('seeds', [0])))}); the benchmark on "
            f"{results['eval']['episodes']} held-out episodes per embodiment, horizons "
            f"{', '.join(map(str, results['eval']['horizons']))}. Machine: {m['cores']} cores ({m['cpu']}), "
            f"torch {m['torch']}. Training and evaluation took {total:.0f} minutes of wall time summed over "
            f"the runs and {cpu_text} ({how_trained(runs)}; the training minutes "
            "of each seed are in the table). Each figure is the mean "
            "over the embodiments, then over the seeds, ± half the seeds' range.",
            "",
            ablation_table(results),
            MARK_END,
        ]
    )
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        tail = rest.split(MARK_END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n## Ablations at toy scale (`astra ablate`)\n\n" + section + "\n"
    return write_text_atomically(path, text)
