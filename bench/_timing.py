"""Timing helpers shared by the benchmarks: alternating medians and the measured matmul peak."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def alternating_medians(fns: dict[str, Callable[[], object]], repeats: int = 10, warmup: int = 2) -> dict[str, float]:
    """Median wall time (s) of each function, the functions run in turn `repeats` times after warm-up."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 10, device: str | torch.device = "cpu") -> float:
    """Measured FLOP/s of a size x size matmul in `dtype` (median of `repeats`; on a GPU each timed
    call waits for the device)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    cuda = torch.device(device).type == "cuda"

    def mm() -> None:
        torch.mm(a, b)
        if cuda:
            torch.cuda.synchronize(device)

    seconds = alternating_medians({"mm": mm}, repeats=repeats, warmup=2)["mm"]
    return 2 * size**3 / seconds
