"""The trainer's held-out evaluation: loss, action gain (the loss with another clip's actions over the
loss with its own) and the same from a rollout's opening, per embodiment."""

from __future__ import annotations

import torch

from astra_core.apps.train_setup import pad_to_one_vector
from astra_core.data import collate
from astra_core.model.actions import map_actions
from astra_core.model.objective import WorldModelObjective


def held_out_picks(count: int, size: int = 16) -> list[int]:
    """The clips of a held-out pool of `count` that the evaluation batches: up to `size`, spread evenly.
    A pool lists each episode's clips one after another, so its first clips would mostly share one
    episode (and one scene)."""
    return list(range(count)) if count <= size else [i * count // size for i in range(size)]


def held_out_partners(size: int) -> torch.Tensor:
    """For each clip of a held-out batch, the clip whose actions it gets for the action gain: the one
    half the batch away. Neighbouring clips of one episode overlap and carry nearly the same actions
    (controls hold for many frames), so swapping with a neighbour would measure almost nothing."""
    return (torch.arange(size) - max(1, size // 2)) % size


class EvaluationMixin:
    """Trainer methods that score the held-out clips."""

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out figures of the EMA model with fixed noise and no action dropout (comparable across
        steps): the mean loss, and the action gain, the loss with each clip given another episode's
        actions over the loss with its own (same noise). A gain near 1: the model ignores its actions.
        The gain is measured on full-history clips and, as `eval_action_gain_opening`, on the first
        chunk after the context frames, where no history can stand in for the actions."""
        objective = WorldModelObjective(self.ema)

        def held_out_loss(batch, actions, masks, num_history, positions) -> float:  # the same noise each call
            generator = torch.Generator().manual_seed(1234)
            args = (batch.latents, actions, masks, num_history, positions, generator)
            return float(objective.loss(*args, drop_actions=False, own_predictions=False)[0])

        def loss_and_gain(batch, num_history, positions) -> tuple[float, float | None]:
            actions, masks = batch.actions, batch.masks
            if self.ema.moae is None:
                actions, masks = pad_to_one_vector(batch, self.ema.config.action.action_dim)
            loss = held_out_loss(batch, actions, masks, num_history, positions)
            if batch.latents.shape[0] < 2 or not self.ema.config.action.use_actions:
                return loss, None
            partner = held_out_partners(batch.latents.shape[0]).to(batch.latents.device)
            shuffled = map_actions(actions, lambda a: a[partner])
            shuffled_masks = map_actions(masks, lambda m: m[partner]) if masks is not None else None
            return loss, held_out_loss(batch, shuffled, shuffled_masks, num_history, positions) / max(loss, 1e-12)

        def on_device(batch, num_history, positions):
            return batch.to(self.device), num_history, positions.to(self.device)

        losses, gains, opening_gains = {}, {}, {}
        for name, clips in self.held_out.items():
            batch = collate([clips[i] for i in held_out_picks(len(clips))])
            losses[name], gain = loss_and_gain(*on_device(*self._crop(batch, self.cfg.data.history_chunks)))
            _, opening_gain = loss_and_gain(*on_device(*self._crop(batch, 0, opening=True)))
            if gain is not None:
                gains[name], opening_gains[name] = gain, opening_gain
        out = {"eval_loss": sum(losses.values()) / max(1, len(losses)), "eval_loss_per_embodiment": losses}
        if gains:
            out["eval_action_gain"] = sum(gains.values()) / len(gains)
            out["eval_action_gain_per_embodiment"] = gains
            out["eval_action_gain_opening"] = sum(opening_gains.values()) / len(opening_gains)
            out["eval_action_gain_opening_per_embodiment"] = opening_gains
        return out
