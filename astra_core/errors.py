"""The exception types a user of Astra world can cause and catch."""

from __future__ import annotations


class AstraError(ValueError):
    """Base class: bad input, config, checkpoint or plugin, with the culprit named in the message."""


class ConfigError(AstraError):
    """A config field is unknown, missing or out of range."""


class ShapeError(AstraError):
    """A tensor has the wrong shape, dtype or non-finite values."""


class CheckpointError(AstraError):
    """A checkpoint file is missing, corrupt, or does not match the model it is loaded into."""


class WeightLoadError(CheckpointError):
    """A backbone state dict does not match the expected key layout or shapes."""


class ReaderError(AstraError):
    """A dataset file that a reader cannot use: the message names the file and the field or value."""


class CacheError(AstraError):
    """A cache shard is missing, truncated, corrupt, or was made by another tokenizer."""


class ActionFileError(AstraError):
    """An action file that cannot be read or does not fit the modality."""


class PluginError(AstraError):
    """A plugin clashes with another or is unknown."""
