"""Peak memory: CUDA max allocated on a GPU, the process's resident set on a CPU.

Linux's lifetime peak (ru_maxrss) cannot be reset between the runs of one `compare`, so on the
CPU the peak is the largest current RSS sampled at the points the engine calls `sample()`
(after every client and every evaluation); on CUDA, torch's peak counter is reset per run.
"""
from __future__ import annotations

import os
import resource

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):  # not Linux: the lifetime peak is all there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Tracks the peak of one run."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_rss = current_rss_bytes()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def current_mb(self) -> float:
        """This process's memory now: CUDA allocated on a GPU, the resident set on a CPU (a
        leak shows as growth from round to round)."""
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / 2**20
        return current_rss_bytes() / 2**20

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, current_rss_bytes())

    def summary(self) -> dict:
        self.sample()
        out = {"peak_rss_mb": self.peak_rss / 2**20}
        if self.device.type == "cuda":
            out["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        out["peak_mem_mb"] = out.get("peak_cuda_allocated_mb", out["peak_rss_mb"])
        return out
