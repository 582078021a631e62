"""A real Flower deployment on the loopback interface: a SuperLink, two SuperNodes (one per
client), `flwr run` of the harness's app; one SuperNode killed mid-run. Bounded in time."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from conftest import ROOT, TINY, silo_corpus  # noqa: E402
from fdapt_core.flower.local_deployment import (BIN, free_port, start, stop,  # noqa: E402
                                                superlink)

pytestmark = pytest.mark.slow
LIMIT_S = 170  # the whole deployment, kill and recovery included


def _ours(flwr_home: Path) -> list[int]:
    """Live processes of this deployment, whoever started them (SuperExec and ClientApp
    processes too): those whose environment names this test's FLWR_HOME."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"FLWR_HOME={flwr_home}".encode() in env and state != "Z":
            found.append(int(proc.name))
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.skipif(shutil.which("flower-superlink", path=str(BIN)) is None,
                    reason="the flower extra's commands are not installed")
def test_deployment_runs_and_survives_a_killed_supernode(tmp_path, cache_dir, tiny):
    """Each SuperNode's data-path holds only its institution's documents (the server keeps the
    whole corpus for the manifest and the held-out set). Node 0 keeps a warm worker
    (`warm-s`), which the run releases when it ends: what the deployment still runs then is
    Flower's own (the SuperLink, the SuperNode and its SuperExec), nothing of the harness."""
    _, silo_sets, files = silo_corpus(tmp_path, tiny)
    link_proc, link, env = superlink(tmp_path / "flwr", ROOT, tmp_path / "superlink.log")
    procs = [link_proc]
    for i in range(2):
        procs.append(start(["flower-supernode", "--insecure", "--superlink",
                             f"127.0.0.1:{link}", "--port", str(free_port()), "--node-config",
                             f'partition-id={i} num-partitions=2 data-path="{files[i]}"'
                             + (" warm-s=60" if i == 0 else "")],
                            tmp_path / f"supernode-{i}.log", env))
    sets = [*(s for s in TINY if not s.startswith("fl.rounds")), *silo_sets, "fl.rounds=3",
            f"output_dir={tmp_path / 'out'}", f"cache_dir={cache_dir}", "name=deployed",
            "dist.timeout_s=60"]
    record = tmp_path / "out" / "deployed" / "fdapt" / "record.json"
    t0 = time.monotonic()
    try:
        time.sleep(3)  # the SuperLink's HTTP API up
        # --stream: the harness's own progress lines, as a user watches the run
        run = subprocess.Popen([str(BIN / "flwr"), "run", str(ROOT / "flower_app"), "local",
                                "--stream", "--run-config", f'set="{" ".join(sets)}"'],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
        procs.append(run)
        killed_at = None
        while time.monotonic() - t0 < LIMIT_S:
            rec = _record(record)
            if rec and rec["status"] == "finished":
                break
            if killed_at is None and rec and len(rec["rounds"]) >= 1:
                stop(procs[2])  # client 1's node, as round 2 starts
                killed_at = len(rec["rounds"])
            time.sleep(0.5)
        logs = "".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in tmp_path.glob("*.log"))
        assert rec and rec["status"] == "finished", logs
        streamed, _ = run.communicate(timeout=30)
        assert run.returncode == 0, streamed[-3000:]
        # the run is over: the harness's worker was released; Flower's processes remain
        # until their nodes are stopped (its SuperExec's exited ClientApps as zombies)
        deadline = time.monotonic() + 10
        while any("fdapt_core.flower.worker" in _command(p) for p in _ours(tmp_path / "flwr")) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [_command(p) for p in _ours(tmp_path / "flwr")]
        # Flower's commands all: flower-superlink, -supernode, -superexec, flwr-serverapp
        assert left and all("bin/flower-" in c or "bin/flwr-" in c for c in left), \
            [c[:90] for c in left]
    finally:
        for p in procs:
            stop(p)
        for pid in _ours(tmp_path / "flwr"):  # what the nodes started in sessions of their own
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _ours(tmp_path / "flwr") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _ours(tmp_path / "flwr"), "the deployment left processes behind"
    for r in (1, 2, 3):
        assert f"fdapt fdapt: round {r}/3: held-out loss" in streamed, streamed[-3000:]
    assert f"record: {record}" in streamed and "lost [1]" in streamed
    first = rec["rounds"][0]
    assert first["accepted"] == [0, 1] and all("flower_bytes_up" in c for c in first["clients"])
    # node 0 trained in its warm worker, started in the first round; node 1 in fresh processes
    assert "worker_start_s" in first["clients"][0]["node"]
    assert all("worker_s" in r["clients"][0]["node"] for r in rec["rounds"])
    assert "imports_s" in first["clients"][1]["node"]
    after = rec["rounds"][killed_at:]
    for r in after:  # the dead node's client is dropped; the other one carries the rounds
        gone = r["clients"][1]
        assert gone["dropped"] and gone["fault"] == "lost", gone
        assert r["accepted"] == [0] and r["aggregated"]
    assert rec["final_eval"]["loss"] < rec["initial_eval"]["loss"]
    assert time.monotonic() - t0 < LIMIT_S
