"""ODE samplers for rectified flow, all with one signature, and action-free guidance.

`sampler(velocity_fn, x, sigmas) -> x0` integrates dx/dσ = v(x, σ) from sigmas[0] (noise) to
sigmas[-1] (data); `velocity_fn(x, sigma)` takes a 0-d sigma tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def euler(velocity_fn: VelocityFn, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """First-order Euler steps, one network evaluation per step."""
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        x = x + (sigma_next - sigma) * velocity_fn(x, sigma)
    return x


def heun(velocity_fn: VelocityFn, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 1); Euler for a final step to σ = 0."""
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        v = velocity_fn(x, sigma)
        x_pred = x + (sigma_next - sigma) * v
        if float(sigma_next) == 0.0:
            x = x_pred
        else:
            x = x + (sigma_next - sigma) * 0.5 * (v + velocity_fn(x_pred, sigma_next))
    return x


SAMPLERS: dict[str, Callable[[VelocityFn, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "euler": euler,
    "heun": heun,
}


def action_free_guidance(v_cond: torch.Tensor, v_free: torch.Tensor, scale: float) -> torch.Tensor:
    """Action-free guidance, Astra §3 (Zhu et al. 2025): v = v(∅) + s·(v(a) − v(∅))."""
    return v_free + scale * (v_cond - v_free)
