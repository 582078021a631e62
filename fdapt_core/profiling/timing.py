"""Phase timers for the training loop: wall clock on the CPU, CUDA events on a GPU.

CUDA runs asynchronously, so a host clock around `loss.backward()` measures the launch, not the
work. Events recorded into the stream time the work itself without stalling it; they are read
once, after the loop's final synchronisation.
"""
from __future__ import annotations

import time
from collections import defaultdict

import torch


class PhaseTimer:
    """`mark(phase)` closes the phase that began at the previous mark."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.totals: dict[str, float] = defaultdict(float)
        self._events: list[tuple[str, object, object]] = []
        self._last = None

    def start(self) -> None:
        self._last = self._now()

    def mark(self, phase: str) -> None:
        now = self._now()
        if self.cuda:
            self._events.append((phase, self._last, now))
        else:
            self.totals[phase] += now - self._last
        self._last = now

    def _now(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def result(self) -> dict[str, float]:
        """Seconds per phase (call after the device is synchronised)."""
        for phase, a, b in self._events:
            self.totals[phase] += a.elapsed_time(b) / 1000.0
        self._events.clear()
        return dict(self.totals)
