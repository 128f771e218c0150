"""Streaming rollout: `LatentWorldModel.reset(context)` then `step(actions)` -> the next latent chunk.

Each step samples a chunk by flow matching (Euler or Heun), conditioned on the history window (the
first chunk as a sink plus the most recent `window` latent frames). With the KV cache, history keys
and values are computed once per chunk — by one extra forward pass over the finished chunk at its
clean timestep — and every denoising step computes only the new chunk's tokens. Action-free guidance
batches the conditional and action-free branches in one forward; since history tokens carry action
features, the two branches keep separate cache rows (batch rows [0, B) and [B, 2B)).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from astra_core.errors import AstraError, ConfigError, ShapeError
from astra_core.model.actions import Actions, AstraNet, Masks, action_shape, map_actions
from astra_core.model.flow import RectifiedFlow, WarpAnchor
from astra_core.model.kv_cache import KVCache
from astra_core.model.memory import segments_to_evict, with_last_frame_channels
from astra_core.model.sampling import SAMPLERS, action_free_guidance


@dataclass
class _Chunk:
    """A history chunk kept for the uncached path: latents and the features of both branches."""

    latents: torch.Tensor  # [B, C, f, H, W]
    features: torch.Tensor  # [B or 2B, f, dim]
    positions: torch.Tensor  # [f]
    sink: bool


class LatentWorldModel:
    """A rollout session over latents. The toy-world layer adds pixels, tokenizer and normaliser."""

    def __init__(
        self,
        net: AstraNet,
        guidance_scale: float | None = None,
        sampler: str | None = None,
        num_steps: int | None = None,
        use_kv_cache: bool = True,
        seed: int = 0,
        warp_residual: float | None = None,
        warp_anchor: bool | None = None,
    ):
        cfg = net.config
        self.net = net.eval()
        self.flow = RectifiedFlow(cfg.flow)
        self.history_cfg = cfg.history
        self.guidance_scale = cfg.guidance.scale if guidance_scale is None else float(guidance_scale)
        if not (math.isfinite(self.guidance_scale) and self.guidance_scale >= 0):
            raise ConfigError(f"guidance_scale={guidance_scale}: must be a finite number, 0 or more (1.0: no guidance)")
        if self.guidance_scale != 1.0 and cfg.guidance.action_dropout == 0.0:
            raise ConfigError(
                f"guidance_scale={self.guidance_scale}: this model was trained without action dropout "
                "(model.guidance.action_dropout 0), so it has no action-free prediction to guide from; use 1.0"
            )
        sampler = sampler or cfg.sampler.name
        if sampler not in SAMPLERS:
            raise ShapeError(f"sampler: unknown {sampler!r}; choose one of {sorted(SAMPLERS)}")
        self.sampler = SAMPLERS[sampler]
        if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1):
            raise ConfigError(f"num_steps={num_steps!r}: sampling steps must be a whole number of at least 1")
        self.num_steps = num_steps or cfg.sampler.num_steps
        residual = cfg.sampler.warp_residual if warp_residual is None else warp_residual
        if isinstance(residual, bool) or not isinstance(residual, (int, float)) or not 0.0 <= residual <= 1.0:
            raise ConfigError(f"warp_residual={residual!r}: must be a number in [0, 1] (1: the residual as trained)")
        self.warp_residual = float(residual)
        if self.warp_residual != 1.0 and cfg.flow.prediction != "warp":
            raise ConfigError(
                f"warp_residual={self.warp_residual:g}: this model predicts {cfg.flow.prediction!r}, not 'warp'; "
                "it has no residual to weigh"
            )
        anchor = cfg.sampler.warp_anchor if warp_anchor is None else warp_anchor
        if not isinstance(anchor, bool):
            raise ConfigError(f"warp_anchor={anchor!r}: must be True or False")
        if anchor and (cfg.flow.prediction != "warp" or cfg.flow.warp_padding != "border"):
            raise ConfigError(
                f"warp_anchor=True: this model predicts {cfg.flow.prediction!r} with warp_padding "
                f"{cfg.flow.warp_padding!r}; anchoring needs a 'warp' prediction with the border repeated"
            )
        self.warp_anchor = anchor
        self._anchor: WarpAnchor | None = None
        self._following: WarpAnchor | None = None  # the anchor of the last estimate, set by `_velocity`
        self.use_kv_cache = use_kv_cache
        self.seed = seed
        self._cache: KVCache | None = None
        self._chunks: list[_Chunk] = []
        self._next_position = 0
        self._latent_shape: tuple[int, ...] | None = None
        self._last_frame: torch.Tensor | None = None  # [B, C, 1, H, W]: the base of a residual target

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The DiT's dtype: what its inputs are cast to (the action path may stay in float32)."""
        return next(self.net.dit.parameters()).dtype

    @property
    def action_dtype(self) -> torch.dtype:
        """The action path's dtype (float32 unless the whole network was cast): what actions are cast to."""
        return self.net.null_action.dtype

    @property
    def frames_generated(self) -> int:
        """Latent frames so far (context included); also the next temporal position."""
        return self._next_position

    @property
    def cache(self) -> KVCache | None:
        return self._cache

    # ---- public API -------------------------------------------------------------------------

    @torch.no_grad()
    def reset(
        self,
        context: torch.Tensor,
        actions: torch.Tensor | None = None,
        action_mask: torch.Tensor | None = None,
    ) -> None:
        """Start a rollout from context latents [B, C, Fc, H, W] (the sink chunk).

        `actions` [B, Fc, A] default to zeros with mask 0 (the first latent frame has no action)."""
        dit_cfg = self.net.config.dit
        channels = self.net.config.latent_channels
        if context.ndim != 5 or context.shape[1] != channels:
            raise ShapeError(f"context: expected latents [B, {channels}, F, H, W], got {tuple(context.shape)}")
        if not bool(torch.isfinite(context).all()):
            raise ShapeError("context: contains NaN or Inf")
        b, c, fc, h, w = context.shape
        if actions is not None and action_shape(actions) != (b, fc):
            raise ShapeError(
                f"actions: expected [{b}, {fc}, A] (batch, context frames, action_dim) for a context of {fc} "
                f"latent frames, got {action_shape(actions)}"
            )
        self._latent_shape = (b, c, h, w)
        self._generator = torch.Generator().manual_seed(self.seed)
        self._cache = KVCache(dit_cfg.num_layers) if self.use_kv_cache else None
        self._chunks = []
        self._next_position = 0
        if actions is None:
            features = self._with_free_branch(self.net.no_action_features(b, fc, self.device).to(self.dtype), fc)
        else:
            features = self._features(actions, action_mask, fc)
        self._commit(context.to(self.device), features, sink=True)

    @torch.no_grad()
    def step(self, actions: Actions, action_mask: Masks = None) -> torch.Tensor:
        """Generate the next chunk from actions [B, chunk_size, A] -> float32 latents [B, C, chunk_size, H, W]."""
        if self._latent_shape is None:
            raise AstraError("step: call reset(context) before step(actions)")
        b, c, h, w = self._latent_shape
        f = self.history_cfg.chunk_size
        if action_shape(actions) != (b, f):
            raise ShapeError(
                f"actions: expected [{b}, {f}, A] (batch, chunk_size, action_dim), got {action_shape(actions)}"
            )
        features = self._features(actions, action_mask, f)
        positions = torch.arange(self._next_position, self._next_position + f, device=self.device)
        noise = torch.randn((b, c, f, h, w), generator=self._generator).to(self.device)
        sigmas = self.flow.inference_sigmas(self.num_steps, device=self.device)

        def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return self._velocity(x, sigma, features, positions)

        latents = self.flow.from_target(self.sampler(velocity, noise, sigmas), self._last_frame)
        following = self._following if self._anchor is not None else None  # the last step's: these frames'
        self._commit(latents, features, sink=False)
        if following is not None:
            self._anchor = following
        return latents

    @torch.no_grad()
    def observe(self, latents: torch.Tensor, actions: Actions, action_mask: Masks = None) -> None:
        """Append a known chunk [B, C, chunk_size, H, W] to the history, with the actions that led into
        it, instead of generating one: teacher forcing, or frames that arrived from the real world."""
        if self._latent_shape is None:
            raise AstraError("observe: call reset(context) before observe(latents, actions)")
        b, c, h, w = self._latent_shape
        f = self.history_cfg.chunk_size
        if latents.ndim != 5 or (latents.shape[0], latents.shape[1], latents.shape[3], latents.shape[4]) != (
            b,
            c,
            h,
            w,
        ):
            raise ShapeError(f"latents: expected [{b}, {c}, {f}, {h}, {w}], got {tuple(latents.shape)}")
        if latents.shape[2] != f or action_shape(actions) != (b, f):
            raise ShapeError(
                f"observe: a chunk is {f} latent frames with one action each; got latents of "
                f"{latents.shape[2]} frames and actions {action_shape(actions)}"
            )
        if not bool(torch.isfinite(latents).all()):
            raise ShapeError("latents: contains NaN or Inf")
        self._commit(latents.to(self.device), self._features(actions, action_mask, f), sink=False)

    def fork(self) -> LatentWorldModel:
        """An independent copy of this session (history, cache, random state) sharing the network:
        try other actions from the same state without disturbing this one."""
        clone = copy.copy(self)
        clone._cache = copy.deepcopy(self._cache)
        clone._chunks = list(self._chunks)
        if self._latent_shape is not None:
            clone._generator = torch.Generator().set_state(self._generator.get_state())
        return clone

    # ---- internals --------------------------------------------------------------------------

    def _features(self, actions: Actions, mask: Masks, frames: int) -> torch.Tensor:
        """Action features [B, f, dim], with the action-free branch's stacked below when guided."""
        actions = map_actions(actions, lambda a: a.to(self.device, self.action_dtype))
        mask = map_actions(mask, lambda m: m.to(self.device)) if mask is not None else None
        return self._with_free_branch(self.net.action_features(actions, mask).to(self.dtype), frames)

    def _with_free_branch(self, cond: torch.Tensor, frames: int) -> torch.Tensor:
        if not self.guided:
            return cond
        return torch.cat([cond, self.net.null_features(cond.shape[0], frames).to(cond.dtype)], dim=0)

    def _branches(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input: in its dtype, and twice (conditional, action-free) when guided."""
        x = x.to(self.dtype)
        return torch.cat([x, x], dim=0) if self.guided else x

    def _inputs(self, latents: torch.Tensor, generated: bool) -> torch.Tensor:
        """The model's input for latents [B, C, f, H, W]: with `last_frame_channels`, the last history frame
        beside generated frames and zeros beside history frames; then `_branches`."""
        if self.history_cfg.last_frame_channels:
            base = self._last_frame if generated else torch.zeros_like(latents[:, :, :1])
            latents = with_last_frame_channels(latents, base, 0 if generated else latents.shape[2])
        return self._branches(latents)

    def _velocity(self, x, sigma, features, positions) -> torch.Tensor:
        xin = self._inputs(x, generated=True)
        bb, f = xin.shape[0], xin.shape[2]
        t = self.flow.timesteps(sigma).expand(bb, f)
        if self._cache is not None:
            v = self.net(xin, t, features, frame_positions=positions, kv_cache=self._cache)
        else:
            v = self._velocity_recompute(xin, t, features, positions)
        out = v.float()  # the sampler integrates in float32 whatever the model's dtype
        if self.guided:  # mixes the raw outputs: for data and delta that is mixing the x̂₀ (the weights sum to 1);
            # for warp it extrapolates the flow and the residual
            out = action_free_guidance(*out.chunk(2, dim=0), self.guidance_scale)
        if self._anchor is not None:  # x̂₀ read through the composed flow; (x − x̂₀)/σ as for any warp
            x0, self._following = self.flow.anchored(out, self._anchor, self.warp_residual)
            return (x.float() - x0) / sigma.float()
        return self.flow.velocity(
            out, x.float(), sigma, floor=False, last_frame=self._last_frame, residual_weight=self.warp_residual
        )

    def _velocity_recompute(self, xin, t, features, positions) -> torch.Tensor:
        """Uncached: run history + new chunk through block-causal attention every step."""
        chunks = self._chunks
        hist = self._inputs(torch.cat([ch.latents for ch in chunks], dim=2), generated=False)
        x = torch.cat([hist, xin], dim=2)
        f_hist = hist.shape[2]
        timesteps = torch.cat([t.new_zeros(t.shape[0], f_hist), t], dim=1)
        feats = torch.cat([ch.features for ch in chunks] + [features], dim=1)
        pos = torch.cat([ch.positions for ch in chunks] + [positions])
        ids = torch.cat(
            [torch.full((ch.latents.shape[2],), i) for i, ch in enumerate(chunks)]
            + [torch.full((xin.shape[2],), len(chunks))]
        ).to(x.device)
        v = self.net(x, timesteps, feats, frame_positions=pos, chunk_ids=ids)
        return v[:, :, f_hist:]

    def _commit(self, latents: torch.Tensor, features: torch.Tensor, sink: bool) -> None:
        """Append a finished chunk to the history; with the cache, one forward at timestep 0."""
        f = latents.shape[2]
        positions = torch.arange(self._next_position, self._next_position + f, device=self.device)
        self._next_position += f
        self._last_frame = latents[:, :, -1:].float()
        if self.warp_anchor:  # a known frame (the context, an observed chunk) anchors afresh; `step` overrides
            self._anchor = WarpAnchor.start(self._last_frame, self.flow.config.warp_unshuffle)
        window = self.history_cfg.window
        if self._cache is not None:
            xin = self._inputs(latents, generated=False)
            t = torch.zeros(xin.shape[0], f, device=self.device)
            with self._cache.writing(sink=sink):
                self.net(xin, t, features, frame_positions=positions, kv_cache=self._cache)
            self._cache.evict(window)
            return
        self._chunks.append(_Chunk(latents, features, positions, sink))
        drop = segments_to_evict([ch.latents.shape[2] for ch in self._chunks], [ch.sink for ch in self._chunks], window)
        self._chunks = [ch for i, ch in enumerate(self._chunks) if i not in drop]
