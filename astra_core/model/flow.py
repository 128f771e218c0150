"""Rectified flow matching, the objective of Wan2.1 and Astra.

x_σ = (1 − σ)·x₀ + σ·ε with ε ~ N(0, I); the network predicts v = ε − x₀; σ = 1 is pure noise and
σ = 0 clean data. The DiT sees t = σ·T with T = `num_train_timesteps`. The network outputs v itself;
with `prediction: data`, the clean sample; with `prediction: edm`, the clean sample through a σ-dependent
skip from its input (`preconditioned`); with `prediction: delta`, the clean sample's change from the last
history frame. `velocity` derives v from any of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from einops import rearrange

from astra_core.config import FlowConfig
from astra_core.model.memory import BatchDraws


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Noise levels (0-d or [B]) shaped to broadcast against `like` [B, ...]."""
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def cells_to_pixels(field: torch.Tensor, unshuffle: int) -> torch.Tensor:
    """A field of one vector per latent cell [B, 2, f, H, W] -> one per fine pixel [B·f, 2, H·p, W·p],
    upsampled bilinearly (values unchanged: still in latent cells)."""
    field = rearrange(field, "b two f h w -> (b f) two h w")
    if unshuffle > 1:
        field = F.interpolate(field, scale_factor=unshuffle, mode="bilinear", align_corners=False)
    return field


def _cubic_weights(t: torch.Tensor, a: float) -> list[torch.Tensor]:
    """The four weights of cubic convolution (Keys, parameter `a`) for the taps at −1, 0, 1, 2 from
    the sample's integer part, `t` its fraction in [0, 1)."""

    def near(s):  # |s| <= 1
        return ((a + 2) * s - (a + 3)) * s * s + 1

    def far(s):  # 1 < |s| < 2
        return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def catmull_rom_sample(images: torch.Tensor, x: torch.Tensor, y: torch.Tensor, padding: str = "border") -> torch.Tensor:
    """Sample images [N, C, H, W] at pixel positions x, y [N, H', W'] (pixel centres at integers) by
    Catmull–Rom cubic convolution (Keys' kernel with a = −0.5), the border repeating outside (`padding`
    "border") or zeros there ("zeros").

    `grid_sample`'s bicubic mode uses a = −0.75, whose gain exceeds 1 at middle frequencies (1.03 at 0.3
    of Nyquist for a half-pixel shift): once it is harmless, but a rollout warps each frame from the one
    before, and over 48 warps that gain grows into ringing, 15 times the energy at that frequency
    (`bench/resampling_detail.py`). With a = −0.5 the gain stays at or below 1: repeated warps blur a
    little instead of ringing."""
    n, c, h, w = images.shape
    x0, y0 = x.floor(), y.floor()
    wx, wy = _cubic_weights(x - x0, -0.5), _cubic_weights(y - y0, -0.5)
    x0, y0 = x0.long(), y0.long()
    flat = images.reshape(n, c, h * w)
    out = images.new_zeros(n, c, *x.shape[1:])
    for j in range(4):
        ty = y0 + (j - 1)
        rows = ty.clamp(0, h - 1) * w
        for i in range(4):
            tx = x0 + (i - 1)
            index = (rows + tx.clamp(0, w - 1)).reshape(n, 1, -1).expand(-1, c, -1)
            taps = flat.gather(2, index).reshape(out.shape)
            weight = wy[j] * wx[i]
            if padding == "zeros":
                weight = weight * ((tx >= 0) & (tx < w) & (ty >= 0) & (ty < h))
            out = out + weight.unsqueeze(1).to(images.dtype) * taps
    return out


def warp(
    latents: torch.Tensor, flow: torch.Tensor, unshuffle: int = 1, mode: str = "bilinear", padding: str = "border"
) -> torch.Tensor:
    """Backward-warp latents [B, C, f, H, W] by a flow [B, 2, f, H, W] (x right, y down, in latent cells):
    each output position takes the bilinear sample of `latents` at its position plus the flow, the
    border repeating outside (`padding` "border") or zeros there ("zeros"). With `unshuffle` p > 1 the
    latents are a space-to-depth of (C/p²)-channel images p times finer (the pixel tokenizer's layout,
    channels ordered (c p q)): those images are warped at their own resolution, by the flow upsampled
    bilinearly, so a shift keeps pixel detail.
    A flow of 2·p² channels [B, 2·p², f, H, W] (ordered (two p q)) gives every fine pixel its own
    vector instead, still in latent cells."""
    b, c, f, h, w = latents.shape
    p = unshuffle
    images = rearrange(latents, "b (c p q) f h w -> (b f) c (h p) (w q)", p=p, q=p)
    if flow.shape[1] == 2:
        flow = cells_to_pixels(flow, p)
    elif flow.shape[1] == 2 * p * p:
        flow = rearrange(flow, "b (two p q) f h w -> (b f) two (h p) (w q)", p=p, q=p)
    else:
        raise ValueError(f"warp: a flow of {flow.shape[1]} channels; expected 2 or 2·{p}² = {2 * p * p}")
    xs, ys = _pixel_grid(h * p, w * p, flow)
    warped = sample_at(images, xs + flow[:, 0] * p, ys + flow[:, 1] * p, mode, padding)
    return rearrange(warped, "(b f) c (h p) (w q) -> b (c p q) f h w", b=b, p=p, q=p)


def _pixel_grid(hh: int, ww: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates x [1, 1, ww] and y [1, hh, 1]."""
    xs = torch.arange(ww, device=like.device, dtype=like.dtype)[None, None, :]
    ys = torch.arange(hh, device=like.device, dtype=like.dtype)[None, :, None]
    return xs, ys


def sample_at(images: torch.Tensor, x: torch.Tensor, y: torch.Tensor, mode: str, padding: str = "border"):
    """images [N, C, H, W] sampled at pixel positions x, y [N, H', W'] (pixel centres at integers)."""
    if mode == "catmull_rom":
        return catmull_rom_sample(images, x, y, padding)
    hh, ww = images.shape[-2:]
    grid = torch.stack([(2 * x + 1) / ww - 1, (2 * y + 1) / hh - 1], dim=-1)  # align_corners=False
    return F.grid_sample(images, grid, mode=mode, padding_mode=padding, align_corners=False)


ANCHOR_JUMP = 2.0  # pixels: neighbours whose composed offsets differ by more have torn apart
ANCHOR_TORN_SHARE = 0.01  # the share of torn pixels above which an anchored rollout starts again


@dataclass(frozen=True)
class WarpAnchor:
    """Where a rollout's last frame came from (`sampler.warp_anchor`): `frame` [B, C, 1, H, W], a frame
    of latents the rollout started from or last started again from; `disp` [B, 2, H·p, W·p], for every
    fine pixel of the last frame, where in `frame` it was read (an offset in fine pixels); `residual`
    [B, C, 1, H, W], what the residuals added on top, carried along. The last frame is `frame` read at
    `disp` plus `residual`; the next frame reads `frame` once through the composed flow instead of
    resampling the last frame, so its detail is resampled once, not once per frame."""

    frame: torch.Tensor
    disp: torch.Tensor
    residual: torch.Tensor

    @classmethod
    def start(cls, frame: torch.Tensor, unshuffle: int) -> WarpAnchor:
        """A fresh anchor at `frame` [B, C, 1, H, W]: every pixel read from its own place."""
        b, _, _, h, w = frame.shape
        frame = frame.float()
        return cls(frame, frame.new_zeros(b, 2, h * unshuffle, w * unshuffle), torch.zeros_like(frame))


def _torn(disp: torch.Tensor, jump: float, share: float) -> torch.Tensor:
    """[B] bool: whether neighbouring pixels of `disp` [B, 2, H, W] read more than `jump` pixels apart
    on more than `share` of the frame (there interpolating the offsets would sweep across the frame)."""
    spread = F.max_pool2d(disp, 2, 1) + F.max_pool2d(-disp, 2, 1)
    return (spread.amax(dim=1) > jump).float().mean(dim=(1, 2)) > share


def reverse_motion(motion: torch.Tensor, depth: float = 4.0) -> torch.Tensor:
    """The backward flow [N, 2, H, W] that carries every pixel of a frame forward by `motion` [N, 2, H, W]
    (x right, y down, in pixels): each pixel's motion is splatted bilinearly to where it lands, and a pixel
    reads its new value from where what lands on it came from. Where motions meet, each counts
    e^(depth·|motion|), so what moves covers what stands still. Where less than a whole pixel lands
    (behind a moving part), the rest reads from one motion further back, what the part uncovers: a
    convex part moved by m leaves pixels whose point −m lay outside it. Sampling the frame once through
    this flow moves its parts without splatting their colours, so nothing blurs that does not move."""
    n, _, hh, ww = motion.shape
    motion = motion.float()
    weight = torch.exp((depth * motion.norm(dim=1, keepdim=True)).clamp(max=30.0))
    values = torch.cat([-motion * weight, weight, torch.ones_like(weight)], dim=1).reshape(n, 4, hh * ww)
    ys = torch.arange(hh, device=motion.device, dtype=motion.dtype)[:, None]
    xs = torch.arange(ww, device=motion.device, dtype=motion.dtype)[None, :]
    x, y = xs + motion[:, 0], ys + motion[:, 1]
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    index, share = [], []
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        tx, ty = x0 + dx, y0 + dy
        inside = (tx >= 0) & (tx < ww) & (ty >= 0) & (ty < hh)
        index.append((ty.clamp(0, hh - 1) * ww + tx.clamp(0, ww - 1)).long().reshape(n, 1, hh * ww))
        share.append(((fx if dx else 1 - fx) * (fy if dy else 1 - fy) * inside).reshape(n, 1, hh * ww))
    index, share = torch.cat(index, dim=2), torch.cat(share, dim=2)  # the four neighbours side by side
    acc = values.new_zeros(n, 4, hh * ww).scatter_add(2, index.expand(-1, 4, -1), values.repeat(1, 1, 4) * share)
    landed = acc[:, :2] / acc[:, 2:3].clamp(min=1e-12)
    cover = acc[:, 3:].clamp(max=1.0)
    return (landed * cover - motion.reshape(n, 2, hh * ww) * (1 - cover)).reshape(n, 2, hh, ww)


class RectifiedFlow:
    def __init__(self, config: FlowConfig | None = None):
        self.config = config or FlowConfig()

    def shift(self, sigma: torch.Tensor) -> torch.Tensor:
        """Wan's timestep shift σ' = sσ / (1 + (s − 1)σ): more time at high noise for s > 1."""
        s = self.config.shift
        return s * sigma / (1 + (s - 1) * sigma)

    def sample_sigma(
        self, batch: int, generator: torch.Generator | BatchDraws | None = None, device=None
    ) -> torch.Tensor:
        """Training noise levels [batch]: uniform in (0, 1), then shifted."""
        draws = generator if isinstance(generator, BatchDraws) else BatchDraws(generator)
        u = draws.rand(batch).clamp(1e-5, 1 - 1e-5)
        return self.shift(u).to(device)

    def timesteps(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma * self.config.num_train_timesteps

    @staticmethod
    def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x0, noise [B, ...]; sigma [B] (or broadcastable) -> x_σ."""
        sigma = _per_sample(sigma, x0).to(x0.dtype)
        return (1 - sigma) * x0 + sigma * noise

    def velocity_target(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """ε − x₀. When the network predicts data, training floors σ in `velocity`, and the target takes the
        same floor: (x_σ − x₀)/max(σ, floor) = (ε − x₀)·σ/max(σ, floor), so the loss is
        |x̂₀ − x₀|² / max(σ, floor)²; it needs `sigma` [B] then."""
        v = noise - x0
        if self.config.prediction == "velocity":
            return v
        if sigma is None:
            raise ValueError("velocity_target: prediction 'data' needs the noise levels sigma")
        sigma = sigma.float()
        ratio = sigma / sigma.clamp(min=self.config.sigma_floor)
        return v * _per_sample(ratio, v).to(v.dtype)

    def velocity(
        self,
        output: torch.Tensor,
        x: torch.Tensor,
        sigma: torch.Tensor,
        floor: bool = True,
        last_frame: torch.Tensor | None = None,
        residual_weight: float = 1.0,
    ) -> torch.Tensor:
        """The velocity the network's `output` at x_σ stands for: itself, or (x_σ − x̂₀)/σ when the network
        predicts data. `floor` (training) divides by max(σ, sigma_floor) instead, which bounds the loss
        weight at small σ; sampling passes False and the exact σ, which the samplers never evaluate at 0.
        sigma: a 0-d tensor or one level per sample [B]; `last_frame` [B, C, 1, H, W], the base of a
        `delta` prediction (x̂₀ = last_frame + output); `residual_weight` as in `from_last_frame`."""
        if self.config.prediction == "velocity":
            return output
        sigma = sigma.float()
        x0 = self.denoised(output, x, sigma, last_frame, residual_weight)
        if floor:
            sigma = sigma.clamp(min=self.config.sigma_floor)
        return (x.float() - x0) / _per_sample(sigma, x)

    def denoised(
        self,
        output: torch.Tensor,
        x: torch.Tensor,
        sigma: torch.Tensor,
        last_frame: torch.Tensor | None = None,
        residual_weight: float = 1.0,
    ) -> torch.Tensor:
        """x̂₀, the clean sample the network's `output` at x_σ stands for (float32), for every `prediction`;
        sigma a 0-d tensor or [B]; `last_frame` as in `velocity`, `residual_weight` as in `from_last_frame`."""
        prediction = self.config.prediction
        if prediction == "velocity":  # x_σ = x₀ + σ·(ε − x₀)
            return x.float() - _per_sample(sigma.float(), x) * output.float()
        if prediction in ("delta", "warp"):
            if last_frame is None:
                raise ValueError(f"prediction {prediction!r} needs the last history frame (last_frame)")
            return self.from_last_frame(output, last_frame, residual_weight)
        if prediction == "data":
            return output.float()
        return self.preconditioned(output, x, sigma.float())

    def from_last_frame(
        self, output: torch.Tensor, last_frame: torch.Tensor, residual_weight: float = 1.0
    ) -> torch.Tensor:
        """x̂₀ of a `delta` or `warp` prediction. output [B, C (+2 for warp), f, H, W], last_frame [B, C, 1, H, W].
        delta: last_frame + output. warp: the last frame warped by the flow in the output's channels after
        the first C (per generated frame, in latent cells), plus the residual in its first C channels times
        `residual_weight` (1 in training; `SamplerConfig.warp_residual` when sampling); with `splat_rank`
        the last two channels are a forward motion, joined to the flow by `with_forward_motion`. With
        `warp_padding: zeros` the warp reads zeros past the frame's edge, and there the residual counts
        fully whatever `residual_weight` (it is all there is of the frame), blended by the share of the
        sample that falls inside. `anchored` reads the frames from an earlier frame instead."""
        last = last_frame.float()
        if self.config.prediction == "delta":
            return last + output.float()
        c = last.shape[1]
        residual, flow = output[:, :c].float(), output[:, c:].float()  # flow: 2 or 2·p² channels
        forward = None
        if self.config.splat_rank:
            flow, forward = flow[:, :2], flow[:, 2:4]
        frames = last.expand(-1, -1, flow.shape[2], -1, -1)
        if forward is not None:
            flow = self.with_forward_motion(flow, forward)
        p, padding = self.config.warp_unshuffle, self.config.warp_padding
        warped = warp(frames, flow, p, self.config.warp_mode, padding)
        if padding == "zeros" and residual_weight != 1.0:
            b, _, f, h, w = frames.shape
            inside = warp(frames.new_ones(b, p * p, f, h, w), flow, p, "bilinear", "zeros").clamp(0.0, 1.0)
            weight = residual_weight * inside + (1.0 - inside)  # per fine pixel, channels (p q)
            return warped + weight.repeat(1, c // (p * p), 1, 1, 1) * residual
        return warped + residual_weight * residual

    def anchored(
        self, output: torch.Tensor, anchor: WarpAnchor, residual_weight: float = 1.0
    ) -> tuple[torch.Tensor, WarpAnchor]:
        """A warp prediction's frames read once from `anchor.frame`, and the anchor of the last of them.
        Each fine pixel's flow (as in `from_last_frame`) is composed with where its source pixel was read
        (`anchor.disp`, interpolated bilinearly), `anchor.frame` is sampled there with the trained
        `warp_mode`, and the carried residual, warped by the flow like a frame, plus this frame's residual
        times `residual_weight` is added. A fresh anchor gives exactly `from_last_frame`'s frames. Where
        the composed offsets tear (neighbouring pixels reading more than `ANCHOR_JUMP` pixels apart on more
        than `ANCHOR_TORN_SHARE` of the frame), the next anchor starts again from the last frame made."""
        c = anchor.frame.shape[1]
        p = self.config.warp_unshuffle
        residual, flow = output[:, :c].float(), output[:, c:].float()
        if self.config.splat_rank:
            flow = self.with_forward_motion(flow[:, :2], flow[:, 2:4])
        b, _, f, h, w = residual.shape
        if flow.shape[1] == 2:
            pixel_flow = cells_to_pixels(flow, p) * p  # [(b f), 2, hh, ww], fine pixels
        else:
            pixel_flow = rearrange(flow, "b (two p q) f h w -> (b f) two (h p) (w q)", p=p, q=p) * p
        xs, ys = _pixel_grid(h * p, w * p, pixel_flow)
        before = anchor.disp.repeat_interleave(f, dim=0)
        disp = pixel_flow + sample_at(before, xs + pixel_flow[:, 0], ys + pixel_flow[:, 1], "bilinear", "border")
        images = rearrange(anchor.frame, "b (c p q) one h w -> (b one) c (h p) (w q)", p=p, q=p)
        read = sample_at(images.repeat_interleave(f, dim=0), xs + disp[:, 0], ys + disp[:, 1], self.config.warp_mode)
        read = rearrange(read, "(b f) c (h p) (w q) -> b (c p q) f h w", b=b, p=p, q=p)
        carried = warp(anchor.residual.expand(-1, -1, f, -1, -1), flow, p, self.config.warp_mode)
        carried = carried + residual_weight * residual
        frames = read + carried
        last_disp = rearrange(disp, "(b f) two hh ww -> b f two hh ww", b=b)[:, -1]
        keep = ~_torn(last_disp, ANCHOR_JUMP, ANCHOR_TORN_SHARE)
        k5 = keep.float()[:, None, None, None, None]
        last = frames[:, :, -1:]
        following = replace(
            anchor,
            frame=anchor.frame * k5 + last * (1 - k5),
            disp=last_disp * k5[:, :, 0],
            residual=carried[:, :, -1:] * k5,
        )
        return frames, following

    def with_forward_motion(self, flow: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
        """A backward flow per cell [B, 2, f, H, W] and a forward motion per cell (`splat_rank`) -> one
        backward flow per pixel [B, 2·p², f, H, W] (latent cells, ordered (two p q)): both upsampled to the
        pixels, the motion turned into the backward flow that carries the pixels forward
        (`reverse_motion`), and the two added."""
        p = self.config.warp_unshuffle
        back = reverse_motion(cells_to_pixels(forward, p) * p, self.config.splat_depth) / p  # in pixels, then cells
        total = cells_to_pixels(flow, p) + back
        return rearrange(total, "(b f) two (h p) (w q) -> b (two p q) f h w", b=flow.shape[0], p=p, q=p)

    def preconditioned(self, output: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x̂₀ = c_skip·x_σ + c_out·F for `prediction: edm`. With x_σ = (1−σ)x₀ + σε and data spread s:
        c_skip = s²(1−σ)/D², c_out = σs/D, D² = σ² + s²(1−σ)²; c_skip → 1 and c_out → 0 as σ → 0."""
        s = self.config.sigma_data
        sigma = _per_sample(sigma.float(), x)
        d2 = sigma**2 + s**2 * (1 - sigma) ** 2
        return s**2 * (1 - sigma) / d2 * x.float() + sigma * s / d2.sqrt() * output.float()

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """Per-sample loss weight: 1, or a Gaussian bump in σ (mean 1 over uniform σ, roughly)."""
        if self.config.loss_weighting == "uniform":
            return torch.ones_like(sigma)
        c, w = self.config.weighting_center, self.config.weighting_width
        bump = torch.exp(-0.5 * ((sigma - c) / w) ** 2)
        return bump / (w * math.sqrt(2 * math.pi))

    def to_target(self, chunk: torch.Tensor, last_frame: torch.Tensor) -> torch.Tensor:
        """What the flow models for a chunk [B, C, f, H, W] that follows `last_frame` [B, C, 1, H, W]."""
        if self.config.target == "frames":
            return chunk
        return (chunk - last_frame) * self.config.residual_scale

    def from_target(self, sample: torch.Tensor, last_frame: torch.Tensor) -> torch.Tensor:
        """The inverse of `to_target`: a sampled target back to latent frames."""
        if self.config.target == "frames":
            return sample
        return last_frame + sample / self.config.residual_scale

    def inference_sigmas(self, num_steps: int, device=None) -> torch.Tensor:
        """[num_steps + 1] noise levels from 1 down to 0, shifted like the training levels."""
        return self.shift(torch.linspace(1.0, 0.0, num_steps + 1, device=device))
