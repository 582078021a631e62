"""The host a run shares: the runs alive on it, and contention measured and flagged."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from fdapt_core.profiling.host import REGISTRY, HostLoad, RunRegistry, contended, live_runs


def test_the_thread_count_does_not_follow_the_runs_alive(tiny):
    """A thread count that followed the other runs alive made a rerun (or a resumed run)
    started beside another one train on other sums: not bit-identical to the first."""
    from fdapt_core.prepare import run_threads

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    REGISTRY.mkdir(parents=True, exist_ok=True)
    entry = REGISTRY / str(other.pid)
    try:
        entry.touch()
        assert live_runs() >= 2
        assert run_threads(tiny("train.threads=null")) == os.cpu_count()
        assert run_threads(tiny("train.threads=1")) == 1
    finally:
        entry.unlink(missing_ok=True)
        other.kill()
        other.wait()


def test_live_runs_counts_registered_processes_and_drops_dead_ones(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        (tmp_path / str(other.pid)).touch()
        (tmp_path / str(dead.pid)).touch()
        assert live_runs(tmp_path) == 2  # this process and the sleeping one
        assert not (tmp_path / str(dead.pid)).exists()
        with RunRegistry(tmp_path):
            assert (tmp_path / str(os.getpid())).exists()
            assert live_runs(tmp_path) == 2  # registering does not count this process twice
        assert not (tmp_path / str(os.getpid())).exists()
    finally:
        other.kill()
        other.wait()


def test_contention_is_others_demand_beyond_the_free_cores():
    assert contended(0.05, threads=2, cpus=2) is False  # daemons' noise
    # a quarter of a core slowed a 2-thread run on 2 cores by a fifth: contention
    assert contended(0.25, threads=2, cpus=2) is True
    assert contended(1.0, threads=2, cpus=2) is True  # another run took a core
    assert contended(1.0, threads=1, cpus=2) is False  # it took the core this run left free
    assert contended(None, threads=1, cpus=2) is None  # not measured (no /proc)


def test_another_process_burning_cpu_is_seen_as_contention():
    if not os.path.exists("/proc/stat"):
        pytest.skip("the host's busy time is read from Linux's /proc/stat")
    cpus = os.cpu_count() or 1
    load = HostLoad(threads=cpus, cpus=cpus)
    burner = subprocess.Popen([sys.executable, "-c",
                               "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"])
    burner.wait()  # this process sleeps meanwhile: its own time is not the others'
    s = load.sample()
    assert s["other_cpu_cores"] > 0.4 and s["contended"] is True
    assert s["threads"] == cpus and s["cpus"] == cpus


def test_own_work_is_not_counted_as_others(monkeypatch):
    """The host's busy time minus this process's own: with the host's counter made to show
    exactly this process's work plus half a CPU-second of others', others are that half."""
    from fdapt_core.profiling import host

    ticks = {"now": 10_000}
    monkeypatch.setattr(host, "_busy_ticks", lambda: ticks["now"])
    load = HostLoad(threads=1, cpus=2)
    t = time.monotonic()
    while time.monotonic() - t < 0.5:  # this process works
        pass
    ticks["now"] += round((load.own_s() + 0.5) * host._TICK)
    wall = time.monotonic() - t
    s = load.sample()
    assert s["other_cpu_cores"] == pytest.approx(0.5 / wall, abs=0.05)
    assert s["contended"] is False  # half a core, and this run left one free


def test_the_record_says_how_busy_the_host_was(tiny):
    from fdapt_core.runner import run

    rec = run(tiny("fl.rounds=1"), "fdapt")
    h = rec["host"]
    assert h["threads"] == 1 and h["cpus"] == os.cpu_count()
    assert set(h) >= {"other_cpu_cores", "load_avg_max", "contended"}
    assert rec["rounds"][0]["host"]["threads"] == 1


def test_a_killed_run_not_yet_reaped_is_not_alive(tmp_path):
    """A run killed with SIGKILL stays a zombie until its parent waits for it: it answers
    signal 0, and once counted as a live run."""
    import signal

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / str(child.pid)).touch()
        assert live_runs(tmp_path) == 2
        os.kill(child.pid, signal.SIGKILL)
        time.sleep(0.5)  # not waited for: a zombie
        assert live_runs(tmp_path) == 1
    finally:
        child.kill()
        child.wait()


def test_a_record_says_whether_the_training_code_was_committed(tmp_path):
    from fdapt_core.records import git_dirty

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    assert git_dirty(tmp_path) is None  # not a checkout
    git("init", "-q")
    (tmp_path / "fdapt_core").mkdir()
    (tmp_path / "fdapt_core" / "x.py").write_text("a = 1\n")
    (tmp_path / "README.md").write_text("docs\n")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    assert git_dirty(tmp_path) is False
    (tmp_path / "README.md").write_text("docs changed\n")  # not training code
    assert git_dirty(tmp_path) is False
    (tmp_path / "fdapt_core" / "x.py").write_text("a = 2\n")
    assert git_dirty(tmp_path) is True
