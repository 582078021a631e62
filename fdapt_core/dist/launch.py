"""A rank's side of a distributed run: join the world, run, and fail loudly and at once.

A rank that raises writes `failures/rank-<r>.json` in the run folder (what it was doing and
why) and exits non-zero; torchrun then stops the other ranks, which are waiting in a collective,
and the launcher reports the first failure (`bench run --nproc N`). A rank that dies without a
word (killed) is noticed by torchrun the same way; a rank on another host that hangs is bounded
by `dist.timeout_s`. The last finished round's checkpoint stays, so `--resume` continues.
"""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import torch.distributed as dist

from ..errors import FdaptError
from ..records import write_json_atomic
from ..runs import run_dir
from .transport import DistributedTransport
from .world import close_world, init_world


class RankFailed(FdaptError):
    """A rank of a distributed run failed; the message names the rank and what it did."""

    exit_code = 1


def failure_dir(cfg, method: str) -> Path:
    return run_dir(cfg, method) / "failures"


def _collateral(exc: BaseException) -> bool:
    """Whether this rank only failed because another one went away."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("connection closed by peer", "connection reset",
                                   "gloo", "nccl", "timed out"))


def run_distributed(cfg, method: str, resume: bool, callbacks, run_fn) -> dict:
    # torchrun stops the ranks with signals: let them end the process at once rather than
    # finish a step a peer will never join
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    world = init_world(cfg, cfg.train.device)
    try:
        record = run_fn(cfg, method, resume, callbacks if world.is_main else None,
                        world=world, transport=DistributedTransport(world))
    except Exception as exc:  # noqa: BLE001 (every failure is reported the same way)
        msg = f"rank {world.rank} failed {world.where}: {type(exc).__name__}: {exc}"
        info = {"rank": world.rank, "where": world.where, "error": f"{type(exc).__name__}: "
                f"{exc}", "collateral": _collateral(exc), "time": time.time()}
        try:
            folder = failure_dir(cfg, method)
            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(folder / f"rank-{world.rank}.json", info)
        except OSError:
            pass
        raise RankFailed(msg + " (the last finished round is kept: continue with --resume)") \
            from None
    close_world(world)
    return record


def first_failure(cfg, method: str, since: float) -> str | None:
    """The root failure of a launch that started at `since` (a rank's own error before the
    errors of ranks that lost their peer)."""
    found = []
    for path in sorted(failure_dir(cfg, method).glob("rank-*.json")):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if info.get("time", 0) >= since:
            found.append(info)
    if not found:
        return None
    info = min(found, key=lambda i: (i["collateral"], i["time"]))
    return f"rank {info['rank']} failed {info['where']}: {info['error']}"
