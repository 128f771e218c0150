"""The action path of the ACT-Adapter: per-latent-frame action vectors -> action features [B, F, dim].

`AstraNet` bundles the backbone with an action encoder and the learned null action feature used by
action-free guidance. The encoder's output layer is zero-initialised, so attaching it to a trained
backbone leaves the backbone's output unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import AstraConfig
from ..errors import ShapeError
from .dit import AstraDiT


class MLPActionEncoder(nn.Module):
    """Normalised actions [B, F, A] and their mask [B, F] -> features [B, F, dim]."""

    def __init__(self, action_dim: int, dim: int, hidden_dim: int):
        super().__init__()
        self.action_dim = action_dim
        self.net = nn.Sequential(nn.Linear(action_dim + 1, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.to(actions.dtype)[..., None]
        return self.net(torch.cat([actions * mask, mask], dim=-1))


class AstraNet(nn.Module):
    """The trainable world-model network: DiT backbone, action encoder, null action feature."""

    def __init__(self, config: AstraConfig):
        super().__init__()
        self.config = config
        self.dit = AstraDiT(config.dit)
        self.action_encoder = MLPActionEncoder(config.action.action_dim, config.dit.dim, config.action.hidden_dim)
        # Action-free guidance replaces dropped actions by this learned feature (Astra §3).
        self.null_action = nn.Parameter(torch.randn(config.dit.dim) * 0.02)

    def action_features(
        self, actions: torch.Tensor, mask: torch.Tensor | None = None, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        """actions [B, F, A], mask [B, F] (1 = valid), drop [B] bool (use the null feature) -> [B, F, dim]."""
        a = self.config.action.action_dim
        if actions.ndim != 3 or actions.shape[-1] != a:
            raise ShapeError(f"actions: expected [B, F, {a}], got {tuple(actions.shape)}")
        if not bool(torch.isfinite(actions).all()):
            raise ShapeError("actions: contains NaN or Inf")
        if mask is None:
            mask = torch.ones(actions.shape[:2], device=actions.device)
        elif mask.shape != actions.shape[:2]:
            raise ShapeError(f"action mask: expected {tuple(actions.shape[:2])}, got {tuple(mask.shape)}")
        features = self.action_encoder(actions, mask)
        if drop is not None:
            features = torch.where(drop[:, None, None], self.null_action.to(features.dtype), features)
        return features

    def null_features(self, batch: int, frames: int) -> torch.Tensor:
        return self.null_action[None, None].expand(batch, frames, -1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, action_features: torch.Tensor | None, **kw):
        return self.dit(x, timesteps, action_features, **kw)

    def adapter_parameter_names(self) -> list[str]:
        """ACT-Adapter fine-tuning set: self-attention, projectors and the action modules."""
        action = [n for n, _ in self.named_parameters() if n.startswith(("action_encoder.", "null_action"))]
        return ["dit." + n for n in self.dit.adapter_parameter_names()] + action

    def select_adapter_parameters(self) -> list[nn.Parameter]:
        """Freeze everything but the adapter set; returns the parameters left trainable."""
        names = set(self.adapter_parameter_names())
        trainable = []
        for name, param in self.named_parameters():
            param.requires_grad_(name in names)
            if name in names:
                trainable.append(param)
        return trainable
