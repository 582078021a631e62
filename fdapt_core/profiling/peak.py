"""The accelerator's peak FLOP/s, for model FLOPs utilisation (MFU).

Measured once per process as the best of a few large bf16 matrix products: an achievable
peak, a little under the datasheet's, which keeps MFU honest about what the chip really does.
"""
from __future__ import annotations

import functools
import time

import torch


@functools.lru_cache(maxsize=None)
def measured_peak_flops(device_str: str, n: int = 8192, repeats: int = 10) -> float:
    device = torch.device(device_str)
    if device.type != "cuda":
        raise ValueError("the peak is measured on CUDA devices only")
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def peak_flops(device: torch.device, configured_tflops: float | None) -> float | None:
    """FLOP/s to divide by: the configured figure, else measured on CUDA, else None."""
    if configured_tflops is not None:
        return configured_tflops * 1e12
    if device.type == "cuda":
        return measured_peak_flops(str(device))
    return None
