"""Checkpoints: safetensors weights with the format version and the resolved config in the metadata.

Writes are atomic: the file is written beside its destination under a temporary name and renamed
into place, so a crash never leaves a half-written checkpoint under the real name.
"""

from __future__ import annotations

import json
import numbers
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from astra_core.config import AstraConfig
from astra_core.errors import CheckpointError, ConfigError
from astra_core.model.actions import AstraNet

FORMAT = "astra-world"
# 2: configs may hold history.last_frame_channels and the delta / warp predictions, which version 1
# readers do not know; every checkpoint also names the package version that wrote it.
# 3: flow.warp_flow and flow.motion_weight in the config.
# 4: flow.action_flow_rank.
# 5: flow.loss_balance, flow.balance_floor and flow.action_flow_cumulative.
# 6: flow.splat_rank and flow.splat_depth.
FORMAT_VERSION = 6


def temporary_beside(path: Path, suffix: str = "") -> str:
    """A new empty file next to `path`: on the same file system, so `publish` can rename it atomically.
    `suffix` ends its name, for writers that pick the format from the file name."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    return tmp


def publish(tmp: str, path: Path) -> None:
    """Give the finished temporary file a plain new file's permissions, flush it to disk and rename it
    into place (then flush the folder), so a crash leaves the old file or the new one, never a mix."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        folder = os.open(Path(path).parent, os.O_RDONLY)
    except OSError:  # a platform without directory handles
        return
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Delete the temporary files (`.NAME.*.tmp*`) that a writer killed mid-write left in `folder`."""
    leftovers = [p for p in Path(folder).glob(".*.tmp*") if p.is_file()]
    for p in leftovers:
        p.unlink(missing_ok=True)
    return leftovers


@contextmanager
def written_atomically(path: str | Path, suffix: str = "") -> Iterator[str]:
    """`with written_atomically(path) as tmp:` write to `tmp`; on success it replaces `path` in one
    rename, on an error it is removed, so `path` is never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(path, suffix)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | Path, text: str) -> Path:
    with written_atomically(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def atomic_save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """safetensors `save_file`, through a temporary file in the same folder and an atomic rename."""
    with written_atomically(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
    return Path(path)


TOKENIZER_PREFIX = "tokenizer."


# header keys save_checkpoint writes itself; `extra_metadata` may not set them
RESERVED_METADATA = ("format", "format_version", "astra_version", "config", "plugins", "tokenizer", "frame_size")


def save_checkpoint(
    path: str | Path,
    net: AstraNet,
    extra_metadata: dict[str, str] | None = None,
    tokenizer=None,
    frame_size: tuple[int, int] | None = None,
) -> Path:
    """Save `net` with its config (and optionally its video tokenizer, whose weights get the prefix
    `tokenizer.`); `frame_size` (height, width), the frames the model was trained on, which
    `WorldModel` then requires (a loaded `WorldModel` has it as `.frame_size`); `extra_metadata`
    (string keys and values, none of `RESERVED_METADATA`) joins the header."""
    from astra_core import __version__

    extra = dict(extra_metadata or {})
    for key, value in extra.items():
        if key in RESERVED_METADATA:
            raise CheckpointError(f"extra_metadata[{key!r}]: a key the checkpoint writes itself; choose another name")
        if not isinstance(key, str) or not isinstance(value, str):
            raise CheckpointError(
                f"extra_metadata[{key!r}] = {value!r}: the header holds strings only (json.dumps other values)"
            )
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "astra_version": __version__,
        "config": net.config.model_dump_json(),
        "plugins": json.dumps(plugin_provenance(net.config), sort_keys=True),
        **extra,
    }
    if frame_size is not None:
        size = tuple(frame_size) if isinstance(frame_size, Iterable) else None  # a tuple, list or array
        if not _is_frame_size(size):
            raise CheckpointError(f"frame_size={frame_size!r}: expected (height, width), two positive integers")
        metadata["frame_size"] = json.dumps([int(v) for v in size])
    tensors = {k: v.detach().cpu() for k, v in net.state_dict().items()}  # a run on a GPU writes CPU tensors
    if tokenizer is not None:
        metadata["tokenizer"] = json.dumps(tokenizer.describe())
        tensors.update({TOKENIZER_PREFIX + k: v for k, v in tokenizer.state_dict().items()})
    return atomic_save_tensors(path, tensors, metadata)


def plugin_provenance(config: AstraConfig) -> dict[str, dict[str, str]]:
    """Which plugin (entry-point name, package, version) provides each modality and the router a model
    uses, keyed "modality:NAME" and "router:NAME": stored in checkpoints so that loading one without
    the plugin can say which package to install."""
    from astra_core.plugins import get_registry, plugins

    registry = get_registry()
    needs = [("modalities", f"modality:{m}", m) for m in config.action.modalities]
    if config.action.encoder == "moae":
        for name in [config.action.router, *_nested_router_names(config.action.router_options, registry.routers)]:
            needs.append(("routers", f"router:{name}", name))
    out = {}
    for kind, key, name in needs:
        owner = registry.owner.get((kind, name))
        if owner is None:
            continue
        info = plugins().info[owner]
        out[key] = {"plugin": owner, "package": info.package or "", "version": info.version or ""}
    return out


def _nested_router_names(options, routers) -> list[str]:
    """The routers a combinator's options name, at any depth: specs {"name": ..., "options": ...} and
    plain registered names."""
    found = []
    if isinstance(options, dict):
        if isinstance(options.get("name"), str):
            found.append(options["name"])
        for key, value in options.items():
            if key != "name":
                found += _nested_router_names(value, routers)
    elif isinstance(options, (list, tuple)):
        for value in options:
            found += _nested_router_names(value, routers)
    elif isinstance(options, str) and options in routers:
        found.append(options)
    return list(dict.fromkeys(found))


def _missing_plugin(path, metadata: dict[str, str], err: Exception) -> CheckpointError:
    """The error for a checkpoint whose modality or router no installed plugin provides: the stored
    provenance names the package to install (older checkpoints store none)."""
    try:
        provenance = json.loads(metadata.get("plugins", "{}"))
    except json.JSONDecodeError:
        provenance = {}
    message = str(err)
    for key, source in provenance.items():
        name = key.split(":", 1)[1]
        if f"{name!r}" in message:
            package = source.get("package") or source.get("plugin")
            version = f" {source['version']}" if source.get("version") else ""
            return CheckpointError(
                f"{path}: needs the {key.split(':')[0]} {name!r} from plugin {source.get('plugin')!r} "
                f"(package {package!r}{version}), which is not installed or failed to load: "
                f"pip install {package}"
            )
    return CheckpointError(f"{path}: {message}")


def read_checkpoint(path: str | Path) -> tuple[AstraConfig, dict[str, torch.Tensor], dict[str, str]]:
    """(config, tensors, metadata) of a checkpoint, validated; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({err})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: metadata 'format' is {metadata.get('format')!r}, expected {FORMAT!r}")
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        from astra_core import __version__

        writer = metadata.get("astra_version", "an unknown version")
        raise CheckpointError(
            f"{path}: format_version {version!r}, written by astra-world {writer}, is newer than this "
            f"installation ({__version__}, reads format versions up to {FORMAT_VERSION}); upgrade astra-world "
            "to load it"
        )
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: tensor {key!r} holds NaN or Inf values; the checkpoint is corrupt")
    try:
        config = AstraConfig.from_dict(json.loads(metadata["config"]), source=f"{path} (config)")
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: metadata 'config' is missing or not JSON ({err})") from None
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    return config, tensors, metadata


def check_state_dict(net: AstraNet, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Raise one `CheckpointError` listing every missing, unexpected or mis-shaped tensor."""
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = sorted(
        f"{k} {tuple(tensors[k].shape)} (model {expected[k]})"
        for k in set(expected) & set(tensors)
        if tuple(tensors[k].shape) != expected[k]
    )
    problems = [
        f"{title}: {', '.join(items[:10])}{' ...' if len(items) > 10 else ''}"
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
        if items
    ]
    if problems:
        raise CheckpointError(f"{source}: weights do not match the config; " + "; ".join(problems))


def tokenizer_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tokenizer's tensors of a world-model checkpoint, named as in the tokenizer's own state dict."""
    return {k[len(TOKENIZER_PREFIX) :]: v for k, v in tensors.items() if k.startswith(TOKENIZER_PREFIX)}


def load_network_weights(net: AstraNet, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load a checkpoint's network tensors (all but the tokenizer's) into `net`, which must match them
    exactly (`check_state_dict`, naming `source`)."""
    net_tensors = {k: v for k, v in tensors.items() if not k.startswith(TOKENIZER_PREFIX)}
    check_state_dict(net, net_tensors, source)
    net.load_state_dict(net_tensors)


def check_same_tokenizer(tokenizer, metadata: dict[str, str], tensors: dict[str, torch.Tensor], source: str) -> None:
    """A network continued from a checkpoint (`mode: finetune`, `mode: adapter`) generates the latents of
    the tokenizer it was trained with: `tokenizer` (the run's) must be that one, its kind, settings and
    weights. A checkpoint that stores no tokenizer is not checked. Errors name `source` and what differs."""
    if "tokenizer" not in metadata:
        return
    try:
        stored = json.loads(metadata["tokenizer"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{source}: metadata 'tokenizer' is not JSON ({metadata['tokenizer']!r})") from None
    ours = tokenizer.describe()
    if stored != ours:
        raise CheckpointError(
            f"{source}: its model was trained on the latents of the tokenizer {stored}, this run's data.tokenizer "
            f"is {ours}; the network would read latents it never saw. Set data.tokenizer (and data.pixel_patch) "
            "to the checkpoint's"
        )
    weights = tokenizer_weights(tensors)
    own = tokenizer.state_dict()
    differ = sorted(
        k for k in set(weights) | set(own) if k not in weights or k not in own or not torch.equal(weights[k], own[k])
    )
    if differ:
        raise CheckpointError(
            f"{source}: its tokenizer has this run's settings ({ours}) but other weights ({len(differ)} tensors "
            f"differ, e.g. {differ[0]!r}); train with the tokenizer the checkpoint was trained with"
        )


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> AstraNet:
    """Rebuild the network from the checkpoint's own config and load its weights."""
    return load_world_checkpoint(path, device)[0]


def load_world_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """(network, tokenizer or None) from a checkpoint."""
    net, tokenizer, _ = _load_world(path, device)
    return net, tokenizer


def _is_frame_size(size) -> bool:
    """(height, width): two positive integers (not bools), as written and as read back."""
    return (
        isinstance(size, (list, tuple))
        and len(size) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in size)
    )


def frame_size(metadata: dict[str, str], path: str | Path = "checkpoint") -> tuple[int, int] | None:
    """The (height, width) of the frames a checkpoint's model was trained on (metadata `frame_size`,
    written by `save_checkpoint(..., frame_size=)`), or None for a checkpoint that does not say."""
    text = metadata.get("frame_size")
    if text is None:
        return None
    try:
        size = json.loads(text)
        if _is_frame_size(size):
            return int(size[0]), int(size[1])
    except json.JSONDecodeError:
        pass
    raise CheckpointError(f"{path}: metadata 'frame_size' is {text!r}; expected [height, width]")


def _load_world(path: str | Path, device: str | torch.device = "cpu"):
    """(network, tokenizer or None, metadata) from a checkpoint."""
    from astra_core.data.tokenizer import build_tokenizer
    from astra_core.plugins import PluginError

    config, tensors, metadata = read_checkpoint(path)
    try:
        net = AstraNet(config)
    except PluginError as err:
        raise _missing_plugin(path, metadata, err) from None
    load_network_weights(net, tensors, str(path))
    tokenizer = None
    if "tokenizer" in metadata:
        try:
            tokenizer = build_tokenizer(json.loads(metadata["tokenizer"]))
            tokenizer.load_state_dict(tokenizer_weights(tensors))
        except (ValueError, RuntimeError, KeyError) as err:
            raise CheckpointError(f"{path}: the stored tokenizer does not load ({err})") from None
        tokenizer = tokenizer.to(device).eval()
    return net.to(device).eval(), tokenizer, metadata
