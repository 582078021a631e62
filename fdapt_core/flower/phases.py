"""Where a Flower round's time goes, outside the clients' training: the node's phases of
one message, and the server's side of the exchange.

A SuperNode (Flower 1.42) answers every message from a fresh ClientApp process, so a node's
round pays, before and after its training: the message's way to the node (SuperLink, the
SuperNode's and SuperExec's polling, the process's spawn), Flower's start (interpreter,
`flwr` imports, the task's pull, the app's install and load), the harness's imports, the
node's set-up (tokenizer, documents, model), decoding the global model, the client state
kept between rounds, the reply, and the reply's way back. Each is measured where it happens
and travels with the reply (`ClientRow.node`); the server adds the return leg and its own
side (`RoundRow.transport`).

Legs that span two machines (`delivery_s`, `return_s`) compare two wall clocks: exact on one
host (a loopback deployment, a simulation), as good as the hosts' clock sync otherwise.
Only stdlib here: it is imported first, before what it measures.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Iterator, Optional


def process_started() -> Optional[float]:
    """This process's start, in `time.time()` seconds (Linux's /proc; None elsewhere).

    From the uptime clock (0.01 s ticks) rather than the boot time, which /proc gives in
    whole seconds."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class NodeClock:
    """One message's phases on a node, in seconds (`phases`). A process's first message,
    where the process started after the message was sent (`fresh`), also gets the legs
    before the harness's handler ran."""

    def __init__(self, sent_at: Optional[float], module_start: float, module_end: float,
                 fresh: bool):
        now = time.time()
        self.phases: dict[str, float] = {}
        started = process_started() if fresh else None
        if started is not None and sent_at is not None and started < sent_at:
            started = None  # a process older than the message (in-process tests): warm
        if started is not None:
            # a process of its own for this message: its way here, Flower's start-up, the
            # harness's imports, then Flower loading the app around them
            if sent_at is not None:
                self.phases["delivery_s"] = started - sent_at
            self.phases["flower_start_s"] = module_start - started
            self.phases["imports_s"] = module_end - module_start
            self.phases["flower_load_s"] = now - module_end
        elif sent_at is not None:  # a warm process (a simulation's worker): the way here
            self.phases["delivery_s"] = now - sent_at

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phases[f"{name}_s"] = self.phases.get(f"{name}_s", 0.0) \
                + time.perf_counter() - t0

    def add(self, phases: dict[str, float]) -> None:
        for k, v in phases.items():
            self.phases[k] = self.phases.get(k, 0.0) + v

    def done(self) -> dict[str, float]:
        """The phases, and when the reply left the handler (`replied_at`, wall clock)."""
        return {**self.phases, "replied_at": time.time()}


# The order phases are reported in: a node's message from the server's send to its reply's
# arrival, then the server's own side of the exchange
NODE_PHASES = ("delivery_s", "flower_start_s", "imports_s", "flower_load_s",
               "worker_start_s", "worker_s", "tokenizer_s", "data_s", "model_s", "decode_s",
               "state_s", "flops_s", "train_s", "reply_s", "return_s")
