"""The `astra` command line."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .errors import AstraError


def _cmd_info(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint, read_checkpoint

    config, tensors, metadata = read_checkpoint(args.checkpoint)
    net = load_checkpoint(args.checkpoint)
    info = {
        "checkpoint": args.checkpoint,
        "format_version": metadata["format_version"],
        "parameters": sum(p.numel() for p in net.parameters()),
        "backbone_parameters": net.dit.count_parameters(backbone_only=True),
        "config": config.model_dump(mode="json"),
        "extra_metadata": {k: v for k, v in metadata.items() if k not in ("format", "format_version", "config")},
    }
    print(json.dumps(info, indent=2))
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    import torch

    from .config import DIT_PRESETS
    from .model.dit import AstraDiT

    for name, cfg in DIT_PRESETS.items():
        with torch.device("meta"):
            model = AstraDiT(cfg)
        print(
            f"{name:12s} dim={cfg.dim:<5d} layers={cfg.num_layers:<3d} heads={cfg.num_heads:<3d} "
            f"ffn={cfg.ffn_dim:<5d} backbone={model.count_parameters(backbone_only=True) / 1e6:9.2f} M"
        )
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import plugins

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="astra", description="Astra world: interactive world models.")
    parser.add_argument("--version", action="version", version=f"astra-world {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print a checkpoint's config and parameter counts")
    info.add_argument("checkpoint")
    info.set_defaults(func=_cmd_info)
    plug = sub.add_parser("plugins", help="list plugins, their versions and what they register")
    plug.add_argument("--json", action="store_true", help="machine-readable output")
    plug.set_defaults(func=_cmd_plugins)
    presets = sub.add_parser("presets", help="list the DiT presets and their sizes")
    presets.set_defaults(func=_cmd_presets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AstraError as err:
        print(f"astra {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
