"""Δ columns without their reference (no central, no fdapt run) and the reuse of `general`'s
scores: from record dicts and a monkeypatched fine-tune, no training."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from fdapt_core.downstream.finetune import readout_seed
from rich.console import Console

from bench import downstream as downstream_mod
from bench.downstream import downstream_rows, render
from bench.report.write import make_report
from bench.tables import notes, rich_table, rows_of, write_tables
from fdapt_core.config.run import build_config
from fdapt_core.downstream.tasks import TaskConfig, load_task
from tests.conftest import ROOT, TINY
from tests.test_report import make_record, scores, write

TASKS = [TaskConfig(name="ner", metric="f1"), TaskConfig(name="qa", metric="accuracy")]


def scored(ner: float, qa: float) -> dict:
    return {"downstream": {**scores("ner", "f1", [ner]), **scores("qa", "accuracy", [qa])}}


# ----------------------------------------------------------------------- bench downstream

def test_downstream_table_without_central_leaves_its_delta_empty():
    records = {"fdapt": scored(0.60, 0.50), "ffdapt-bottom": scored(0.55, 0.52),
               "general": scored(0.40, 0.45)}
    rows = {r["method"]: r for r in downstream_rows(records, TASKS)}
    assert all(r["ner_vs_central_pts"] is None and r["qa_vs_central_pct"] is None
               for r in rows.values())
    assert rows["ffdapt-bottom"]["fluctuation_vs_fdapt_pts"] == pytest.approx(5.0)
    assert rows["ffdapt-bottom"]["ner_f1"] == pytest.approx(55.0)
    lines = downstream_mod.downstream_notes(records, TASKS)
    assert any("no central run" in n and "Δ central" in n for n in lines)
    assert not any("fdapt" in n and "empty" in n for n in lines)
    render(list(rows.values()), TASKS, "t")


def test_downstream_table_without_central_or_fdapt():
    records = {"ffdapt-bottom": scored(0.55, 0.52), "ffdapt-paper": scored(0.50, 0.5)}
    rows = downstream_rows(records, TASKS)
    assert all(r["fluctuation_vs_fdapt_pts"] is None and r["ner_vs_central_pts"] is None
               for r in rows)
    lines = downstream_mod.downstream_notes(records, TASKS)
    assert any("no fdapt run" in n and "fluctuation" in n for n in lines)
    # a reference without a score on one task: only that task's Δ is empty, and said so
    records["central"] = {"downstream": scores("ner", "f1", [0.5])}
    rows = {r["method"]: r for r in downstream_rows(records, TASKS)}
    assert rows["ffdapt-bottom"]["ner_vs_central_pts"] == pytest.approx(5.0)
    assert rows["ffdapt-bottom"]["qa_vs_central_pts"] is None
    assert "central has no score on qa" in " ".join(downstream_mod.downstream_notes(records, TASKS))


@pytest.fixture
def federated_only(tmp_path):
    """A comparison folder of fdapt and ffdapt runs (no central) from a pretrained folder, and
    a tiny CoNLL task."""
    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    cfg = build_config({}, [*TINY, "model.preset=null", f"model.name_or_path={pretrained}"])
    folder = tmp_path / "results" / "fed"
    for m in ("fdapt", "ffdapt-bottom"):
        (folder / m / "model").mkdir(parents=True)
        (folder / m / "record.json").write_text(json.dumps({
            "schema_version": 1, "name": "fed", "method": m, "base_method": m.split("-")[0],
            "status": "finished", "config": cfg.to_dict(), "config_hash": f"h-{m}"}))
    data = tmp_path / "task"
    data.mkdir()
    sentences = "\n\n".join(f"w{i}\tO\ncancer\tB-Disease" for i in range(12))
    for split in ("train", "test"):
        (data / f"{split}.tsv").write_text(sentences + "\n")
    task = data / "ner.yaml"
    task.write_text(f"type: token_classification\nformat: conll\ntrain: {data / 'train.tsv'}\n"
                    f"test: {data / 'test.tsv'}\nmetric: f1\n")
    return folder, task, pretrained


@pytest.mark.slow
def test_downstream_reuses_general_scores_and_force_redoes_them(federated_only, monkeypatch):
    folder, task, pretrained = federated_only
    calls = []

    def fake_evaluate(model_dir, t, device, quick, data, on_step, pretrain_seed):
        # every model is read on its pretraining seed's own draw (the starting model too)
        assert data.seed == readout_seed(pretrain_seed)
        calls.append(model_dir)
        v = 0.5 + 0.01 * len(calls)
        return {"task": t.name, "metric": t.metric, "quick": quick, "readout_seed": data.seed,
                "scores": {t.metric: {"mean": v, "std": 0.0, "values": [v]}}}

    monkeypatch.setattr(downstream_mod, "evaluate_task", fake_evaluate)
    out = Console(file=io.StringIO(), width=200)

    def run(force=False):
        calls.clear()
        downstream_mod.run_downstream(out, out, [folder], [load_task(task)], True, "cpu",
                                      force)
        return list(calls)

    first = run()
    assert len(first) == 3  # fdapt, ffdapt-bottom and the starting model
    assert pretrained.resolve() in first  # general is read where the pretrained model lies
    general = json.loads((folder / "general" / "record.json").read_text())
    assert set(general["downstream"]) == {"ner"}
    # the code and device that scored the starting model, as a run record names its own
    assert general["environment"]["device"] == "cpu" and "git_commit" in general["environment"]
    assert run() == []  # every score reused, general's included
    assert json.loads((folder / "general" / "record.json").read_text()) == general
    assert len(run(force=True)) == 3
    md = (folder / "downstream.md").read_text()
    assert "no central run in this folder" in md
    assert "| fdapt |" in md and "| ffdapt-bottom |" in md
    # its title says what ran: the quick budget on a test subset, one fine-tuning seed
    assert ": downstream, quick budget, test subsets, 1 fine-tuning seed(s) per model" in md

    # the command line, on the same folder: all reused, so no model is loaded
    p = subprocess.run([sys.executable, "-m", "bench", "downstream", "--runs", str(folder),
                        "--tasks", str(task), "--quick", "--device", "cpu"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr + p.stdout
    assert "no central run in this folder" in p.stdout
    assert "general ner" not in p.stderr  # nothing fine-tuned again


# ----------------------------------------------------------------------- compare / report

def compare_record(method: str) -> dict:
    """A record with what `bench compare`'s table reads (test_report's plus run totals)."""
    rec = make_record(method, "iid", 0)
    rec["config"]["central"] = {"budget": "match"}
    rec["totals"].update({"steps": 10, "tokens": 5000, "wall_s": 3.0, "train_wall_s": 2.0,
                          "analytic_flops": 1e12, "trainable_share": 0.5, "mfu": None})
    return rec


def test_compare_table_without_fdapt_leaves_savings_empty(tmp_path):
    records = [compare_record(m) for m in ("central", "ffdapt-bottom")]
    rows = rows_of(records, [False, False])
    assert all(r["flops_saved_pct"] is None and r["train_wall_saved_pct"] is None
               for r in rows)
    footnotes = notes(records)
    assert any("no fdapt run" in n and "saved" in n for n in footnotes)
    write_tables(tmp_path, rows, "t", footnotes)
    assert "no fdapt run in this comparison" in (tmp_path / "compare.md").read_text()
    Console(file=io.StringIO()).print(rich_table(rows, "t"))
    # with fdapt there, the savings are filled and the note is gone
    records.append(compare_record("fdapt"))
    rows = rows_of(records, [False] * 3)
    assert rows[1]["flops_saved_pct"] == pytest.approx(25.0)
    assert not any("no fdapt run" in n for n in notes(records))


def test_report_without_central_or_fdapt_says_why_deltas_are_empty(tmp_path):
    res = tmp_path / "results"
    for m, (ner, qa) in {"ffdapt-bottom": (0.6, 0.5), "ffdapt-progressive": (0.62, 0.49)}.items():
        ds = {**scores("ner", "f1", [ner]), **scores("qa", "accuracy", [qa])}
        write(res / "fed", make_record(m, "iid", 0, downstream=ds))
    md = (make_report([str(res / "fed")]).out / "report.md").read_text()
    table1 = md.split("## Table 1")[1].split("## Table 2")[0]
    table2 = md.split("## Table 2")[1].split("## Figures")[0]
    assert "No central scores in this partition: Δ central is left empty (-)" in table1
    assert "No fdapt scores in this partition: Δ fdapt is left empty (-)" in table1
    assert "No fdapt run in this partition" in table2
    line = next(x for x in table2.splitlines() if x.startswith("| ffdapt-bottom |"))
    # FLOPs saved, time saved, Δ loss fdapt, and time to target (fdapt sets the target)
    assert line.count("| - |") == 4
    # fdapt there, but scored on one task only: Δ fdapt is empty on the other, and said so
    write(res / "fed", make_record("fdapt", "iid", 0, downstream=scores("ner", "f1", [0.61])))
    md = (make_report([str(res / "fed")]).out / "report.md").read_text()
    assert "No fdapt score on qa in this partition" in md
    assert "No fdapt run in this partition" not in md
