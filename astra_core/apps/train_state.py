"""The trainer's checkpoints: weights and training state written as one consistent unit, read back
without pickle code, and resume (config comparison, metrics and weights put back in step)."""

from __future__ import annotations

import json
import pickle
import sys
import time
from pathlib import Path

import torch

from astra_core.checkpoint import (
    publish,
    read_checkpoint,
    save_checkpoint,
    temporary_beside,
    write_text_atomically,
)
from astra_core.config import TrainConfig
from astra_core.errors import CheckpointError, ConfigError


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = temporary_beside(path)
    try:
        torch.save(obj, tmp)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Fields a resumed run may change without --accept-config-changes: how long it runs, how often it
# logs, evaluates and saves, where its files are, and where and how its steps run (device, compile:
# the same arithmetic, so the run continues, though not bit for bit across devices or compilation).
RESUMABLE_CHANGES = (
    "steps",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "out_dir",
    "tensorboard",
    "device",
    "compile",
)


def _with_defaults(stored: dict) -> dict:
    """A stored config with the fields it predates filled in by their defaults: a field added after the
    run began, left at its default, is no change. This relies on every new config field's default
    reproducing what the code did before the field existed (the rule for adding fields). A stored
    config the current schema refuses is compared as it is."""
    try:
        return TrainConfig.from_dict(stored).model_dump(mode="json")
    except ConfigError:
        return stored


def _differences(before, after, prefix: str = "") -> dict[str, tuple]:
    """Dotted paths whose values differ between two nested dicts -> (before, after)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: dict[str, tuple] = {}
        for key in sorted(set(before) | set(after)):
            out.update(_differences(before.get(key), after.get(key), f"{prefix}{key}."))
        return out
    return {} if before == after else {prefix.rstrip("."): (before, after)}


def _logged_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 10**18  # a torn last line: dropped


def read_training_state(path: str | Path) -> dict:
    """A training state written by `Trainer.save_state`, read without running code from the file.

    The state holds only tensors, numbers, strings and containers of them, so it is unpickled with
    `weights_only=True`: a file that asks for any other object (a crafted pickle that would call a
    function while loading) is refused before anything in it runs."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"resume: {path} is not a training state this project wrote; it asks to load code or objects "
            f"other than tensors and plain values, so it was refused unread ({reason})"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(
            f"resume: {path} cannot be read as a training state (truncated or corrupt?): {err}"
        ) from None
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise CheckpointError(f"resume: {path} is not a training state (no 'step' and 'model' entries)")
    return state


class CheckpointMixin:
    """Trainer methods that save and restore a run."""

    def full_state_dict(self) -> dict:
        """The network's weights as plain tensors (gathered from the shards under FSDP)."""
        if not self.sharded:
            return self.net.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = get_model_state_dict(self.loss_module, options=options)
        return {k.removeprefix("net."): v for k, v in full.items()}

    def _optimizer_state(self) -> dict:
        """The optimiser state; under FSDP gathered into one full state keyed by parameter name."""
        if not self.sharded:
            return self.opt.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.loss_module, self.opt, options=options)

    def save_state(self) -> None:
        model = self.full_state_dict()  # collectives under FSDP: every rank takes part
        optimizer = self._optimizer_state()
        if self.rank != 0:
            return
        state = {
            "step": self.step,
            "model": model,
            "ema": self.ema.state_dict(),
            "optimizer": optimizer,
            "sharded": self.sharded,
            "scheduler": self.sched.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "sampler": self.sampler.state_dict(),
            "config": self.cfg.model_dump(mode="json"),
            "elapsed_s": self.elapsed(),
            "cpu_s": self.cpu_elapsed(),
        }
        _atomic_torch_save(state, self.out / "state.pt")
        self._save_weights(self.out / "model.safetensors")

    def _save_weights(self, path: Path) -> None:
        """The EMA weights with the tokenizer, the run's provenance and the frame size (which
        WorldModel.reset requires)."""
        save_checkpoint(path, self.ema, self._provenance(), tokenizer=self.tokenizer, frame_size=self.frame_size())

    def _provenance(self) -> dict[str, str]:
        provenance = {
            "train_step": str(self.step),
            "train_config": json.dumps(self.cfg.model_dump(mode="json")),
            "train_seconds": f"{self.elapsed():.0f}",
            "weights": "ema",
        }
        cpu = self.cpu_elapsed()
        if cpu is not None:
            provenance["train_cpu_seconds"] = f"{cpu:.0f}"
        return provenance

    def elapsed(self) -> float:
        """Wall seconds of training so far, over every resumed segment."""
        return getattr(self, "_elapsed_before", 0.0) + time.time() - self.started

    def cpu_elapsed(self) -> float | None:
        """CPU seconds of this training process so far (all its threads; rank 0's under DDP/FSDP), over
        every resumed segment; None when resumed from a state that did not record them."""
        before = getattr(self, "_cpu_before", 0.0)
        return None if before is None else before + time.process_time() - self.cpu_started

    def load_state(self) -> None:
        path = self.out / "state.pt"
        if not path.is_file():
            raise ConfigError(f"resume: no training state at {path}")
        state = read_training_state(path)
        self._check_resumed_config(path, state.get("config"))
        if state.get("optimizer") is None:  # FSDP states of earlier versions kept no optimiser state
            raise ConfigError(f"resume: {path} holds no optimiser state, so it cannot be resumed exactly")
        if bool(state.get("sharded", False)) != self.sharded:
            kinds = {True: "parallel 'fsdp'", False: "one process or DDP"}
            raise ConfigError(
                f"resume: {path} was saved with {kinds[bool(state.get('sharded'))]}; resume it the same way, "
                f"not with {kinds[self.sharded]}"
            )
        if self.sharded:  # every rank reads the full state and keeps its own shards of it
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            options = StateDictOptions(full_state_dict=True)
            model = {"net." + k: v for k, v in state["model"].items()}
            set_model_state_dict(self.loss_module, model, options=options)
            set_optimizer_state_dict(self.loss_module, self.opt, state["optimizer"], options=options)
        else:
            self.net.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
        self.ema.load_state_dict(state["ema"])
        self.sched.load_state_dict(state["scheduler"])
        self._apply_optim_config()
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.sampler.load_state_dict(state["sampler"])
        self.step = state["step"]
        self._elapsed_before = state.get("elapsed_s", 0.0)
        self._cpu_before = state.get("cpu_s")  # absent from the states of versions before 0.5
        if self.rank == 0:
            self._agree_with_state()

    def _apply_optim_config(self) -> None:
        """The optimiser's settings come from the config, not the stored state: loading the state
        restores the run's learning rate, betas and weight decay, which an accepted config change may
        have set otherwise. Unchanged, each value is what the state held, bit for bit."""
        o = self.cfg.optim
        factor = self._lr_factor(self.sched.last_epoch)
        for group in self.opt.param_groups:
            group.update(initial_lr=o.lr, lr=o.lr * factor, betas=tuple(o.betas), weight_decay=o.weight_decay)
        self.sched.base_lrs = [o.lr] * len(self.opt.param_groups)

    def _check_resumed_config(self, path: Path, stored: dict | None) -> None:
        """A resumed run continues the stored one: the total steps and the logging, evaluation and
        checkpoint intervals (and out_dir) may change; any other difference is refused, naming the
        fields, unless `accept_config_changes`. Every difference is reported."""
        if stored is None:
            return
        changed = _differences(_with_defaults(stored), self.cfg.model_dump(mode="json"))
        if not changed:
            return
        refused = [k for k in changed if k not in RESUMABLE_CHANGES]
        if refused and not self.accept_config_changes:
            shown = "; ".join(f"{k}: {changed[k][0]!r} in the run, {changed[k][1]!r} now" for k in refused[:8])
            raise ConfigError(
                f"resume: the config differs from the one {path} was trained with ({shown}); put them back, "
                "or pass --accept-config-changes (Trainer(..., accept_config_changes=True)) to continue with the "
                "new values"
            )
        if self.rank == 0:
            for key, (before, after) in changed.items():
                print(f"astra train: resuming with {key} {before!r} -> {after!r}", file=sys.stderr)

    def _agree_with_state(self) -> None:
        """After a resume, make the run's other files match the state's step: metrics logged after it
        are dropped (they will be logged again), and weights written after it are rewritten."""
        metrics = self.out / "metrics.jsonl"
        if metrics.is_file():
            kept = [line for line in metrics.read_text().splitlines() if _logged_step(line) <= self.step]
            write_text_atomically(metrics, "".join(line + "\n" for line in kept))
        weights = self.out / "model.safetensors"
        try:
            written_at = int(read_checkpoint(weights)[2].get("train_step", -1)) if weights.is_file() else None
        except (CheckpointError, ConfigError, ValueError):
            written_at = -1  # unreadable: write it again
        if written_at is not None and written_at != self.step:
            self._save_weights(weights)
