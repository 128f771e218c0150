"""The `astra` command line."""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import re
import sys
from pathlib import Path

from astra_core import __version__
from astra_core.errors import AstraError, ConfigError


def _frame_size(text: str) -> tuple[int, int]:
    """`HxW` (e.g. 64x64) -> (H, W), for --size."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N or HxW, e.g. 64 or 104x80") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: height and width must be positive")
    return h, w


def _square_or_size(text: str) -> tuple[int, int]:
    """`N` (a square) or `HxW`, for --size."""
    if text.isdigit():
        return _frame_size(f"{text}x{text}")
    return _frame_size(text)


def _json_or_text(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _cmd_info(args: argparse.Namespace) -> int:
    from astra_core.checkpoint import RESERVED_METADATA, frame_size, load_checkpoint, read_checkpoint

    config, tensors, metadata = read_checkpoint(args.checkpoint)
    net = load_checkpoint(args.checkpoint)
    info = {
        "checkpoint": args.checkpoint,
        "format_version": metadata["format_version"],
        "written_by": metadata.get("astra_version", "before 0.2.0"),
        "plugins": _json_or_text(metadata.get("plugins", "{}")),
        "parameters": sum(p.numel() for p in net.parameters()),
        "backbone_parameters": net.dit.count_parameters(backbone_only=True),
        "config": config.model_dump(mode="json"),
        "tokenizer": json.loads(metadata["tokenizer"]) if "tokenizer" in metadata else None,
        "frame_size": frame_size(metadata, args.checkpoint),  # None: the checkpoint does not say
        "extra_metadata": {k: v for k, v in metadata.items() if k not in RESERVED_METADATA},
    }
    print(json.dumps(info, indent=2))
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    import torch

    from astra_core.config import DIT_PRESETS
    from astra_core.model.dit import AstraDiT

    for name, cfg in DIT_PRESETS.items():
        with torch.device("meta"):
            model = AstraDiT(cfg)
        print(
            f"{name:12s} dim={cfg.dim:<5d} layers={cfg.num_layers:<3d} heads={cfg.num_heads:<3d} "
            f"ffn={cfg.ffn_dim:<5d} backbone={model.count_parameters(backbone_only=True) / 1e6:9.2f} M"
        )
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    from astra_core.plugins import plugins

    manager = plugins()
    registry_error = None
    try:
        manager.registry()
    except AstraError as err:  # e.g. two plugins claiming one name: still list what loaded
        registry_error = str(err)
    rows = [
        {"name": i.name, "version": i.version, "source": i.source, "error": i.error, "registers": i.registers}
        for i in manager.info.values()
    ]
    if args.json:
        print(json.dumps({"plugins": rows, "error": registry_error}, indent=2))
    else:
        for row in rows:
            print(f"{row['name']} {row['version'] or '-'} ({row['source']})")
            if row["error"]:
                print(f"    FAILED TO LOAD: {row['error']}")
            for kind, names in row["registers"].items():
                print(f"    {kind}: {', '.join(names)}")
        if registry_error:
            print(f"error: {registry_error}")
    return 1 if registry_error else 0


def _cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from astra_core.data.tokenizer_train import TokenizerTrainConfig, train_tokenizer

    for flag in ("steps", "batch", "episodes", "held_out", "channels"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be 1 or more")
    if args.width < 8 or args.width % 8:
        raise ConfigError(f"--width {args.width}: must be a multiple of 8 (the VAE's group norms have 8 groups)")
    _set_threads(args)
    cfg = TokenizerTrainConfig(
        channels=args.channels,
        width=args.width,
        steps=args.steps,
        batch=args.batch,
        episodes_per_world=args.episodes,
        held_out_per_world=args.held_out,
        seed=args.seed,
    )
    result = train_tokenizer(cfg, Path(args.out), progress=not args.quiet)
    print(json.dumps({"checkpoint": args.out, **result}, indent=2))
    return 0


def _reader_at(reader, size: tuple[int, int]):
    """A copy of a registered reader that decodes at `size` (H, W), where the reader has a `size`
    attribute (the built-in ones do; docs/plugins.md); otherwise the reader as it is."""
    if not hasattr(reader, "size"):
        return reader
    reader = copy.copy(reader)  # the registry's instance stays as it was
    reader.size = size
    return reader


def _cmd_encode(args: argparse.Namespace) -> int:
    from astra_core.apps.encode import encode_to_shards
    from astra_core.data.tokenizer import PixelTokenizer
    from astra_core.data.tokenizer_train import load_tokenizer
    from astra_core.plugins import get_registry

    if args.tokenizer != "pixel" and args.patch is not None:
        raise ConfigError(f"--patch: sets the pixel tokenizer's patch; {args.tokenizer} is a trained tokenizer")
    patch = 4 if args.patch is None else args.patch
    if patch < 1:
        raise ConfigError(f"--patch {patch}: must be 1 or more")
    registry = get_registry()
    if args.world:
        if args.paths:
            raise ConfigError(f"PATHS ({args.paths[0]}, …): files are read with --reader; --world makes its episodes")
        n, frames, seed = (d if v is None else v for v, d in ((args.episodes, 16), (args.frames, 33), (args.seed, 0)))
        if n < 1 or frames < 2:
            raise ConfigError(f"--episodes {n} --frames {frames}: need at least 1 episode of 2 frames")
        world = registry.get("worlds", args.world)
        episodes = (world.episode(seed + i, frames) for i in range(n))
        total = n
    else:
        given = [flag for flag in ("episodes", "frames", "seed") if getattr(args, flag) is not None]
        if given:
            flags = "/".join(f"--{flag}" for flag in given)
            raise ConfigError(f"{flags}: for --world; with --reader the episodes are the files given as PATHS")
        if not args.paths:
            raise ConfigError(f"--reader {args.reader}: give the files to read as PATHS")
        reader = registry.get("readers", args.reader)
        if args.size is not None:  # decode at the size asked for, not at 64 × 64
            reader = _reader_at(reader, tuple(args.size))
        episodes = (reader.read(p) for p in args.paths)
        total = len(args.paths)
    tokenizer = PixelTokenizer(patch) if args.tokenizer == "pixel" else load_tokenizer(args.tokenizer)
    shards = encode_to_shards(
        episodes,
        tokenizer,
        args.out,
        args.shard_size,
        total,
        overwrite=args.overwrite,
        size=args.size,
        progress=not args.quiet,
    )
    print(json.dumps({"shards": [str(s) for s in shards], "tokenizer": tokenizer.describe()}, indent=2))
    return 0


def _env_arg(text: str) -> tuple[str, object]:
    """`KEY=VALUE` for --env-arg; VALUE is read as YAML (numbers, booleans, lists and mappings)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. frameskip=4")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not valid YAML") from None


def _cmd_record(args: argparse.Namespace) -> int:
    from astra_core.apps.record import RecordSettings, record

    settings = RecordSettings(
        env_id=args.env_id,
        episodes=args.episodes,
        steps=args.steps,
        size=args.size,
        fit=args.fit,
        seed=args.seed,
        policy=args.policy,
        stream=args.stream,
        env_kwargs=dict(args.env_arg or []),
    )
    summary = record(settings, args.out, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    print(f"next: astra encode --reader gym_record {args.out}/episode_*.h5 --out CACHE", file=sys.stderr)
    return 0


def _cmd_new_plugin(args: argparse.Namespace) -> int:
    from astra_core.apps.scaffold import new_plugin

    folder = new_plugin(args.name, args.out)
    print(f"wrote the plugin package {folder}/; next: cd {folder} and follow its README (pip install -e .)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from astra_core.apps.train import Trainer
    from astra_core.config import TrainConfig

    cfg = TrainConfig.from_yaml(args.config)
    given = {"steps": args.steps, "out_dir": args.out, "precision": args.precision}
    updates = {k: v for k, v in given.items() if v is not None}
    if updates:  # validated as the file is: --steps must still fit the config's data.phases
        flags = " ".join(f"--{'out' if k == 'out_dir' else k} {v}" for k, v in updates.items())
        cfg = TrainConfig.from_dict({**cfg.model_dump(mode="json"), **updates}, source=f"{args.config} with {flags}")
    from astra_core.apps.train_setup import shutdown_distributed

    try:
        trainer = Trainer(
            cfg, resume=args.resume, progress=not args.quiet, accept_config_changes=args.accept_config_changes
        )
        logs = trainer.train()
        rank, cpu = trainer.rank, trainer.cpu_elapsed()
        summary = {
            "step": trainer.step,
            "out_dir": cfg.out_dir,
            "loss": logs.get("loss"),
            "train_seconds": round(trainer.elapsed(), 1),
            "train_cpu_seconds": None if cpu is None else round(cpu, 1),
        }
    except BaseException:
        shutdown_distributed(wait=False)
        raise
    # The sharded model and its optimizer hold the process group: release them while the interpreter is
    # whole, so that the group's worker threads do not outlive it (shutdown_distributed's docstring).
    del trainer
    gc.collect()
    shutdown_distributed()
    if rank == 0:
        print(json.dumps(summary, indent=2))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from astra_core.apps.evaluate import EvalSettings, markdown_table, run_benchmark, write_report

    _set_threads(args)
    if args.plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise AstraError('--plots needs matplotlib: pip install "astra-world[plots]"') from None
    checkpoints = {"astra": args.checkpoint}
    if args.no_action:
        checkpoints["no_action"] = args.no_action
    seeds = {} if args.first_seed is None else {"first_seed": args.first_seed}
    if args.sheet is not None and args.sheet < 1:
        raise ConfigError(f"--sheet {args.sheet}: give the number of episodes per embodiment to draw (1 or more)")
    data_only = [
        flag
        for flag, given in (
            ("--min-frames", args.min_frames),
            ("--all-episodes", args.all_episodes),
            ("--no-replay", args.no_replay),
        )
        if given
    ]
    if data_only and not (args.cache or args.reader):
        raise ConfigError(
            f"{' and '.join(data_only)}: for your own episodes (--cache or --reader); the toy benchmark scores its "
            "own held-out episodes, whole and without replays"
        )
    toy_only = [
        flag for flag, value in (("--episodes", args.episodes), ("--first-seed", args.first_seed)) if value is not None
    ]
    if toy_only and (args.cache or args.reader):
        raise ConfigError(
            f"{' and '.join(toy_only)} choose the toy benchmark's episodes; with --cache or --reader every held-out "
            "episode of the data is scored"
        )
    settings = EvalSettings(
        episodes=20 if args.episodes is None else args.episodes,
        horizons=tuple(args.horizons),
        sheet_episodes=args.sheet or 0,
        min_frames=args.min_frames,
        **seeds,
    )
    samples: list | None = [] if args.sheet else None
    if args.paths and not args.reader:
        raise ConfigError(f"PATHS {args.paths[:3]} given without --reader NAME")
    if args.cache or args.reader:
        results = _eval_data(args, checkpoints, settings, samples)
        used = sorted({int(k.split("@")[1]) for r in results.values() for k in r if re.fullmatch(r"astra/psnr@\d+", k)})
        shown = tuple(used)  # the horizons the episodes were long enough for
    else:
        results = run_benchmark(
            checkpoints,
            settings,
            args.guidance,
            args.steps,
            progress=not args.quiet,
            precision=args.precision or "fp32",
            samples=samples,
            warp_residual=args.warp_residual,
            warp_anchor=args.warp_anchor,
        )
        shown = tuple(args.horizons)
    write_report(results, Path(args.out), shown)
    print(markdown_table(results, shown))
    print(f"written: {Path(args.out) / 'eval.json'}, {Path(args.out) / 'eval.md'}")
    if samples:
        from astra_core.apps.demo import write_sheet

        print(f"written: {write_sheet(Path(args.out) / 'contact_sheet.png', samples)}")
    if args.plots:
        from astra_core.apps.evaluate import write_plots

        for path in write_plots(results, Path(args.out), shown):
            print(f"written: {path}")
    return 0


def _eval_data(args: argparse.Namespace, checkpoints: dict, settings, samples: list | None = None) -> dict:
    """`astra eval --cache` / `--reader`: the checkpoint on recorded episodes (the held-out ones)."""
    from astra_core.apps.evaluate import episodes_from_cache, episodes_from_reader, evaluate_data
    from astra_core.plugins import get_registry
    from astra_core.world import WorldModel

    options = _rollout_options(args)
    models = {label: WorldModel.from_checkpoint(path, **options) for label, path in checkpoints.items()}
    first = next(iter(models.values()))
    if args.cache:
        episodes = episodes_from_cache(args.cache, first.tokenizer, held_out=not args.all_episodes)
    else:
        if not args.paths:
            raise ConfigError(f"--reader {args.reader}: give the files to read as PATHS")
        reader = get_registry().get("readers", args.reader)
        sizes = {label: m.frame_size for label, m in models.items() if m.frame_size is not None}
        if len(set(sizes.values())) > 1:
            named = ", ".join(f"{label} {h}×{w}" for label, (h, w) in sizes.items())
            raise ConfigError(f"--reader: the checkpoints were trained on frames of different sizes ({named})")
        if sizes:  # decode at the size the model was trained on, as encode did
            reader = _reader_at(reader, next(iter(sizes.values())))
        episodes = episodes_from_reader(reader, args.paths, held_out=not args.all_episodes)
    return evaluate_data(
        episodes, models, settings, progress=not args.quiet, replay=not args.no_replay, samples=samples
    )


def _rollout_options(args: argparse.Namespace) -> dict:
    opts = {
        "guidance_scale": args.guidance,
        "num_steps": args.steps,
        "warp_residual": getattr(args, "warp_residual", None),
        "warp_anchor": getattr(args, "warp_anchor", None),
        "precision": getattr(args, "precision", None),
    }
    if getattr(args, "compile", False):
        opts["compile"] = True
    if getattr(args, "no_cache", False):
        opts["use_kv_cache"] = False
    return {k: v for k, v in opts.items() if v is not None}


def _set_threads(args: argparse.Namespace) -> None:
    import torch

    threads = getattr(args, "threads", 0)
    if threads < 0:
        raise ConfigError(f"--threads {threads}: give a number of threads, or 0 for torch's default")
    if threads:
        torch.set_num_threads(threads)


def _cmd_demo(args: argparse.Namespace) -> int:
    from astra_core.apps.demo import run_demo

    _set_threads(args)
    result = run_demo(
        args.checkpoint,
        args.out,
        num_frames=args.frames,
        embodiments=args.embodiment,
        progress=not args.quiet,
        **_rollout_options(args),
    )
    worlds = sorted({r.world for r in result.rollouts})
    print(f"{len(result.rollouts)} rollouts of {args.frames} frames over {', '.join(worlds)}")
    for r in result.rollouts:
        print(f"  {r.world:14s} {r.preset:16s} " + "  ".join(str(f) for f in r.files))
    print(f"contact sheet: {result.contact_sheet}")
    print(
        f"generated {result.generated_frames} frames in {result.generation_seconds:.1f} s: "
        f"{result.frames_per_second:.1f} frames/s (all rollouts as one batch); videos written in "
        f"{result.write_seconds:.1f} s; {result.total_seconds:.1f} s in all"
    )
    return 0


def _cmd_rollout(args: argparse.Namespace) -> int:
    from astra_core.apps.demo import run_rollout

    _set_threads(args)
    result = run_rollout(
        args.checkpoint,
        args.embodiment,
        out_dir=args.out,
        actions=args.actions,
        preset=args.preset,
        context=args.context,
        num_frames=args.frames,
        seed=args.seed,
        progress=not args.quiet,
        **_rollout_options(args),
    )
    for path in result["files"]:
        print(f"written: {path}")
    print(
        f"{result['frames']} frames generated in {result['seconds']:.1f} s "
        f"({result['frames'] / max(result['seconds'], 1e-9):.1f} frames/s)"
    )
    return 0


def _cmd_play(args: argparse.Namespace) -> int:
    from astra_core.apps.play import PlayServer, PlaySession, default_world, play_terminal
    from astra_core.plugins import get_registry
    from astra_core.world import WorldModel

    _check_play_flags(args)
    _set_threads(args)
    model = WorldModel.from_checkpoint(args.checkpoint, **_rollout_options(args))
    if args.env:
        from astra_core.apps.play_env import EnvWorld

        size = args.size or model.frame_size or (64, 64)  # by default the size the model was trained on
        world = EnvWorld(args.env, size, args.fit or "letterbox", dict(args.env_arg or []), args.stream or "auto")
    elif args.embodiment:
        world = get_registry().get("worlds", args.embodiment)
    else:  # the keyboard game where the model drives it (the shipped model), else the first playable one
        world = default_world(model)
    session = PlaySession(model, world, seed=args.seed)
    if model.compiled:
        print("astra play: compiling the DiT over a full history window (minutes the first time) ...", flush=True)
        session.warm_up()
    if args.web:
        host = args.host or "127.0.0.1"
        port = 8000 if args.port is None else args.port
        server = PlayServer(session, host, port, timeout=10.0 if args.timeout is None else args.timeout)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(
                f"astra play: warning: listening on {host}, beyond this machine: anyone who can reach "
                "the port can watch and drive the session",
                file=sys.stderr,
                flush=True,
            )
        print(f"astra play: {server.url} (Ctrl-C stops)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        return 0
    play_terminal(session, Path(args.out) if args.out else None, preview=not args.no_preview, script=args.keys)
    return 0


def _check_play_flags(args: argparse.Namespace) -> None:
    """`astra play`'s flags belong to one mode each; one given to the other mode is refused, not ignored."""
    misplaced = [
        (args.env is None, ["size", "fit", "stream", "env_arg"], "--env (a Gymnasium environment beside the model)"),
        (args.env is not None, ["embodiment"], "a toy world; --env plays beside the environment instead"),
        (args.web, ["out", "keys", "no_preview"], "the terminal mode, not --web"),
        (not args.web, ["host", "port", "timeout"], "--web"),
    ]
    for wrong_mode, flags, mode in misplaced:
        given = [f"--{f.replace('_', '-')}" for f in flags if getattr(args, f) not in (None, False)]
        if wrong_mode and given:
            raise ConfigError(f"{'/'.join(given)}: for {mode}")


ABLATE_CONFIG = "examples/configs/ablate.yaml"


def _cmd_ablate(args: argparse.Namespace) -> int:
    from astra_core.apps.ablate import run_ablation, write_results_section

    _set_threads(args)
    if args.config is None and not Path(ABLATE_CONFIG).is_file():
        raise ConfigError(
            f"no config given, and the default {ABLATE_CONFIG} is not here: run from the root of a checkout of "
            "the repository, or give a base training config"
        )
    results = run_ablation(
        args.config or ABLATE_CONFIG,
        args.out,
        variants=args.variants,
        steps=args.steps,
        eval_episodes=args.eval_episodes,
        horizons=tuple(args.horizons),
        progress=not args.quiet,
        jobs=args.jobs,
        seeds=tuple(args.seeds),
    )
    from astra_core.apps.ablate import ablation_table

    print(ablation_table(results))
    written = [Path(args.out) / "ablation.json", Path(args.out) / "ablation.md", Path(args.out) / "router.png"]
    print("written: " + ", ".join(str(p) for p in written if p.is_file()))
    if args.results:
        command = "astra ablate " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "astra ablate"
        print(f"written: {write_results_section(args.results, results, command)}")
    return 0


WARP_RESIDUAL_HELP = (
    "a warp model's residual weight when sampling, in [0, 1] (default: the checkpoint's sampler.warp_residual)"
)
WARP_ANCHOR_HELP = (
    "a warp model reads each frame once from the last known (or restart) frame through the composed flows, "
    "or re-warps the last frame (--no-warp-anchor; default: the checkpoint's sampler.warp_anchor)"
)


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guidance", type=float, help="action-free guidance scale (default: the checkpoint's)")
    p.add_argument("--steps", type=int, help="sampling steps per chunk (default: the checkpoint's)")
    p.add_argument("--warp-residual", type=float, help=WARP_RESIDUAL_HELP)
    p.add_argument("--warp-anchor", action=argparse.BooleanOptionalAction, help=WARP_ANCHOR_HELP)
    p.add_argument("--precision", choices=["fp32", "bf16"], help="the DiT's precision (default: fp32, the reference)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the DiT: minutes of compiling first (less on later runs), faster steps after",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="recompute the history's keys and values every chunk instead of keeping them (slower; for checks)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")


def build_parser() -> argparse.ArgumentParser:
    from astra_core.apps.ablate import VARIANTS

    parser = argparse.ArgumentParser(prog="astra", description="Astra world: interactive world models.")
    parser.add_argument("--version", action="version", version=f"astra-world {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print a checkpoint's config and parameter counts")
    info.add_argument("checkpoint")
    info.set_defaults(func=_cmd_info)
    plug = sub.add_parser("plugins", help="list plugins, their versions and what they register")
    plug.add_argument("--json", action="store_true", help="machine-readable output")
    plug.set_defaults(func=_cmd_plugins)
    train = sub.add_parser("train", help="train a world model from a YAML config")
    train.add_argument("config")
    train.add_argument("--resume", action="store_true", help="continue from OUT_DIR/state.pt")
    train.add_argument(
        "--accept-config-changes",
        action="store_true",
        help="with --resume: continue although the config differs in more than steps and intervals",
    )
    train.add_argument("--steps", type=int, help="override the config's steps")
    train.add_argument("--out", help="override the config's out_dir")
    train.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help="override the config's precision (bf16 pays only with native bf16)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_cmd_train)
    ev = sub.add_parser(
        "eval", help="the toy benchmark against exact ground truth, or a checkpoint on your data (--cache, --reader)"
    )
    ev.add_argument("--checkpoint", help="a world-model checkpoint (default: the shipped toy model)")
    data = ev.add_mutually_exclusive_group()
    data.add_argument("--cache", nargs="+", help="encoded shards (globs): score the held-out episodes of this cache")
    data.add_argument("--reader", help="a registered reader: score the held-out episodes of the files PATHS")
    ev.add_argument("paths", nargs="*", help="input files for --reader")
    ev.add_argument(
        "--all-episodes",
        action="store_true",
        help="with --cache or --reader: score every episode, not only those the held-out rule picks",
    )
    ev.add_argument(
        "--min-frames",
        type=int,
        default=0,
        help="with --cache or --reader: leave out episodes shorter than this (the rest of an embodiment are "
        "cut to its shortest episode)",
    )
    ev.add_argument(
        "--no-replay",
        action="store_true",
        help="episodes from astra record: skip replaying them in their environment with swapped actions",
    )
    ev.add_argument("--no-action", help="checkpoint of the same architecture trained without actions (baseline)")
    ev.add_argument("--episodes", type=int, help="the toy benchmark's held-out episodes per world (default: 20)")
    ev.add_argument(
        "--horizons",
        type=int,
        nargs="+",
        default=[16, 48, 96],
        help="rollout lengths in frames to score (default 16 48 96; with --cache or --reader, those past the "
        "episodes' length are left out, or the length itself scored when all are)",
    )
    ev.add_argument("--guidance", type=float, help="action-free guidance scale (default: the config's)")
    ev.add_argument("--steps", type=int, help="sampling steps (default: the config's)")
    ev.add_argument("--warp-residual", type=float, help=WARP_RESIDUAL_HELP)
    ev.add_argument("--warp-anchor", action=argparse.BooleanOptionalAction, help=WARP_ANCHOR_HELP)
    ev.add_argument("--precision", choices=["fp32", "bf16"], help="the DiT's precision (default: fp32)")
    ev.add_argument(
        "--first-seed",
        type=int,
        help="seed of the first episode (default: the benchmark's held-out episodes; tune on other seeds)",
    )
    ev.add_argument("--out", default="eval", help="folder for eval.json and eval.md (default: eval)")
    ev.add_argument("--plots", action="store_true", help="also write PNG figures (needs the plots extra)")
    ev.add_argument(
        "--sheet",
        type=int,
        metavar="N",
        help="also write contact_sheet.png: the first N evaluated episodes of each embodiment, the truth above "
        "the (first) checkpoint's rollout and its rollout with another episode's actions",
    )
    ev.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(func=_cmd_eval)
    tok = sub.add_parser("train-tokenizer", help="train the causal video VAE on toy-world frames")
    tok.add_argument("--out", default="tokenizer.safetensors", help="the tokenizer checkpoint to write")
    tok.add_argument("--channels", type=int, default=16)
    tok.add_argument("--width", type=int, default=32)
    tok.add_argument("--steps", type=int, default=3000)
    tok.add_argument("--batch", type=int, default=4)
    tok.add_argument("--episodes", type=int, default=48, help="episodes per world")
    tok.add_argument("--held-out", type=int, default=4, help="held-out episodes per world for the PSNR")
    tok.add_argument("--seed", type=int, default=0)
    tok.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    tok.add_argument("--quiet", action="store_true", help="no progress bar")
    tok.set_defaults(func=_cmd_train_tokenizer)
    enc = sub.add_parser("encode", help="encode episodes from a world or a reader into HDF5 latent shards")
    source = enc.add_mutually_exclusive_group(required=True)
    source.add_argument("--world", help="a registered toy world")
    source.add_argument("--reader", help="a registered dataset reader (give the files as PATHS)")
    enc.add_argument("paths", nargs="*", help="input files for --reader")
    enc.add_argument("--out", required=True, help="output folder for shard-*.h5")
    enc.add_argument("--tokenizer", default="pixel", help="'pixel' or a tokenizer checkpoint")
    enc.add_argument("--patch", type=int, help="patch of the pixel tokenizer (default 4)")
    enc.add_argument("--episodes", type=int, help="--world: episodes to make (default 16)")
    enc.add_argument("--frames", type=int, help="--world: frames per episode (default 33)")
    enc.add_argument("--seed", type=int, help="--world: the first episode's seed (default 0)")
    enc.add_argument("--shard-size", type=int, default=16)
    enc.add_argument(
        "--overwrite", action="store_true", help="replace the shards already in --out (all of them, at the end)"
    )
    enc.add_argument(
        "--size",
        type=_square_or_size,
        help="N or HxW: scale and centre-crop every episode's frames to this size; a reader with a `size` (the "
        "built-in ones) decodes at it (default: the reader's 64x64; all must match the first)",
    )
    enc.add_argument("--quiet", action="store_true", help="no progress bar")
    enc.set_defaults(func=_cmd_encode)
    rec = sub.add_parser("record", help="record episodes of a Gymnasium environment (extra: gym) for training")
    rec.add_argument("env_id", help="a Gymnasium id, e.g. ALE/Breakout-v5, highway-v0, astra/BulletArm-v0")
    rec.add_argument("--out", required=True, help="output folder (episode_000000.h5, …; rerun to resume)")
    rec.add_argument("--episodes", type=int, default=16)
    rec.add_argument("--steps", type=int, default=100, help="steps per episode (fewer when it ends)")
    rec.add_argument("--size", type=_square_or_size, default=(64, 64), help="frame size: N or HxW (default 64)")
    rec.add_argument(
        "--fit",
        choices=["letterbox", "crop"],
        default="letterbox",
        help="letterbox: fit inside and pad with black (nothing is lost; default); crop: cover and centre-crop",
    )
    rec.add_argument("--seed", type=int, default=0, help="episode i is seeded with SEED + i")
    rec.add_argument(
        "--policy", default="random", help="random, sticky (random actions held 1-8 steps), module:fn or file.py:fn"
    )
    rec.add_argument(
        "--stream",
        choices=["auto", "pose", "space"],
        default="auto",
        help="what the action stream records: a pose (highway-env, the pybullet arm), the action space, or auto",
    )
    rec.add_argument(
        "--env-arg", action="append", type=_env_arg, metavar="KEY=VALUE", help="keyword for gymnasium.make (repeat)"
    )
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(func=_cmd_record)
    scaffold = sub.add_parser("new-plugin", help="write a pip-installable plugin package for a new embodiment")
    scaffold.add_argument("name", help="the embodiment's name: lowercase letters, digits, underscores")
    scaffold.add_argument("--out", help="the folder to write (default: ./astra-NAME)")
    scaffold.set_defaults(func=_cmd_new_plugin)
    demo = sub.add_parser("demo", help="roll out every preset of every embodiment with the shipped model")
    demo.add_argument("--checkpoint", help="a world-model checkpoint (default: the shipped toy model)")
    demo.add_argument("--out", default="astra-demo", help="output folder")
    demo.add_argument("--frames", type=int, default=96, help="frames to predict per rollout")
    demo.add_argument("--embodiment", nargs="+", help="only these toy worlds (default: every one the model drives)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_sampling_args(demo)
    demo.set_defaults(func=_cmd_demo)
    ro = sub.add_parser("rollout", help="roll out one action script and write the video and the action trace")
    ro.add_argument("--checkpoint", help="a world-model checkpoint (default: the shipped toy model)")
    ro.add_argument("--embodiment", required=True, help="a registered embodiment, e.g. car")
    script = ro.add_mutually_exclusive_group(required=True)
    script.add_argument("--actions", help="raw action stream: .json, .yaml or .npz (row 0: the context frame)")
    script.add_argument("--preset", help="one of the toy world's preset scripts instead of a file")
    ro.add_argument(
        "--context",
        help="context image or video, scaled and cropped to the model's frame size (default: the toy world's "
        "start frame)",
    )
    ro.add_argument("--frames", type=int, help="frames to predict (default: as many as the actions cover)")
    ro.add_argument("--seed", type=int, default=0, help="toy-world scene seed when no --context is given")
    ro.add_argument("--out", default="astra-rollout", help="output folder")
    ro.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_sampling_args(ro)
    ro.set_defaults(func=_cmd_rollout)
    play = sub.add_parser("play", help="drive the model with keys: in the terminal, or a local page with --web")
    play.add_argument("--checkpoint", help="a world-model checkpoint (default: the shipped toy model)")
    play.add_argument(
        "--embodiment", help="a toy world (default: keyboard_game if the model drives it, else the first it drives)"
    )
    play.add_argument("--seed", type=int, default=0, help="the scene")
    play.add_argument(
        "--env",
        metavar="ENV_ID",
        help="play beside a real Gymnasium environment (extra gym): the model left, the environment right",
    )
    play.add_argument(
        "--size",
        type=_square_or_size,
        help="--env: frame size, N or HxW (default: the size the model was trained on, else 64)",
    )
    play.add_argument("--fit", choices=["letterbox", "crop"], help="--env: as astra record's (default: letterbox)")
    play.add_argument(
        "--stream", choices=["auto", "pose", "space"], help="--env: as the episodes were recorded (default: auto)"
    )
    play.add_argument(
        "--env-arg",
        action="append",
        type=_env_arg,
        metavar="KEY=VALUE",
        help="--env: keyword for gymnasium.make, as the episodes were recorded (repeat)",
    )
    play.add_argument("--web", action="store_true", help="serve a page instead of the terminal mode")
    play.add_argument("--host", help="address for --web (default: 127.0.0.1, this machine only)")
    play.add_argument("--port", type=int, help="port for --web (default 8000; 0: any free port)")
    play.add_argument("--timeout", type=float, help="--web: seconds a request may take to arrive (default 10)")
    play.add_argument("--out", help="terminal mode: write the run to this mp4 at the end")
    play.add_argument("--keys", help='terminal mode: a script of steps instead of live keys, e.g. "w w+left d ."')
    play.add_argument("--no-preview", action="store_true", help="terminal mode: no ANSI frame preview")
    _add_sampling_args(play)
    play.set_defaults(func=_cmd_play)
    ab = sub.add_parser("ablate", help="the paper's ablations at toy scale: train and evaluate each variant")
    ab.add_argument(
        "config",
        nargs="?",
        help=f"base training config (default: {ABLATE_CONFIG}, in a checkout of the repository, run from its root)",
    )
    ab.add_argument(
        "--out",
        default="runs/ablate",
        help="VARIANT/seed-S folders inside (finished runs are reused, stopped ones resume)",
    )
    ab.add_argument("--variants", nargs="+", help="default: all of " + " ".join(VARIANTS))
    ab.add_argument("--steps", type=int, help="training steps per variant (default: the config's)")
    ab.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1],
        help="training seeds per variant (default: 0 1; the table gives their mean and spread)",
    )
    ab.add_argument("--eval-episodes", type=int, default=10, help="held-out episodes per embodiment")
    ab.add_argument("--horizons", type=int, nargs="+", default=[16, 48])
    ab.add_argument("--results", help="also write the table into this markdown file (e.g. docs/results.md)")
    ab.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ab.add_argument("--jobs", type=int, default=1, help="runs trained at once in worker processes, sharing the threads")
    ab.add_argument("--quiet", action="store_true", help="no progress bars")
    ab.set_defaults(func=_cmd_ablate)
    presets = sub.add_parser("presets", help="list the DiT presets and their sizes")
    presets.set_defaults(func=_cmd_presets)
    return parser


# where each command writes: (flag, the argparse attribute, a folder or a file), checked before the work
OUTPUTS = {
    "train": [("--out", "out", "folder")],
    "train-tokenizer": [("--out", "out", "file")],
    "encode": [("--out", "out", "folder")],
    "record": [("--out", "out", "folder")],
    "eval": [("--out", "out", "folder")],
    "demo": [("--out", "out", "folder")],
    "rollout": [("--out", "out", "folder")],
    "play": [("--out", "out", "file")],
    "ablate": [("--out", "out", "folder"), ("--results", "results", "file")],
    "new-plugin": [("--out", "out", "folder")],
}


def _check_output(flag: str, value: str, kind: str) -> None:
    """A folder or file a command will write can be written there: no file where a folder goes (or the
    reverse), and the nearest existing folder (the folder itself, or the one it will be made in) is a
    writable folder."""
    path = Path(value)
    if kind == "folder" and path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {value}: a file of that name is there; give a folder")
    if kind == "file" and path.is_dir():
        raise ConfigError(f"{flag} {value}: a folder of that name is there; give a file name")
    start = path.absolute() if kind == "folder" else path.absolute().parent  # a folder is written into
    above = next(p for p in (start, *start.parents) if p.exists())
    if not above.is_dir():
        raise ConfigError(f"{flag} {value}: {above} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {value}: {above} is not writable")


def _check_common(args: argparse.Namespace) -> None:
    """Flags several commands share, checked before any command starts its work."""
    for flag, attr, kind in OUTPUTS.get(args.command, []):
        value = getattr(args, attr, None)
        if value:
            _check_output(flag, value, kind)
    seed = getattr(args, "seed", None)
    if seed is not None and seed < 0:
        raise ConfigError(f"--seed {seed}: must be 0 or more")
    port = getattr(args, "port", None)
    if port is not None and not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: give a port from 1 to 65535, or 0 for any free one")
    timeout = getattr(args, "timeout", None)
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"--timeout {timeout}: give the seconds a request may take, more than 0")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_common(args)
        return args.func(args)
    except AstraError as err:
        print(f"astra {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
