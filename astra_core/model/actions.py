"""The action path of the ACT-Adapter: per-latent-frame action vectors -> action features [B, F, dim].

`AstraNet` bundles the backbone with an action encoder and the learned null action feature used by
action-free guidance. The encoder's output layer is zero-initialised (`action.zero_init`, the default),
so attaching it to a trained backbone leaves the backbone's output unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from astra_core.config import AstraConfig
from astra_core.errors import ConfigError, ShapeError
from astra_core.model.dit import AstraDiT
from astra_core.model.moae import MoAE, SharedActionEncoder, build_router


class MLPActionEncoder(nn.Module):
    """Normalised actions [B, F, A] and their mask [B, F] -> features [B, F, dim]."""

    def __init__(self, action_dim: int, dim: int, hidden_dim: int, zero_init: bool = True):
        super().__init__()
        self.action_dim = action_dim
        self.net = nn.Sequential(nn.Linear(action_dim + 1, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, dim))
        if zero_init:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.to(actions.dtype)[..., None]
        return self.net(torch.cat([actions * mask, mask], dim=-1))


Actions = torch.Tensor | Mapping[str, torch.Tensor]
Masks = torch.Tensor | Mapping[str, torch.Tensor] | None


def build_moae(config: AstraConfig) -> MoAE | SharedActionEncoder:
    """The per-modality action module of a config: an MoAE (modalities and the router class from the
    plugin registry), or for encoder "shared" its ablation with one shared encoder."""
    cfg = config.action
    if cfg.encoder == "shared":
        return SharedActionEncoder(
            list(cfg.modalities),
            token_dim=cfg.token_dim,
            out_dim=config.dit.dim,
            expert_hidden=cfg.expert_hidden,
            zero_init=cfg.zero_init,
        )
    try:
        router = build_router({"name": cfg.router, "options": cfg.router_options})
    except ConfigError as err:
        raise ConfigError(f"action.router_options: {err}") from None
    return MoAE(
        list(cfg.modalities),
        router=router,
        num_experts=cfg.num_experts,
        token_dim=cfg.token_dim,
        out_dim=config.dit.dim,
        expert_hidden=cfg.expert_hidden,
        zero_init=cfg.zero_init,
    )


def action_shape(actions: Actions) -> tuple[int, int]:
    """(B, F) of a tensor [B, F, A] or of a dict of such tensors."""
    if isinstance(actions, Mapping) and not actions:
        raise ShapeError("actions: an empty dict; pass {modality: tensor [B, F, A]}")
    first = next(iter(actions.values())) if isinstance(actions, Mapping) else actions
    if not isinstance(first, torch.Tensor):
        raise ShapeError(f"actions: expected a tensor [B, F, A] (or a dict of them), got {type(first).__name__}")
    if first.ndim != 3:
        raise ShapeError(f"actions: expected [B, F, A], got {tuple(first.shape)}")
    return int(first.shape[0]), int(first.shape[1])


def map_actions(actions: Actions, fn) -> Actions:
    return {k: fn(v) for k, v in actions.items()} if isinstance(actions, Mapping) else fn(actions)


class AstraNet(nn.Module):
    """The trainable world-model network: DiT backbone, action path (one MLP or MoAE), null action."""

    def __init__(self, config: AstraConfig):
        super().__init__()
        self.config = config
        self.dit = AstraDiT(config.dit)
        if config.action.encoder in ("moae", "shared"):  # actions come as dicts keyed by modality
            self.moae = build_moae(config)
            self.action_encoder = None
        else:
            self.moae = None
            self.action_encoder = MLPActionEncoder(
                config.action.action_dim, config.dit.dim, config.action.hidden_dim, zero_init=config.action.zero_init
            )
        # Action-free guidance replaces dropped actions by this learned feature (Astra §3).
        self.null_action = nn.Parameter(torch.randn(config.dit.dim) * 0.02)
        rank = config.flow.action_flow_rank
        self.action_flow = nn.Linear(config.dit.dim, rank) if rank else None  # FlowConfig.action_flow_rank
        splat = config.flow.splat_rank
        self.action_splat = nn.Linear(config.dit.dim, splat) if splat else None  # FlowConfig.splat_rank
        if config.flow.prediction in ("delta", "warp") and self.dit.head.head.weight.device.type != "meta":
            # the change (and flow) from the last frame starts at zero: an untrained model repeats it
            nn.init.zeros_(self.dit.head.head.weight)
            nn.init.zeros_(self.dit.head.head.bias)

    def encode_actions(
        self, actions: Actions, mask: Masks = None, drop: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """-> (features [B, F, dim], auxiliary router loss, routing stats). With MoAE, `actions` and
        `mask` are dicts keyed by modality holding raw aligned vectors (normalised inside).

        The action path runs outside autocast, in the parameters' own precision: it is a few small
        MLPs, and the normalisers, the router's softmax and the expert dispatch stay in float32 when
        the DiT trains in bf16."""
        if self.moae is not None and not isinstance(actions, Mapping):
            raise ShapeError(f"actions: this model uses MoAE; pass a dict keyed by modality {self.moae.names}")
        with torch.autocast(self.null_action.device.type, enabled=False):
            if self.moae is not None:
                out = self.moae(actions, mask)
                features, aux, stats = out.features, out.aux_loss, out.stats
            else:
                features = self._mlp_features(actions, mask)
                aux, stats = features.new_zeros(()), {}
        if not self.config.action.use_actions:
            drop = torch.ones(features.shape[0], dtype=torch.bool, device=features.device)
        if drop is not None:
            features = torch.where(drop[:, None, None], self.null_action.to(features.dtype), features)
        return features, aux, stats

    def action_features(self, actions: Actions, mask: Masks = None, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Action features [B, F, dim]; `drop` [B] bool replaces a sample's by the null feature."""
        return self.encode_actions(actions, mask, drop)[0]

    def no_action_features(self, batch: int, frames: int, device=None) -> torch.Tensor:
        """Features of frames that carry no action (all masked), e.g. the first latent frame."""
        dtype = self.null_action.dtype
        if self.moae is not None:
            return torch.zeros(batch, frames, self.config.dit.dim, device=device, dtype=dtype)
        zeros = torch.zeros(batch, frames, self.config.action.action_dim, device=device, dtype=dtype)
        return self._mlp_features(zeros, torch.zeros(batch, frames, device=device, dtype=dtype))

    def _mlp_features(self, actions, mask) -> torch.Tensor:
        if isinstance(actions, Mapping):
            raise ShapeError("actions: this model has one shared encoder; pass one tensor [B, F, action_dim]")
        a = self.config.action.action_dim
        if actions.ndim != 3 or actions.shape[-1] != a:
            raise ShapeError(f"actions: expected [B, F, {a}], got {tuple(actions.shape)}")
        if not bool(torch.isfinite(actions).all()):
            raise ShapeError("actions: contains NaN or Inf")
        if mask is None:
            mask = torch.ones(actions.shape[:2], device=actions.device)
        elif mask.shape != actions.shape[:2]:
            raise ShapeError(f"action mask: expected {tuple(actions.shape[:2])}, got {tuple(mask.shape)}")
        return self.action_encoder(actions, mask)

    def null_features(self, batch: int, frames: int) -> torch.Tensor:
        return self.null_action[None, None].expand(batch, frames, -1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, action_features: torch.Tensor | None, **kw):
        if self.config.dit.text_dim is not None and kw.get("context") is None:
            # A backbone with text cross-attention (Wan2.1's) and no prompt: every token attends to one
            # all-zero text token, so the cross-attention adds a learnable constant and the pretrained
            # weights load unchanged.
            kw["context"] = x.new_zeros(x.shape[0], 1, self.config.dit.text_dim)
        out = self.dit(x, timesteps, action_features, **kw)
        if self.action_flow is None and self.action_splat is None:
            return out
        # [latents, flow (2), J (2·r), S (2·s)] -> [latents, flow + J·a (, S·b)], a and b the frame's
        # action feature projected
        c = self.config.latent_channels + 2
        rank, splat = self.config.flow.action_flow_rank, self.config.flow.splat_rank
        latents, flow = out[:, : c - 2], out[:, c - 2 : c]
        if action_features is None:
            return out[:, :c] if not splat else torch.cat([out[:, :c], torch.zeros_like(flow)], dim=1)
        if rank:
            jacobian = out[:, c : c + 2 * rank].unflatten(1, (2, rank)).float()  # [B, 2, r, F, H, W]
            code = self.action_flow(action_features.to(self.action_flow.weight.dtype)).float()  # [B, F, r]
            if self.config.flow.action_flow_cumulative:  # the generated chunk is the last chunk_size frames
                n = min(self.config.history.chunk_size, code.shape[1])
                code = torch.cat([code[:, :-n], code[:, -n:].cumsum(dim=1)], dim=1)
            flow = flow + torch.einsum("btrfhw,bfr->btfhw", jacobian, code).to(out.dtype)
        if not splat:
            return torch.cat([latents, flow], dim=1)
        matrix = out[:, c + 2 * rank :].unflatten(1, (2, splat)).float()
        code = self.action_splat(action_features.to(self.action_splat.weight.dtype)).float()
        forward = torch.einsum("btrfhw,bfr->btfhw", matrix, code).to(out.dtype)
        return torch.cat([latents, flow, forward], dim=1)

    def adapter_parameter_names(self) -> list[str]:
        """ACT-Adapter fine-tuning set: self-attention, projectors and the action modules."""
        action = [
            n
            for n, _ in self.named_parameters()
            if n.startswith(("action_encoder.", "moae.", "null_action", "action_flow.", "action_splat."))
        ]
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
