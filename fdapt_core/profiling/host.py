"""The host a run shares: how many runs use it, the threads to take, and how busy others kept it.

Wall times are only comparable when taken on a quiet machine: two runs that each use every core
of a 2-core host slowed a round of the same work from 46 s to 228 s. So every run records

* the threads it used and the host's cores;
* the CPU time the *other* processes of the host took while it ran (/proc/stat's busy time
  minus this run's own processes' time, in cores on average), and the load average;

and flags its wall times as taken under contention when the others' demand left it fewer cores
than its threads. Each run registers itself in a folder of pid files, so a run started beside
another one is told so. The thread count does not follow them (see `prepare.run_threads`):
results would then depend on what else ran.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Optional

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
REGISTRY = Path(tempfile.gettempdir()) / "fdapt-bench-runs"
# the others' average demand (cores) above the cores this run left free that counts as
# contention: a tenth of a core, ten times the noise of an idle host's daemons (0.01 here).
# A quarter of a core went unflagged once and cost the runs it overlapped 17-22 % of their
# wall time against the same work on a quiet host.
SLACK_CORES = 0.1


def _alive(pid: int) -> bool:
    """A running process: a killed run not yet reaped by its parent (a zombie) answers
    signal 0 but is over."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (not Linux): signal 0 is all there is
        return True


class RunRegistry:
    """This process's entry among the fdapt runs alive on the host, while inside `with`."""

    def __init__(self, folder: Path = REGISTRY):
        self.folder = folder
        self.entry: Optional[Path] = None

    def __enter__(self) -> "RunRegistry":
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.entry = self.folder / str(os.getpid())
            self.entry.touch()
        except OSError:  # a read-only temp folder: the run counts itself alone
            self.entry = None
        return self

    def __exit__(self, *exc) -> None:
        if self.entry is not None:
            self.entry.unlink(missing_ok=True)


def live_runs(folder: Path = REGISTRY) -> int:
    """fdapt processes alive on this host, this one included (stale entries are removed)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 1
    n = 1
    for e in entries:
        if not e.name.isdigit():
            continue
        if not _alive(int(e.name)):
            e.unlink(missing_ok=True)
        elif int(e.name) != os.getpid():
            n += 1
    return n


def _busy_ticks() -> Optional[int]:
    """Busy CPU ticks of the whole host since boot (Linux), None elsewhere."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is already inside user)
    return sum(v[:3]) + sum(v[5:8])


def own_cpu_s() -> float:
    """CPU seconds this process has used (all its threads)."""
    t = os.times()
    return t.user + t.system


class HostLoad:
    """The host's load while a run goes on, measured from its making to each `sample()`."""

    def __init__(self, threads: int, cpus: Optional[int] = None):
        self.threads, self.cpus = threads, cpus or os.cpu_count() or 1
        self._t0, self._busy0, self._own0 = time.monotonic(), _busy_ticks(), own_cpu_s()
        self._load_max = self.load_avg()

    @staticmethod
    def load_avg() -> Optional[float]:
        try:
            return os.getloadavg()[0]
        except (OSError, AttributeError):
            return None

    def own_s(self) -> float:
        """CPU seconds this process used since this measure began."""
        return own_cpu_s() - self._own0

    def sample(self, ranks_cpu_s: Optional[float] = None) -> dict:
        """The host since this measure began: others' average demand in cores, load average, and
        whether that was contention. `ranks_cpu_s`: the CPU seconds of all of this run's
        processes on the host (a distributed run's ranks), when not just this one."""
        wall = max(1e-9, time.monotonic() - self._t0)
        load = self.load_avg()
        if load is not None:
            self._load_max = max(self._load_max or 0.0, load)
        busy = _busy_ticks()
        others = None
        if busy is not None and self._busy0 is not None:
            mine = self.own_s() if ranks_cpu_s is None else ranks_cpu_s
            others = max(0.0, ((busy - self._busy0) / _TICK - mine) / wall)
        return {"cpus": self.cpus, "threads": self.threads,
                "other_cpu_cores": others, "load_avg_max": self._load_max,
                "contended": contended(others, self.threads, self.cpus)}


def contended(other_cores: Optional[float], threads: int, cpus: int) -> Optional[bool]:
    """Whether others' demand took cores this run's threads needed; None when unmeasured."""
    if other_cores is None:
        return None
    return other_cores > max(0, cpus - threads) + SLACK_CORES
