"""AstraDiT: the Wan2.1 video DiT with Astra's changes for autoregressive denoising.

Read top to bottom: embeddings -> attention -> block -> head -> model.

Wan2.1 (Wan team, 2025): 3-D patch embedding (1, 2, 2), 3-D RoPE, sinusoidal time embedding with
6-way AdaLN modulation per block, self-attention with RMS-normed q/k, optional text cross-attention,
GELU-tanh FFN, modulated linear head. Module and parameter names follow Wan's original checkpoint
layout, so a Wan2.1 state dict loads key for key (see `wan_io`).

Astra (Zhu et al., 2025) changes:
- per-latent-frame timesteps: every latent frame carries its own noise level, broadcast into the
  AdaLN modulation of its tokens (history can be clean while the target chunk is noisy);
- block-causal attention over chunks of latent frames, or, in rollout, a per-layer KV cache of
  the history so that a denoising step only computes the new chunk;
- ACT-Adapter: an action feature per latent frame is added to the self-attention input of every
  block, and a `projector` Linear(dim, dim), initialised to the identity, follows self-attention.

Optional (`action_modulation`): the action feature also enters each frame's time embedding through a
zero-initialised Linear, so it modulates the AdaLN shift/scale/gate the way the timestep does.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from einops import rearrange
from torch import nn

from astra_core.config import DiTConfig, dit_preset
from astra_core.errors import ShapeError
from astra_core.model.kv_cache import KVCache, LayerKV

# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """[...] timesteps -> [..., dim] float32 embedding, cosines first (Wan's and diffusers' order)."""
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    args = timesteps.float()[..., None] * torch.exp(exponent)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channels of a head given to the (time, height, width) axes, as in Wan2.1."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def rope_frequencies(
    frame_positions: torch.Tensor, height: int, width: int, head_dim: int, theta: float
) -> torch.Tensor:
    """3-D rotary factors for tokens ordered (f h w): float32 [F*h*w, 1, head_dim/2, 2], the cosine and
    sine of each channel pair's angle (real arithmetic, which torch.compile can fuse; complex cannot).

    Angles are computed in float64 from the positions themselves, not looked up in a table, so
    temporal positions stay valid however long a rollout runs (Wan's table stops at 1024).
    """
    device = frame_positions.device
    angles = []
    for axis_dim, positions in zip(
        rope_split(head_dim),
        (frame_positions, torch.arange(height, device=device), torch.arange(width, device=device)),
    ):
        inv_freq = 1.0 / theta ** (torch.arange(0, axis_dim, 2, dtype=torch.float64, device=device) / axis_dim)
        angles.append(positions.to(torch.float64)[:, None] * inv_freq)
    f, h, w = len(frame_positions), height, width
    grid = torch.cat(
        [
            angles[0][:, None, None].expand(f, h, w, -1),
            angles[1][None, :, None].expand(f, h, w, -1),
            angles[2][None, None, :].expand(f, h, w, -1),
        ],
        dim=-1,
    ).reshape(f * h * w, 1, head_dim // 2)
    return torch.stack([grid.cos(), grid.sin()], dim=-1).float()


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs (a, b) of x [B, N, H, D] by the angles in freqs [N, 1, D/2, 2]
    (cos, sin): (a cos − b sin, a sin + b cos), in float32, returned in x's dtype."""
    pairs = x.float().unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    cos, sin = freqs[..., 0], freqs[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2).type_as(x)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, frames: int) -> torch.Tensor:
    """x [B, N, D] with N = frames * S; shift/scale [B, frames, D] broadcast over each frame's S tokens."""
    b, n, d = x.shape
    return (x.view(b, frames, n // frames, d) * (1 + scale[:, :, None]) + shift[:, :, None]).view(b, n, d)


def _gate(y: torch.Tensor, gate: torch.Tensor, frames: int) -> torch.Tensor:
    b, n, d = y.shape
    return (y.float().view(b, frames, n // frames, d) * gate[:, :, None]).view(b, n, d)


def _rms(norm: nn.RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """RMSNorm in the norm's own precision (float32 under autocast), result in x's dtype."""
    return norm(x.to(norm.weight.dtype)).to(x.dtype)


def _affine_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The cross-attention LayerNorm (or Identity) computed in float32, result in x's dtype."""
    if isinstance(norm, nn.LayerNorm):
        return F.layer_norm(x.float(), norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps).type_as(
            x
        )
    return x


def _layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps)


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        cache: LayerKV | None = None,
    ) -> torch.Tensor:
        """x [B, N, D] -> [B, N, D]; with a cache, keys/values of cached history are prepended."""
        heads = self.num_heads
        q = apply_rope(_rms(self.norm_q, self.q(x)).unflatten(-1, (heads, -1)), rope)  # [B, N, H, d]
        k = apply_rope(_rms(self.norm_k, self.k(x)).unflatten(-1, (heads, -1)), rope)
        v = self.v(x).unflatten(-1, (heads, -1))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, N, d]
        if cache is not None:
            k, v = cache.attend(k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.o(out.transpose(1, 2).flatten(2))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x [B, N, D], context [B, L, D] -> [B, N, D]."""
        heads = self.num_heads
        q = _rms(self.norm_q, self.q(x)).unflatten(-1, (heads, -1)).transpose(1, 2)
        k = _rms(self.norm_k, self.k(context)).unflatten(-1, (heads, -1)).transpose(1, 2)
        v = self.v(context).unflatten(-1, (heads, -1)).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.o(out.transpose(1, 2).flatten(2))


# --------------------------------------------------------------------------------------------
# Block and head
# --------------------------------------------------------------------------------------------


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        dim = cfg.dim
        self.eps = cfg.eps
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        self.self_attn = SelfAttention(dim, cfg.num_heads, cfg.eps)
        self.projector = nn.Linear(dim, dim) if cfg.use_projector else None
        if cfg.text_dim is not None:
            self.cross_attn = CrossAttention(dim, cfg.num_heads, cfg.eps)
            self.norm3 = nn.LayerNorm(dim, eps=cfg.eps) if cfg.cross_attn_norm else nn.Identity()
        else:
            self.cross_attn = None
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim))

    def forward(
        self,
        x: torch.Tensor,
        e: torch.Tensor,
        rope: torch.Tensor,
        action: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        cache: LayerKV | None = None,
    ) -> torch.Tensor:
        """x [B, N, D]; e [B, F, 6, D] per-frame modulation; action [B, F, D] or None."""
        frames = e.shape[1]
        shift, scale, gate, ffn_shift, ffn_scale, ffn_gate = (self.modulation[:, None] + e.float()).unbind(2)
        h = _modulate(_layer_norm(x, self.eps), shift, scale, frames)
        if action is not None:  # ACT-Adapter: action feature joins the self-attention input
            b, n, d = h.shape
            h = (h.view(b, frames, n // frames, d) + action.float()[:, :, None]).view(b, n, d)
        y = self.self_attn(h.type_as(x), rope, attn_mask=attn_mask, cache=cache)
        if self.projector is not None:
            y = self.projector(y)
        x = (x.float() + _gate(y, gate, frames)).type_as(x)
        if self.cross_attn is not None:
            x = x + self.cross_attn(_affine_norm(self.norm3, x), context)
        h = _modulate(_layer_norm(x, self.eps), ffn_shift, ffn_scale, frames)
        y = self.ffn(h.type_as(x))
        return (x.float() + _gate(y, ffn_gate, frames)).type_as(x)


class Head(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.eps = cfg.eps
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x [B, N, D], e [B, F, D] -> [B, N, out_dim * prod(patch)]."""
        shift, scale = (self.modulation[:, None] + e.float()[:, :, None]).unbind(2)
        h = _modulate(_layer_norm(x, self.eps), shift, scale, e.shape[1])
        return self.head(h.type_as(x))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def block_causal_mask(chunk_ids: torch.Tensor, tokens_per_frame: int, num_cached: int = 0) -> torch.Tensor:
    """Boolean [Nq, num_cached + Nq]: a token sees cached tokens and tokens of its own or earlier chunks."""
    token_chunks = chunk_ids.repeat_interleave(tokens_per_frame)
    mask = token_chunks[None, :] <= token_chunks[:, None]
    if num_cached:
        mask = torch.cat([mask.new_ones(mask.shape[0], num_cached), mask], dim=1)
    return mask


def compile_dit(dit: nn.Module, dynamic: bool | None = None) -> nn.Module:
    """torch.compile `dit` in place (inductor; parameter names unchanged, so checkpoints stay as they
    are). Each history length the model meets compiles once. Dynamo keeps at most
    `recompile_limit` compiled variants of one function for the whole process (8 by default), shared by
    every compiled model; past it, calls fall back to eager without an error. The limit is raised to 64
    here so that a rollout's growing history, or two compiled models in one process, stay compiled."""
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    dit.compile(dynamic=dynamic)
    return dit


class AstraDiT(nn.Module):
    """Wan2.1 DiT with per-frame timesteps, block-causal attention, a KV cache and the ACT-Adapter."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = cfg = config
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        if cfg.text_dim is not None:
            self.text_embedding = nn.Sequential(
                nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim)
            )
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.action_modulation = nn.Linear(dim, dim) if cfg.action_modulation else None
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        self.gradient_checkpointing = False  # recompute block activations in backward (saves memory)
        self.reset_adapter()

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> AstraDiT:
        """Build preset `name` (see `astra_core.config.DIT_PRESETS`); works under `torch.device("meta")`."""
        return cls(dit_preset(name, **overrides))

    @torch.no_grad()
    def reset_adapter(self) -> None:
        """Projectors to the identity and the action modulation to zero, so the adapted model starts
        equal to its backbone."""
        for block in self.blocks:
            if block.projector is not None and block.projector.weight.device.type != "meta":
                block.projector.weight.copy_(torch.eye(self.config.dim))
                block.projector.bias.zero_()
        if self.action_modulation is not None and self.action_modulation.weight.device.type != "meta":
            nn.init.zeros_(self.action_modulation.weight)
            nn.init.zeros_(self.action_modulation.bias)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        action_features: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        frame_positions: torch.Tensor | None = None,
        chunk_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Predict the flow velocity, or what stands for the clean latents (`prediction: data` or `edm`).

        x: latents [B, in_dim, F, H, W]; timesteps: [B] or [B, F] in [0, num_train_timesteps];
        action_features: [B, F, dim] or None; context: text [B, L, text_dim] (text models only);
        frame_positions: [F] temporal RoPE positions (default 0..F-1, or after the cached frames);
        chunk_ids: [F] non-decreasing chunk index per frame for block-causal attention
        (default: every frame its own chunk); kv_cache: cached history keys/values, which the
        new tokens attend to (and which they extend when the cache is in write mode).
        Returns [B, out_dim, F, H, W].
        """
        cfg = self.config
        b, _, f, hh, ww = self._check_inputs(x, timesteps, action_features, context)
        _, ph, pw = cfg.patch_size
        h, w = hh // ph, ww // pw
        if timesteps.ndim == 1:
            timesteps = timesteps[:, None].expand(b, f)

        tokens = rearrange(self.patch_embedding(x), "b d f h w -> b (f h w) d").contiguous()
        t_emb = sinusoidal_embedding(timesteps, cfg.freq_dim).to(self.time_embedding[0].weight.dtype)
        e = self.time_embedding(t_emb)  # [B, F, D]
        if self.action_modulation is not None and action_features is not None:
            e = e + self.action_modulation(action_features.to(e.dtype))
        e6 = self.time_projection(e).unflatten(-1, (6, cfg.dim))  # [B, F, 6, D]
        ctx = self.text_embedding(context) if context is not None else None

        if frame_positions is None:
            start = kv_cache.next_position if kv_cache is not None else 0
            frame_positions = torch.arange(start, start + f, device=x.device)
        rope = rope_frequencies(frame_positions.to(x.device), h, w, cfg.head_dim, cfg.rope_theta)
        attn_mask = self._attention_mask(chunk_ids, f, h * w, kv_cache, x.device)

        for i, block in enumerate(self.blocks):
            layer_cache = kv_cache.layer(i) if kv_cache is not None else None
            if self.gradient_checkpointing and torch.is_grad_enabled() and layer_cache is None:
                tokens = torch.utils.checkpoint.checkpoint(
                    block, tokens, e6, rope, action_features, ctx, attn_mask, None, use_reentrant=False
                )
            else:
                tokens = block(tokens, e6, rope, action_features, ctx, attn_mask, layer_cache)
        if kv_cache is not None:
            kv_cache.finish_pass(frame_positions, h * w)

        out = self.head(tokens, e)  # [B, N, C * ph * pw]
        return rearrange(out, "b (f h w) (p q c) -> b c f (h p) (w q)", f=f, h=h, w=w, p=ph, q=pw)

    def _attention_mask(
        self,
        chunk_ids: torch.Tensor | None,
        frames: int,
        tokens_per_frame: int,
        kv_cache: KVCache | None,
        device,
    ) -> torch.Tensor | None:
        if self.config.attention == "full":
            return None
        if chunk_ids is None:
            if kv_cache is not None:  # new tokens form one chunk that sees all cached history
                return None
            chunk_ids = torch.arange(frames, device=device)
        if chunk_ids.shape != (frames,):
            raise ShapeError(f"chunk_ids: expected shape ({frames},), got {tuple(chunk_ids.shape)}")
        if bool((chunk_ids.diff() < 0).any()):
            raise ShapeError("chunk_ids must be non-decreasing along the frames")
        if bool((chunk_ids == chunk_ids[0]).all()):
            return None  # a single chunk attends to itself (and to the cache) in full
        cached = kv_cache.num_tokens if kv_cache is not None else 0
        return block_causal_mask(chunk_ids.to(device), tokens_per_frame, cached)

    def _check_inputs(self, x, timesteps, action_features, context) -> tuple[int, int, int, int, int]:
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_dim:
            raise ShapeError(f"x: expected latents [B, {cfg.in_dim}, F, H, W], got {tuple(x.shape)}")
        b, _, f, hh, ww = x.shape
        _, ph, pw = cfg.patch_size
        if hh % ph or ww % pw:
            raise ShapeError(f"x: height {hh} and width {ww} must be multiples of the patch size {(ph, pw)}")
        if timesteps.shape not in ((b,), (b, f)):
            raise ShapeError(f"timesteps: expected shape ({b},) or ({b}, {f}), got {tuple(timesteps.shape)}")
        values = not torch.compiler.is_compiling()  # value checks wait on the data; a compiled graph skips them
        if values and not bool(torch.isfinite(timesteps).all()):
            raise ShapeError("timesteps: contains NaN or Inf")
        if action_features is not None:
            if action_features.shape != (b, f, cfg.dim):
                raise ShapeError(f"action_features: expected [{b}, {f}, {cfg.dim}], got {tuple(action_features.shape)}")
            if values and not bool(torch.isfinite(action_features).all()):
                raise ShapeError("action_features: contains NaN or Inf")
        if (context is None) != (cfg.text_dim is None):
            need = f"[B, L, {cfg.text_dim}]" if cfg.text_dim else "None (text_dim is None)"
            raise ShapeError(f"context: this model expects {need}")
        if context is not None and (context.ndim != 3 or context.shape[0] != b or context.shape[2] != cfg.text_dim):
            raise ShapeError(f"context: expected [{b}, L, {cfg.text_dim}], got {tuple(context.shape)}")
        return b, cfg.in_dim, f, hh, ww

    # ---- parameter groups -------------------------------------------------------------------

    def adapter_parameter_names(self) -> list[str]:
        """Names trained by ACT-Adapter fine-tuning: self-attention, projectors, the action modulation."""
        return [n for n, _ in self.named_parameters() if ".self_attn." in n or is_astra_addition(n)]

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict without Astra's additions: exactly Wan2.1's original key layout."""
        return {k: v for k, v in self.state_dict().items() if not is_astra_addition(k)}

    def count_parameters(self, backbone_only: bool = False) -> int:
        return sum(p.numel() for n, p in self.named_parameters() if not (backbone_only and is_astra_addition(n)))


def is_astra_addition(key: str) -> bool:
    """Whether a state-dict key belongs to Astra's additions rather than to the Wan2.1 backbone."""
    return ".projector." in key or key.startswith("action_modulation.")
