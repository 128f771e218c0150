"""`astra ablate`: the paper's ablations at toy scale, with equal steps for every variant.

Each variant is the base config with a few fields changed. It is trained into OUT/VARIANT (a run that
already finished is reused, one that was stopped resumes from its state), then evaluated on the toy
benchmark. The table gives, per variant, the mean over embodiments of the benchmark's figures; the
JSON beside it holds every embodiment's.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import threading
import time
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
        # Beyond the paper: the action also modulates AdaLN (see DiTConfig.action_modulation).
        Variant(
            "action_modulation",
            "full, plus the action feature added to each frame's AdaLN time embedding",
            {"model.dit.action_modulation": True},
        ),
    )
}

SUMMARY = (
    ("psnr@16", "PSNR@16"),
    ("psnr_changed@16", "changed@16"),
    ("psnr@48", "PSNR@48"),
    ("psnr_changed@48", "changed@48"),
    ("action_following", "action following"),
    ("responsiveness_psnr", "responsiveness PSNR"),
)


def variant_config(base: TrainConfig, variant: Variant, out_dir: Path, steps: int | None) -> TrainConfig:
    """The base config with the variant's changes, its own output folder, and the shared step count."""
    data = base.model_dump(mode="json")
    for path, value in variant.changes.items():
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
    return TrainConfig.model_validate(data)


def stop_when_orphaned(parent: int, interval: float = 1.0) -> threading.Thread:
    """Watch, from a worker process, for the death of `parent`; then send this process SIGTERM, on
    which a running trainer saves its state and stops (a resumable run, not a stray process)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="astra-orphan-watch", daemon=True)
    thread.start()
    return thread


def _variant_worker(
    cfg_json: str, name: str, settings: dict, threads: int, progress: bool, parent: int | None = None
) -> dict:
    """Train one variant (or reuse / resume its run) and evaluate it (or reuse its evaluation).

    Runs in the calling process or, with `parent` set, in a worker process of `--jobs`; returns
    {"bench": {...}, "train": seconds, "eval": seconds}.
    """
    import torch

    from astra_core.apps.evaluate import EvalSettings, run_benchmark
    from astra_core.apps.train import Trainer

    if parent is not None:
        stop_when_orphaned(parent)
    if threads > 0:
        torch.set_num_threads(threads)
    cfg = TrainConfig.model_validate_json(cfg_json)
    folder = Path(cfg.out_dir)
    done = folder / "done.json"
    if not done.is_file():
        trainer = Trainer(cfg, resume=(folder / "state.pt").is_file(), progress=progress)
        trainer.train()
        if trainer.step < cfg.steps:
            raise ConfigError(f"ablation {name}: training stopped at step {trainer.step}; run again to resume")
        write_text_atomically(done, json.dumps({"steps": trainer.step, "train_seconds": trainer.elapsed()}))
    train_seconds = json.loads(done.read_text())["train_seconds"]
    model = folder / "model.safetensors"
    stat = model.stat()
    key = {"settings": settings, "model_size": stat.st_size, "model_mtime_ns": stat.st_mtime_ns}
    cached = folder / "ablate_eval.json"
    if cached.is_file():
        previous = json.loads(cached.read_text())
        if previous.get("key") == key:  # same weights, same benchmark: reuse
            return {"bench": previous["bench"], "train": train_seconds, "eval": previous["eval_seconds"]}
    start = time.time()
    eval_settings = EvalSettings(episodes=settings["episodes"], horizons=tuple(settings["horizons"]))
    bench = run_benchmark({name: str(model)}, eval_settings, progress=progress)
    eval_seconds = time.time() - start
    write_text_atomically(cached, json.dumps({"key": key, "bench": bench, "eval_seconds": eval_seconds}))
    return {"bench": bench, "train": train_seconds, "eval": eval_seconds}


def run_ablation(
    config: str | Path,
    out: str | Path = "runs/ablate",
    variants: list[str] | None = None,
    steps: int | None = None,
    eval_episodes: int = 10,
    horizons: tuple[int, ...] = (16, 48),
    progress: bool = True,
    jobs: int = 1,
) -> dict:
    """Train and evaluate every variant; returns {"variants": {name: summary}, "seconds": {...}, ...}.

    `jobs` > 1 runs that many variants at once in worker processes, the machine's cores shared among
    them (one torch thread each on a 2-core machine with `jobs=2`). Finished trainings and their
    evaluations are reused, so a run split over several commands costs no more than one.
    """
    import torch

    names = variants or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ConfigError(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    if max(horizons) < 16:
        raise ConfigError("--horizons: the table needs a horizon of at least 16 frames")
    if jobs < 1:
        raise ConfigError(f"--jobs: expected at least 1, got {jobs}")
    base = TrainConfig.from_yaml(config)
    out = Path(out)
    settings = {"episodes": eval_episodes, "horizons": list(horizons)}
    configs = {name: variant_config(base, VARIANTS[name], out / name, steps) for name in names}
    started = time.time()
    outcomes: dict[str, dict] = {}
    threads = torch.get_num_threads()
    if jobs == 1 or len(names) == 1:
        jobs = 1
        for name in names:
            outcomes[name] = _variant_worker(configs[name].model_dump_json(), name, settings, 0, progress)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        workers = min(jobs, len(names))
        threads = max(1, torch.get_num_threads() // workers)
        context = multiprocessing.get_context("spawn")  # no forked torch thread pools
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {
                pool.submit(_variant_worker, configs[n].model_dump_json(), n, settings, threads, False, os.getpid()): n
                for n in names
            }
            try:
                for future in as_completed(futures):
                    name = futures[future]
                    outcomes[name] = future.result()
                    if progress:
                        took = (outcomes[name]["train"] + outcomes[name]["eval"]) / 60
                        print(f"ablation: {name} finished ({took:.1f} min of training and evaluation)", flush=True)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # variants not started yet are dropped
                raise
    results: dict[str, Any] = {"config": str(config), "variants": {}, "per_embodiment": {}, "seconds": {}}
    for name in names:  # the table keeps the order of `names`, whatever order the workers finished in
        bench = outcomes[name]["bench"]
        results["per_embodiment"][name] = {
            world: {k: v for k, v in r.items() if not isinstance(v, list)} for world, r in bench.items()
        }
        results["variants"][name] = summarize(bench, name)
        results["seconds"][name] = {"train": outcomes[name]["train"], "eval": outcomes[name]["eval"]}
    # The same held-out episodes for every variant, so one copy-last-frame row serves as the reference.
    results["baseline"] = summarize(outcomes[names[0]]["bench"], "copy_last")
    results["steps"] = steps or base.steps
    results["eval"] = {"episodes": eval_episodes, "horizons": list(horizons)}
    results["jobs"] = jobs
    results["threads_per_job"] = threads
    results["wall_seconds"] = time.time() - started
    results["machine"] = machine()
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out / "ablation.json", json.dumps(results, indent=2))
    write_text_atomically(out / "ablation.md", ablation_table(results) + "\n")
    return results


def summarize(bench: dict, label: str) -> dict[str, float]:
    """Mean over embodiments of each summary figure."""
    out = {}
    for key, _ in SUMMARY:
        values = [r[f"{label}/{key}"] for r in bench.values() if f"{label}/{key}" in r]
        if values:
            out[key] = sum(values) / len(values)
    return out


def ablation_table(results: dict) -> str:
    lines = [
        "| variant | " + " | ".join(title for _, title in SUMMARY) + " | train min | what changes |",
        "|" + "---|" * (len(SUMMARY) + 3),
    ]

    def cells(summary: dict) -> str:
        return " | ".join(
            "–"
            if summary.get(key) is None
            else (f"{summary[key]:.3f}" if key == "action_following" else f"{summary[key]:.2f}")
            for key, _ in SUMMARY
        )

    for name, summary in results["variants"].items():
        minutes = results["seconds"][name]["train"] / 60
        lines.append(f"| {name} | {cells(summary)} | {minutes:.1f} | {VARIANTS[name].description} |")
    if results.get("baseline"):
        lines.append(
            f"| copy last frame | {cells(results['baseline'])} | – | baseline: the last context frame repeated |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def write_results_section(path: str | Path, results: dict, command: str) -> Path:
    """Put the ablation table into a markdown file between the ablate markers (appended the first time)."""
    path = Path(path)
    text = path.read_text() if path.is_file() else "# Results\n"
    m = results["machine"]
    total = sum(s["train"] + s["eval"] for s in results["seconds"].values()) / 60
    section = "\n".join(
        [
            MARK_START,
            f"Command: `{command}`. {results['steps']} training steps per variant; the benchmark on "
            f"{results['eval']['episodes']} held-out episodes per embodiment, horizons "
            f"{', '.join(map(str, results['eval']['horizons']))}. Machine: {m['cores']} cores ({m['cpu']}), "
            f"torch {m['torch']}. Training and evaluation took {total:.0f} minutes summed over the variants "
            f"({results.get('jobs', 1)} at a time, {results.get('threads_per_job', m['torch_threads'])} torch "
            "thread(s) each; the per-variant training minutes are in the table). "
            "Each figure is the mean over the embodiments.",
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
