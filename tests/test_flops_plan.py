"""`bench flops` predicts, without training, the FLOPs a run's record counts (DESIGN.md:
"Counted FLOPs of a run equal what `bench flops` predicts for its config without training"):
trained tiny runs are set against the prediction for their config, to the FLOP."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fdapt_core.flops.frontier import frontier_settings
from fdapt_core.flops.plan import FlopsPlanner
from fdapt_core.config.run import FreezeConfig
from fdapt_core.runner import run
from tests.conftest import ROOT, TINY


def bench(*args):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_bench_flops_equals_the_records_counted_flops(tiny, tmp_path, cache_dir):
    """fdapt, ffdapt-paper and central trained; `bench flops` on the same config gives each
    one's totals.train_flops, its allocation and its saving; its frontier reads the runs'
    held-out loss from their records."""
    records = {m: run(tiny(), m) for m in ("fdapt", "ffdapt-paper", "central")}
    sets = [a for s in [*TINY, f"output_dir={tmp_path / 'results'}", f"cache_dir={cache_dir}"]
            for a in ("--set", s)]
    p = bench("flops", "--methods", "fdapt,ffdapt-paper,central", *sets, "--frontier",
              "--runs", str(tmp_path / "results"), "--json", str(tmp_path / "flops.json"))
    assert p.returncode == 0, p.stderr
    assert "ffdapt-paper" in p.stdout and "freeze frontier" in p.stdout
    table = json.loads((tmp_path / "flops.json").read_text())["tables"][0]
    predicted = {row["method"]: row for row in table["methods"]}
    for m, rec in records.items():
        assert predicted[m]["train_flops"] == rec["totals"]["train_flops"], m
        assert predicted[m]["steps"] == rec["totals"]["steps"]
        assert predicted[m]["samples"] == rec["totals"]["samples"]
    paper, fdapt = predicted["ffdapt-paper"], records["fdapt"]["totals"]["train_flops"]
    assert paper["frozen"] == records["ffdapt-paper"]["freeze"]
    assert paper["policy"] == records["ffdapt-paper"]["freeze_policy"]
    assert paper["saved_pct"] == pytest.approx(
        100 * (1 - records["ffdapt-paper"]["totals"]["train_flops"] / fdapt))
    assert 0 < paper["saved_pct"] < 100 and predicted["fdapt"]["saved_pct"] == 0
    assert table["setup"]["client_blocks"] == [c["blocks"] for c in
                                               records["fdapt"]["data"]["clients"]]
    front = {row["label"]: row for row in table["frontier"]}
    for label, m in (("fdapt (reference)", "fdapt"), ("paper (k_i in [1, 4])", "ffdapt-paper")):
        assert front[label]["heldout_runs"] == 1
        assert front[label]["heldout_loss"] == records[m]["final_eval"]["loss"]
        assert front[label]["train_flops"] == records[m]["totals"]["train_flops"]
    others = [r for r in table["frontier"] if r["label"] not in
              ("fdapt (reference)", "paper (k_i in [1, 4])")]
    assert others and all(r["heldout_loss"] is None for r in others)


@pytest.mark.slow
def test_the_schedule_is_the_runs_sampling_epochs_caps_short_batches_and_drops(tiny):
    """2 of 3 clients a round, two local epochs capped at 6 steps (past an epoch's short last
    batch), clients dropping out, per-round and budget frozen sets: still to the FLOP. A batch
    of 24 makes a sequence's FLOPs no whole number, so the rounding is the record's too."""
    cfg = tiny("fl.clients=3", "fl.client_fraction=0.67", "fl.rounds=3", "train.local_epochs=2",
               "train.max_local_steps=6", "data.max_seq_length=64", "train.batch_size=24",
               "faults.dropout=0.3")
    planner = FlopsPlanner()
    for m in ("fdapt", "ffdapt-random", "ffdapt-budget", "central"):
        rec = run(cfg, m)
        predicted = planner.predict(cfg, m)
        assert predicted.train_flops == rec["totals"]["train_flops"], m
        assert predicted.samples == rec["totals"]["samples"]
        assert predicted.steps == rec["totals"]["steps"]
        rows = [c for r in rec["rounds"] for c in r["clients"]]
        assert predicted.client_rounds == len(rows)
        if m == "ffdapt-budget":
            assert predicted.frozen == rec["freeze"]
        if m == "fdapt":  # the schedule's corners were really there
            assert any(c["dropped"] for c in rows)
            assert any(c["samples"] % 24 for c in rows if not c["dropped"])  # a short batch
            assert len({c["client"] for c in rows}) == 3 and len(rec["rounds"][0]["clients"]) == 2


def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    import bench.cli as cli
    import fdapt_core.interrupt
    from rich.console import Console

    monkeypatch.setattr(fdapt_core.interrupt, "install_handlers", lambda: None)
    monkeypatch.setattr(cli, "err", Console(stderr=True, width=1000))  # no wrapping

    def bench_here(*args):  # in this process: torch is imported once for the three
        monkeypatch.setattr(sys, "argv", ["bench", *args])
        with pytest.raises(SystemExit) as stop:
            cli.main()
        return stop.value.code, capsys.readouterr().err

    code, err = bench_here("flops", "--methods", "fdapt,ffdapt-nosuch")
    assert code == 2 and err.count("\n") == 1 and "ffdapt-nosuch" in err
    code, err = bench_here("flops", "--config", str(tmp_path / "missing.yaml"))
    assert code == 2 and err.count("\n") == 1 and "not found" in err
    code, err = bench_here("flops", "--partitions", "iid,nosuch")
    assert code == 2 and "nosuch" in err


def test_the_frontier_spans_every_policy_within_the_models_blocks():
    labels = [label for label, _ in frontier_settings(FreezeConfig(), 6)]
    policies = {f.policy for _, f in frontier_settings(FreezeConfig(), 6)}
    assert policies == {"paper", "bottom", "random", "progressive", "budget"}
    assert "bottom k=5 + embeddings" in labels and "bottom k=6" not in labels
    assert any("0.121" in label for label in labels)


def test_each_table_names_the_head_it_counts(tiny):
    """The paper-setup table read 4.66 % saved with the sparse MLM head, where the dense head
    the reference study ran gives 3.37 %, and its title did not say which: the title and the
    JSON name the head, and `train.sparse_head=false` counts the dense one."""
    from bench.flops import _title

    planner = FlopsPlanner()
    sparse, dense = (planner.setup(tiny(f"train.sparse_head={v}")) for v in ("true", "false"))
    assert (sparse["head"], dense["head"]) == ("sparse", "dense")
    assert "; sparse LM head" in _title(sparse) and "; dense LM head" in _title(dense)
    fd = {v: planner.methods(tiny(f"train.sparse_head={v}"), ["fdapt"])[0].train_flops
          for v in ("true", "false")}
    assert fd["true"] < fd["false"]  # the dense head's vocabulary at every position costs more
