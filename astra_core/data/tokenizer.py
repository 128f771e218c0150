"""Video tokenizers: frames [B, 3, T, H, W] in [-1, 1] <-> latents [B, C, F, h, w].

Every tokenizer states its temporal factor (raw frames per latent frame after the first, which is
encoded alone), its spatial factor and its latent channels; actions are aligned with the temporal
factor. Three are provided: a lossless pixel space-to-depth tokenizer, a small trainable causal video
VAE (Wan-style: first frame alone, then 4 frames per latent, 8x spatial) and an adapter to diffusers'
`AutoencoderKLWan` (extra `wan`).
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

import torch
from einops import rearrange
from torch import nn

from astra_core.errors import ConfigError, ShapeError


@runtime_checkable
class VideoTokenizer(Protocol):
    temporal_factor: int
    spatial_factor: int
    channels: int

    def encode(self, frames: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> dict[str, Any]: ...


def check_frames(frames: torch.Tensor, tokenizer: VideoTokenizer) -> None:
    if frames.ndim != 5 or frames.shape[1] != 3:
        raise ShapeError(f"frames: expected [B, 3, T, H, W], got {tuple(frames.shape)}")
    t, h, w = frames.shape[2:]
    s, f = tokenizer.spatial_factor, tokenizer.temporal_factor
    if h % s or w % s:
        raise ShapeError(f"frames: height {h} and width {w} must be multiples of {s}")
    if (t - 1) % f:
        raise ShapeError(f"frames: {t} frames; this tokenizer needs 1 + {f}·k frames")


def latent_frames(num_frames: int, temporal_factor: int) -> int:
    return 1 + (num_frames - 1) // temporal_factor


class PixelTokenizer(nn.Module):
    """Lossless space-to-depth: each p x p patch of RGB pixels becomes 3·p² channels."""

    temporal_factor = 1

    def __init__(self, patch: int = 4):
        super().__init__()
        self.spatial_factor = patch
        self.channels = 3 * patch * patch

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        check_frames(frames, self)
        p = self.spatial_factor
        return rearrange(frames, "b c t (h p) (w q) -> b (c p q) t h w", p=p, q=p)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        p = self.spatial_factor
        return rearrange(latents, "b (c p q) t h w -> b c t (h p) (w q)", p=p, q=p)

    def describe(self) -> dict[str, Any]:
        return {"kind": "pixel", "patch": self.spatial_factor}


# ------------------------------------------------------------------------------------------------
# A small causal video VAE
# ------------------------------------------------------------------------------------------------


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 4, stride=2, padding=1),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
    )


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
    )


class CausalVideoVAE(nn.Module):
    """First frame alone, then every 4 frames to one latent; 8x spatial; causal in time.

    Frames are embedded one by one by a 2-D conv encoder (8x down). Latent 0 comes from frame 0;
    latent i ≥ 1 from frames 4i−3 … 4i (their features stacked on channels) together with latent
    i−1's features, so no latent sees a later frame. The decoder mirrors this. Trained as an
    autoencoder with a small KL term on a diagonal Gaussian posterior (its mean is the latent).
    """

    def __init__(self, channels: int = 16, width: int = 64, temporal_factor: int = 4, kl_weight: float = 1e-6):
        super().__init__()
        self.channels, self.width = channels, width
        self.temporal_factor, self.spatial_factor = temporal_factor, 8
        self.kl_weight = kl_weight
        w = width
        self.frame_encoder = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), _down(w, w), _down(w, 2 * w), _down(2 * w, 2 * w)
        )
        self.first_posterior = nn.Conv2d(2 * w, 2 * channels, 3, padding=1)
        self.group_posterior = nn.Sequential(
            nn.Conv2d(2 * w * temporal_factor + 2 * w, 4 * w, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(4 * w, 2 * channels, 3, padding=1),
        )
        self.first_expand = nn.Conv2d(channels, 2 * w, 3, padding=1)
        self.group_expand = nn.Sequential(
            nn.Conv2d(2 * channels, 4 * w, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(4 * w, 2 * w * temporal_factor, 3, padding=1),
        )
        self.frame_decoder = nn.Sequential(_up(2 * w, 2 * w), _up(2 * w, w), _up(w, w), nn.Conv2d(w, 3, 3, padding=1))

    def posterior(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [B, 3, 1 + 4k, H, W] -> (mean, logvar) each [B, C, 1 + k, H/8, W/8]."""
        check_frames(frames, self)
        b, _, t = frames.shape[:3]
        feats = self.frame_encoder(rearrange(frames, "b c t h w -> (b t) c h w"))
        feats = rearrange(feats, "(b t) c h w -> b t c h w", b=b)
        out = [self.first_posterior(feats[:, 0])]
        prev = feats[:, 0]
        for i in range(1, latent_frames(t, self.temporal_factor)):
            group = feats[:, self.temporal_factor * (i - 1) + 1 : self.temporal_factor * i + 1]
            out.append(self.group_posterior(torch.cat([rearrange(group, "b t c h w -> b (t c) h w"), prev], 1)))
            prev = group[:, -1]
        moments = torch.stack(out, dim=2)
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-20, 10)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.posterior(frames)[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, C, 1 + k, h, w] -> frames [B, 3, 1 + 4k, 8h, 8w] in [-1, 1]."""
        if latents.ndim != 5 or latents.shape[1] != self.channels:
            raise ShapeError(f"latents: expected [B, {self.channels}, F, h, w], got {tuple(latents.shape)}")
        b, _, f = latents.shape[:3]
        feats = [self.first_expand(latents[:, :, 0])]
        for i in range(1, f):
            group = self.group_expand(torch.cat([latents[:, :, i], latents[:, :, i - 1]], 1))
            feats.extend(group.chunk(self.temporal_factor, dim=1))
        stacked = torch.stack(feats, dim=1)  # [B, T, 2w, h, w]
        frames = self.frame_decoder(rearrange(stacked, "b t c h w -> (b t) c h w"))
        return rearrange(frames, "(b t) c h w -> b c t h w", b=b).tanh()

    def loss(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        mean, logvar = self.posterior(frames)
        noise = torch.randn(mean.shape, generator=generator).to(mean)
        recon = self.decode(mean + (0.5 * logvar).exp() * noise)
        mse = (recon - frames).pow(2).mean()
        l1 = (recon - frames).abs().mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = l1 + mse + self.kl_weight * kl
        mse_value = float(mse.detach())
        return loss, {
            "loss": float(loss.detach()),
            "mse": mse_value,
            "kl": float(kl.detach()),
            "psnr": psnr_from_mse(mse_value),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "causal_vae",
            "channels": self.channels,
            "width": self.width,
            "temporal_factor": self.temporal_factor,
        }


def psnr_from_mse(mse: float, data_range: float = 2.0) -> float:
    """PSNR in dB for frames in [-1, 1] (peak-to-peak 2)."""
    import math

    return 10 * math.log10(data_range**2 / max(mse, 1e-12))


# ------------------------------------------------------------------------------------------------
# diffusers' Wan VAE
# ------------------------------------------------------------------------------------------------


class WanVAETokenizer(nn.Module):
    """Adapter to diffusers' `AutoencoderKLWan` (extra `wan`): latents are the posterior mean,
    standardised with the VAE config's per-channel `latents_mean` and `latents_std`."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae
        cfg = vae.config
        self.channels = cfg.z_dim
        self.temporal_factor = 2 ** sum(cfg.temperal_downsample)
        self.spatial_factor = 2 ** (len(cfg.dim_mult) - 1)
        self.register_buffer("mean", torch.tensor(cfg.latents_mean[: cfg.z_dim]).view(1, -1, 1, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.latents_std[: cfg.z_dim]).view(1, -1, 1, 1, 1))

    @classmethod
    def from_config(cls, **config: Any) -> WanVAETokenizer:
        try:
            from diffusers import AutoencoderKLWan
        except ImportError:
            raise ConfigError("the Wan VAE needs diffusers: pip install 'astra-world[wan]'") from None
        return cls(AutoencoderKLWan(**config))

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        check_frames(frames, self)
        return (self.vae.encode(frames).latent_dist.mode() - self.mean) / self.std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents * self.std + self.mean).sample.clamp(-1, 1)

    def describe(self) -> dict[str, Any]:
        # the VAE's own config (diffusers' bookkeeping keys left out), so a checkpoint rebuilds it
        config = {k: v for k, v in dict(self.vae.config).items() if not k.startswith("_")}
        return {"kind": "wan_vae", "channels": self.channels, "config": json.loads(json.dumps(config))}


def build_tokenizer(spec: dict[str, Any]) -> nn.Module:
    """A tokenizer from its `describe()` dictionary (weights are loaded separately)."""
    kind = spec.get("kind")
    if kind == "pixel":
        return PixelTokenizer(spec.get("patch", 4))
    if kind == "causal_vae":
        return CausalVideoVAE(spec["channels"], spec["width"], spec.get("temporal_factor", 4))
    if kind == "wan_vae":
        if "config" not in spec:
            raise ConfigError("tokenizer: a wan_vae entry without the VAE's config (written by version 0.4 or older)")
        return WanVAETokenizer.from_config(**spec["config"])
    raise ConfigError(f"tokenizer: unknown kind {kind!r} (pixel, causal_vae, wan_vae)")
