"""The training objective of an Astra world model: flow matching on the target chunk, conditioned on
(noise-augmented) history through block-causal attention, with action dropout for guidance."""

from __future__ import annotations

import torch

from astra_core.model.actions import Actions, AstraNet, Masks, map_actions
from astra_core.model.flow import RectifiedFlow
from astra_core.model.memory import (
    BatchDraws,
    augment_history,
    check_training_layout,
    sequence_chunk_ids,
    with_last_frame_channels,
)

OWN_PREDICTION_SIGMA = (0.5, 1.0)  # the noise levels at which the model's own history chunk is estimated
MOTION_SCALE = 0.1  # a change of this much (in latent units; 13/255 for pixel latents) counts fully as motion


@torch.no_grad()
def copy_last_balance(target: torch.Tensor, last_frame: torch.Tensor, floor: float) -> torch.Tensor:
    """Per-sample weights [B]: the batch's mean copy-last error over each sample's own (floored at
    `floor` times that mean), so every sample's loss counts relative to copy-last-frame's error on it
    (`FlowConfig.loss_balance`)."""
    copy_last = (target.float() - last_frame.float()).pow(2).mean(dim=(1, 2, 3, 4))
    mean = copy_last.mean().clamp_min(1e-12)
    return mean / copy_last.clamp_min(floor * mean)


def motion_weights(target: torch.Tensor, last_frame: torch.Tensor, strength: float) -> torch.Tensor:
    """Per-value loss weights [B, C, f, H, W]: 1 + strength·min(1, |target − last_frame| / MOTION_SCALE),
    scaled so each sample's weights average 1 (`FlowConfig.motion_weight`)."""
    change = (target.float() - last_frame.float()).abs().div(MOTION_SCALE).clamp(max=1.0)
    weights = 1 + strength * change
    return weights / weights.mean(dim=(1, 2, 3, 4), keepdim=True)


class WorldModelObjective:
    """`loss(latents, actions, mask, num_history) -> (loss, logs)` for an `AstraNet`."""

    def __init__(self, net: AstraNet):
        self.net = net
        self.flow = RectifiedFlow(net.config.flow)

    def loss(
        self,
        latents: torch.Tensor,
        actions: Actions,
        action_mask: Masks,
        num_history: int,
        frame_positions: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        rows: slice | None = None,
        total_batch: int | None = None,
        drop_actions: bool = True,
        own_predictions: bool = True,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """latents [B, C, F, H, W]: `num_history` history frames, then one target chunk;
        actions [B, F, A] (the action of frame i leads from frame i−1 into it) and mask [B, F], or
        dicts of those keyed by modality for an MoAE model. With `rows` and `total_batch`, this batch
        is the slice `rows` of a larger one (data parallelism) and draws its random numbers as such.
        `drop_actions=False` turns off the action dropout of guidance training, and `own_predictions=False`
        the own-prediction history of `HistoryConfig.own_prediction_prob` (both for evaluation)."""
        cfg = self.net.config
        b, _, f = latents.shape[:3]
        check_training_layout(f, num_history, cfg.history)
        device = latents.device
        draws = BatchDraws(generator, total_batch, rows)
        own = False  # one draw per step, the same on every rank: the batch keeps one shape (compiled graphs)
        if own_predictions and cfg.history.own_prediction_prob > 0 and num_history > cfg.history.context_frames:
            own = draws.step_rand() < cfg.history.own_prediction_prob
        if own:
            latents = self.own_history(latents, actions, action_mask, num_history, frame_positions, draws)
        history = latents[:, :, :num_history]
        target = self.flow.to_target(latents[:, :, num_history:], history[:, :, -1:])

        sigma = self.flow.sample_sigma(b, draws, device)
        noise = draws.randn(*target.shape, dtype=target.dtype).to(device)
        noisy_target = self.flow.add_noise(target, noise, sigma)
        noisy_history, history_t = augment_history(history, cfg.history, cfg.flow.num_train_timesteps, draws)

        drop = (draws.rand(b) < (cfg.guidance.action_dropout if drop_actions else 0.0)).to(device)
        features, aux_loss, routing = self.net.encode_actions(actions, action_mask, drop=drop)
        out = self._chunk_output(noisy_history, history_t, noisy_target, sigma, features, frame_positions)
        pred = self.flow.velocity(out, noisy_target, sigma, last_frame=history[:, :, -1:])
        velocity_target = self.flow.velocity_target(target, noise, sigma)
        error = (pred.float() - velocity_target.float()).pow(2)
        if cfg.flow.motion_weight > 0:
            error = error * motion_weights(latents[:, :, num_history:], history[:, :, -1:], cfg.flow.motion_weight)
        per_sample = error.mean(dim=(1, 2, 3, 4))
        if cfg.flow.loss_balance == "copy_last":
            per_sample = per_sample * copy_last_balance(
                latents[:, :, num_history:], history[:, :, -1:], cfg.flow.balance_floor
            )
        flow_loss = (per_sample * self.flow.loss_weight(sigma)).mean()
        loss = flow_loss + cfg.action.aux_loss_weight * aux_loss
        logs = {
            "loss": float(loss.detach()),
            "flow_loss": float(flow_loss.detach()),
            "aux_loss": float(aux_loss.detach()),
            "sigma": float(sigma.mean()),
            "dropped": float(drop.float().mean()),
        }
        if routing:
            logs["router_usage"] = routing["usage"]
            logs["router_entropy"] = routing["entropy"]
        if cfg.history.own_prediction_prob > 0 and own_predictions:
            logs["own_history"] = float(own)
        return loss, logs

    @torch.no_grad()
    def own_history(
        self,
        latents: torch.Tensor,
        actions: Actions,
        action_mask: Masks,
        num_history: int,
        frame_positions: torch.Tensor | None,
        draws: BatchDraws,
    ) -> torch.Tensor:
        """`latents` with the last history chunk replaced by the network's x̂₀ of it, estimated from the
        history before it and the true actions at σ ~ U(OWN_PREDICTION_SIGMA) (`HistoryConfig.own_prediction_prob`)."""
        cfg = self.net.config
        b = latents.shape[0]
        n = cfg.history.chunk_size
        before = num_history - n
        device = latents.device
        history, chunk = latents[:, :, :before], latents[:, :, before:num_history]
        last = history[:, :, -1:]
        lo, hi = OWN_PREDICTION_SIGMA
        sigma = (lo + (hi - lo) * draws.rand(b)).to(device)
        noise = draws.randn(*chunk.shape, dtype=chunk.dtype).to(device)
        noisy = self.flow.add_noise(self.flow.to_target(chunk, last), noise, sigma)

        def cut(v: torch.Tensor) -> torch.Tensor:
            return v[:, :num_history]

        mask = None if action_mask is None else map_actions(action_mask, cut)
        features = self.net.encode_actions(map_actions(actions, cut), mask)[0]
        positions = None if frame_positions is None else frame_positions[..., :num_history]
        out = self._chunk_output(history, sigma.new_zeros(b, before), noisy, sigma, features, positions)
        x0 = self.flow.denoised(out, noisy, sigma, last_frame=last)
        estimate = self.flow.from_target(x0, last).to(latents.dtype)
        return torch.cat([history, estimate, latents[:, :, num_history:]], dim=2)

    def _chunk_output(
        self,
        history: torch.Tensor,
        history_t: torch.Tensor,
        noisy_target: torch.Tensor,
        sigma: torch.Tensor,
        features: torch.Tensor,
        frame_positions: torch.Tensor | None,
    ) -> torch.Tensor:
        """The network's output on the target chunk: history (as the model sees it, with its timesteps
        [B, Fh]) then the noisy chunk at σ [B]; with `last_frame_channels`, the last history frame as given
        beside each target frame."""
        cfg = self.net.config
        b, num_history = history.shape[0], history.shape[2]
        f = num_history + noisy_target.shape[2]
        timesteps = torch.cat([history_t, self.flow.timesteps(sigma)[:, None].expand(b, f - num_history)], dim=1)
        chunk_ids = sequence_chunk_ids(f, cfg.history.context_frames, cfg.history.chunk_size, history.device)
        x = torch.cat([history, noisy_target], dim=2)
        if cfg.history.last_frame_channels:
            x = with_last_frame_channels(x, history[:, :, -1:], num_history)
        out = self.net(x, timesteps, features, frame_positions=frame_positions, chunk_ids=chunk_ids)
        return out[:, :, num_history:]
