"""End to end through the command line, as a user runs it."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY


def bench(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_compare_trains_three_methods_and_writes_tables(tmp_path, cache_dir):
    sets = [a for s in [*TINY, f"output_dir={tmp_path}", f"cache_dir={cache_dir}",
                        "name=e2e"] for a in ("--set", s)]
    p = bench("compare", "--methods", "central,fdapt,ffdapt", *sets)
    assert p.returncode == 0, p.stderr
    assert "central" in p.stdout and "ffdapt" in p.stdout and "SYNTHETIC" in p.stdout
    rows = list(csv.DictReader(open(tmp_path / "e2e" / "compare.csv")))
    assert [r["method"] for r in rows] == ["central", "fdapt", "ffdapt"]
    for r in rows:
        assert float(r["final_loss"]) < float(r["initial_loss"])  # DAPT lowers held-out loss
        assert r["reused"] == "False"
    assert float(rows[2]["trainable_share_pct"]) < 100.0 == float(rows[1]["trainable_share_pct"])
    assert int(rows[2]["bytes_up"]) < int(rows[1]["bytes_up"])
    md = (tmp_path / "e2e" / "compare.md").read_text()
    assert [line.split(" | ")[0] for line in md.splitlines()[4:7]] == ["| central", "| fdapt", "| ffdapt"]
    for m in ("central", "fdapt", "ffdapt"):
        rec = json.loads((tmp_path / "e2e" / m / "record.json").read_text())
        assert rec["status"] == "finished" and len(rec["rounds"]) == 2
        assert (tmp_path / "e2e" / m / "model" / "model.safetensors").is_file()
        assert (tmp_path / "e2e" / m / "manifest.json").is_file()

    # the same config again: finished records are reused, not retrained
    p = bench("compare", "--methods", "central,fdapt,ffdapt", *sets)
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(open(tmp_path / "e2e" / "compare.csv")))
    assert all(r["reused"] == "True" for r in rows)

    # a changed config retrains
    p = bench("compare", "--methods", "fdapt", *sets, "--set", "seed=1")
    rows = list(csv.DictReader(open(tmp_path / "e2e" / "compare.csv")))
    assert p.returncode == 0 and rows[0]["reused"] == "False"


@pytest.mark.slow
def test_run_then_resume_a_finished_run(tmp_path, cache_dir):
    sets = [a for s in [*TINY, f"output_dir={tmp_path}", f"cache_dir={cache_dir}"]
            for a in ("--set", s)]
    assert bench("run", "--method", "ffdapt-bottom", *sets).returncode == 0
    p = bench("run", "--method", "ffdapt-bottom", "--resume", *sets)
    assert p.returncode == 0, p.stderr
    rec = json.loads((tmp_path / "default" / "ffdapt-bottom" / "record.json").read_text())
    assert rec["resumed_from_round"] == 2 and rec["config"]["freeze"]["policy"] == "bottom"
    assert all(f["embeddings"] and f["blocks"] == [0, 1] for f in rec["freeze"])


def test_config_keys_are_listed():
    p = bench("config", "--keys")
    assert p.returncode == 0 and "fl.frozen_aggregation" in p.stdout


# `bench run` as a user starts it, held after its first round until the test lets it go: the
# signal then always lands in a run that has rounds left, however fast the machine is.
PAUSED_RUN = """
import sys, time
from pathlib import Path
from bench import progress
paused, go = Path(sys.argv[1]), Path(sys.argv[2])
end_round = progress.RichCallbacks.round_end
def round_end(self, r, row):
    end_round(self, r, row)
    if r == 0:
        paused.touch()
        while not go.exists():
            time.sleep(0.01)
progress.RichCallbacks.round_end = round_end
sys.argv = ["bench", *sys.argv[3:]]
from bench.cli import main
main()
"""


SIGNAL_RUN = [*TINY, "fl.rounds=4"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, cache_dir):
    """The uninterrupted run every signal test resumes to (in process: the same config as
    `bench run`'s, configs/default.yaml with the same --set values)."""
    from fdapt_core.config.run import load_config
    from fdapt_core.runner import run

    out = tmp_path_factory.mktemp("straight")
    run(load_config(ROOT / "configs" / "default.yaml",
                    [*SIGNAL_RUN, f"output_dir={out}", f"cache_dir={cache_dir}",
                     "name=straight"]), "fdapt")
    return out / "straight" / "fdapt"


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_signal_then_resume_matches_an_uninterrupted_run(tmp_path, cache_dir, straight,
                                                         signame):
    import os
    import signal
    import time

    import torch
    from safetensors.torch import load_file

    def sets(name):
        return [a for s in [*SIGNAL_RUN, f"output_dir={tmp_path}", f"cache_dir={cache_dir}",
                            f"name={name}"] for a in ("--set", s)]

    paused, go = tmp_path / "paused", tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_RUN, str(paused), str(go), "run",
                             "--method", "fdapt", *sets("killed")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not paused.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if not paused.exists():
        proc.kill()
        pytest.fail(f"the run never finished its first round: {proc.communicate()[1]}")
    sig = getattr(signal, signame)
    os.kill(proc.pid, sig)
    go.touch()  # round 2 starts; a graceful stop comes after its first step
    _, stderr = proc.communicate(timeout=120)
    record = tmp_path / "killed" / "fdapt" / "record.json"
    rec = json.loads(record.read_text())
    assert len(rec["rounds"]) == 1  # the run was stopped, with rounds left to do
    checkpoints = tmp_path / "killed" / "fdapt" / "checkpoints"
    assert (checkpoints / "round-0000").is_dir()
    if sig == signal.SIGKILL:
        assert proc.returncode == -sig and rec["status"] == "running"
    else:
        assert proc.returncode == 128 + sig, stderr
        assert f"stopped by {signame}" in stderr and "Traceback" not in stderr
        assert rec["status"] == "interrupted"
        assert (checkpoints / "partial-0001").is_dir()  # what round 2 had done
    assert not (tmp_path / "killed" / "fdapt" / "model").exists()
    p = bench("run", "--method", "fdapt", "--resume", *sets("killed"))
    assert p.returncode == 0, p.stderr
    a = load_file(str(straight / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "fdapt" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra = json.loads((straight / "record.json").read_text())
    rb = json.loads(record.read_text())
    assert rb["status"] == "finished" and rb["resumed_from_round"] == 1
    assert [r["eval_loss"] for r in ra["rounds"]] == [r["eval_loss"] for r in rb["rounds"]]


@pytest.mark.slow
def test_perf_quick_writes_a_record_and_gates_on_a_baseline(tmp_path):
    baseline = tmp_path / "baseline.json"
    # a baseline no run can meet: the gate must fail, after writing the record
    baseline.write_text(json.dumps({"harness_vs_plain_ratio": 100.0, "memory_growth": 1.0}))
    out = tmp_path / "perf.json"
    p = bench("perf", "--quick", "--out", str(out), "--baseline", str(baseline))
    assert p.returncode == 1, p.stderr
    assert "perf regression" in p.stderr and "harness_vs_plain_ratio" in p.stderr
    rec = json.loads(out.read_text())
    for key in ("harness_vs_plain_ratio", "harness_vs_trainer_ratio", "outside_train_share",
                "memory_growth", "harness_vs_plain_ratio_causal",
                "harness_vs_trainer_ratio_causal"):
        assert isinstance(rec[key], float)
    assert rec["throughput_causal"]["seq_len"] == rec["throughput"]["seq_len"]
    assert set(rec["ffdapt"]) == {"paper", "bottom"}
    assert rec["ffdapt"]["bottom"]["flops_saved_pct"] > rec["ffdapt"]["paper"]["flops_saved_pct"] > 0
    p = bench("perf", "--baseline", str(tmp_path / "none.json"))
    assert p.returncode == 2 and "none.json" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_kill_loop_resumes_exactly(tmp_path):
    """Three seeded random kills (the full 20-kill loop: scripts/kill_loop.py --kills 20)."""
    out = tmp_path / "kills.json"
    p = subprocess.run([sys.executable, "scripts/kill_loop.py", "--kills", "3", "--seed", "1",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    summary = json.loads(out.read_text())
    assert summary["exact"] == 3
