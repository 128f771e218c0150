"""Raw action streams from files (json, yaml or npz) and back, for `astra rollout`.

A file holds one modality's raw stream, in the form that modality's `raw_format` names: an array
(camera poses [T, 4, 4], arm rows [T, 7]) or a mapping of per-frame fields ({"keys": [...], "mouse":
[...]}, {"translation": [...], "rotation": [...]}). It may also be a mapping keyed by modality name,
{"camera_se3": ...}, to say which modality it is for. In an npz, a stream that is one array is stored
as `actions` (or is the file's only array); key lists are stored as strings joined by "+" ("W+LEFT").
Row 0 is the state of the last context frame; every later row leads into the next frame.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from astra_core.errors import ActionFileError, AstraError
from astra_core.modality import raw_length

SUFFIXES = (".json", ".yaml", ".yml", ".npz")


def load_action_file(path: str | Path, modality) -> Any:
    """The raw stream for `modality` (a Modality) stored in `path`, checked by aligning it once."""
    path = Path(path)
    if not path.is_file():
        raise ActionFileError(f"{path}: no such action file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ActionFileError(f"{path}: unknown action file type {suffix!r}; use one of {', '.join(SUFFIXES)}")
    try:
        data = _read_npz(path) if suffix == ".npz" else _read_text(path, suffix)
    except ActionFileError:
        raise
    except Exception as err:  # parsers raise many types; name the file
        raise ActionFileError(f"{path}: cannot parse: {err}") from None
    if isinstance(data, dict) and modality.name in data:
        data = data[modality.name]
    elif isinstance(data, dict) and len(data) == 1 and _is_modality(next(iter(data))):
        (other,) = data  # a lone field that is no modality's name is a part of the stream ({"translation": …})
        raise ActionFileError(f"{path}: holds actions for {other!r}, but this embodiment uses {modality.name!r}")
    if isinstance(data, dict) and "actions" in data and len(data) == 1:
        data = data["actions"]
    try:
        stream = _to_stream(data)
    except ActionFileError as err:
        raise ActionFileError(f"{path}: {err}") from None
    try:
        if raw_length(stream) < 2:
            raise ActionFileError(f"{path}: needs at least 2 rows (the start state and one action)")
        modality.align(stream, 1)
    except ActionFileError:
        raise
    except (AstraError, ValueError, TypeError, KeyError, IndexError) as err:
        raise ActionFileError(f"{path}: not a valid {modality.name} stream ({modality.raw_format}): {err}") from None
    return stream


def _is_modality(name: Any) -> bool:
    from astra_core.plugins import get_registry

    return name in get_registry().modalities


def _read_text(path: Path, suffix: str) -> Any:
    text = path.read_text()
    if suffix == ".json":
        return json.loads(text)
    from astra_core.config import load_yaml

    return load_yaml(text)


def _read_npz(path: Path) -> Any:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if not arrays:
        raise ActionFileError(f"{path}: the npz file holds no arrays")
    if len(arrays) == 1 and "keys" not in arrays:
        (value,) = arrays.values()
        return value
    out: dict[str, Any] = {}
    for key, value in arrays.items():
        if key == "keys" and value.dtype.kind in "US":
            out[key] = [[k for k in str(v).split("+") if k] for v in value]
        else:
            out[key] = value
    return out


def _to_stream(data: Any) -> Any:
    """Lists become float arrays where they are numeric; key lists stay lists of lists."""
    if isinstance(data, dict):
        return {k: (v if k == "keys" else _numeric(v, k)) for k, v in data.items()}
    return _numeric(data, "actions")


def _numeric(value: Any, field: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ActionFileError(f"field {field!r}: expected numbers, got {type(value).__name__}: {err}") from None


def stream_rows_to_json(stream: Any, start: int, stop: int) -> list:
    """Rows [start, stop) of a raw stream as JSON-ready per-frame values."""
    if isinstance(stream, dict):
        fields = {k: v for k, v in stream.items() if v is not None}
        return [{k: _jsonable(v[i]) for k, v in fields.items()} for i in range(start, stop)]
    return [_jsonable(stream[i]) for i in range(start, stop)]


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    return value
