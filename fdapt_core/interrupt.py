"""Graceful stops: SIGINT / SIGTERM finish the current training step, then the run stops.

The signal handler only raises a flag; the training loop looks at it after every step and
raises `StopRequested`, so a stop never tears a step, a checkpoint or a record in half. The
engine then saves what the interrupted round has finished (a partial-round checkpoint), and
`--resume` continues to the same weights as an uninterrupted run. A second signal stops at once.
"""
from __future__ import annotations

import signal

from .errors import FdaptError

_requested: list[int] = []


class StopRequested(FdaptError):
    """The run was asked to stop; `exit_code` follows the shell's 128 + signal convention."""

    def __init__(self, signum: int, how_to_continue: str = ""):
        name = signal.Signals(signum).name
        # how to go on depends on the command (run: --resume; compare and study: run them
        # again), which the command line adds
        super().__init__(f"stopped by {name} after the current step; the last checkpoint is "
                         "kept" + (f": {how_to_continue}" if how_to_continue else ""))
        self.signum = signum
        self.exit_code = 128 + signum


def request_stop(signum: int = signal.SIGTERM) -> None:
    _requested.append(signum)


def clear() -> None:
    _requested.clear()


def check() -> None:
    """Raise StopRequested if a stop was requested (called between steps)."""
    if _requested:
        raise StopRequested(_requested[0])


def install_handlers() -> None:
    """SIGINT and SIGTERM request a stop; a second one interrupts immediately."""
    def handler(signum, frame):
        if _requested:
            raise KeyboardInterrupt
        request_stop(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
