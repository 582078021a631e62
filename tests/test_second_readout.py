"""A second readout of a study's models: another study file over the same cells, with other
tasks, reports only its own tasks into its own folder; a task's quick budget may choose on its
whole dev split."""
from __future__ import annotations

import json

import pytest
import yaml

from bench.collect import collect
from bench.report.write import make_report
from fdapt_core.downstream.finetune import load_task_data
from fdapt_core.downstream.tasks import load_task
from fdapt_core.errors import DataError
from fdapt_core.study import load_study, report_folder, report_tasks
from tests.test_downstream_e2e import task_files  # noqa: F401  (a fixture)
from tests.test_report import make_record, scores, write


def _records(root, seeds=(0, 1, 2)):
    """Cells whose records hold two readouts of the same models: `alpha_task` and `beta_task`."""
    for s in seeds:
        for m, shift in (("general", -3.0), ("fdapt", 0.0), ("ffdapt-paper", -0.1)):
            down = {**scores("alpha_task", "f1", [0.50 + (shift + s) / 100]),
                    **scores("beta_task", "f1", [0.60 + (shift + 2 * s) / 100])}
            write(root / f"st-iid-s{s}", make_record(m, "iid", s, downstream=down))
    return [str(root / "st-iid-s*")]


def test_a_report_reads_only_the_tasks_it_is_given(tmp_path):
    specs = _records(tmp_path)
    assert [t.name for t in collect(specs).tasks] == ["alpha_task", "beta_task"]
    assert [t.name for t in collect(specs, ["beta_task"]).tasks] == ["beta_task"]
    rep = make_report(specs, tmp_path / "report-second", tasks=["beta_task"])
    text = (rep.out / "report.md").read_text()
    csv = (rep.out / "verdicts.csv").read_text()
    assert "beta_task" in text and "alpha_task" not in text
    assert "beta_task" in csv and "alpha_task" not in csv


def test_a_task_scored_nowhere_is_refused_by_name(tmp_path):
    specs = _records(tmp_path)
    with pytest.raises(DataError, match="'gamma_task' is scored in no record"
                       ".*scored: alpha_task, beta_task"):
        collect(specs, ["gamma_task"])


def test_a_study_names_its_report_folder_and_tasks(tmp_path):
    body = {"name": "st", "partitions": ["iid"], "methods": ["fdapt"], "seeds": [0],
            "tasks": ["ncbi_disease:probe"], "out": str(tmp_path / "st")}
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(body))
    study, _ = load_study(path)
    assert report_folder(study) == tmp_path / "st" / "report"
    assert report_tasks(study, []) == []
    path.write_text(yaml.safe_dump({**body, "report": str(tmp_path / "st" / "report-2"),
                                    "report_tasks": ["chemprot_probe"]}))
    study, _ = load_study(path)
    assert report_folder(study) == tmp_path / "st" / "report-2"
    assert report_tasks(study, []) == ["chemprot_probe"]


def test_a_null_dev_sample_is_the_whole_dev_split(tmp_path):
    rows = {split: [{"text": f"{split} {i}", "label": "ab"[i % 2]} for i in range(n)]
            for split, n in (("train", 40), ("dev", 30), ("test", 20))}
    for split, items in rows.items():
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in items))
    body = {"name": "t", "type": "sequence_classification", "format": "jsonl",
            "train": str(tmp_path / "train.jsonl"), "dev": str(tmp_path / "dev.jsonl"),
            "test": str(tmp_path / "test.jsonl"), "metric": "accuracy",
            "quick": {"train_examples": 10, "dev_examples": 8, "test_examples": None}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(body))
    assert len(load_task_data(load_task(tmp_path / "t.yaml"), quick=True).dev) == 8
    body["quick"]["dev_examples"] = None
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(body))
    data = load_task_data(load_task(tmp_path / "t.yaml"), quick=True)
    assert [x.text for x in data.dev] == [r["text"] for r in rows["dev"]]
    assert len(data.train) == 10 and len(data.test) == 20


@pytest.mark.slow
def test_a_second_readout_reuses_every_model_and_keeps_the_first_readouts_tables(
        tmp_path, cache_dir, task_files):  # noqa: F811
    from tests.test_study import _bench, _snapshot, _study_file
    path = _study_file(tmp_path, cache_dir, task_files["ner"][0])
    first = _bench("study", "--config", str(path))
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp_path / "study"
    cell = out / "runs" / "tiny-iid-s0"
    first_tables = {n: (cell / n).read_bytes() for n in ("downstream.md", "downstream.csv")}
    first_report = _snapshot(out / "report")
    second = tmp_path / "second.yaml"
    body = yaml.safe_load(path.read_text())
    second.write_text(yaml.safe_dump({**body, "tasks": [f"{task_files['ner'][0]}:probe"],
                                      "report": str(out / "report-probe")}))
    again = _bench("study", "--config", str(second))
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("finished, reused") == 2  # central and fdapt: nothing trained
    assert {n: (cell / n).read_bytes() for n in first_tables} == first_tables
    assert "ner_probe" in (cell / "downstream-report-probe.md").read_text()
    assert _snapshot(out / "report") == first_report
    rows = (out / "report-probe" / "verdicts.csv").read_text().splitlines()
    tasks = {r.split(",")[4] for r in rows[1:]}
    assert tasks == {"ner_probe"}


def test_a_report_task_nothing_scores_is_refused_before_any_training(tmp_path):
    """A study file whose `report_tasks` names a task it does not score (a typo, a readout
    never run) trained its whole first cell, then refused: hours, in a real study."""
    from rich.console import Console

    from bench.study.flow import load_grid, run_study
    from fdapt_core.errors import FdaptError
    from tests.conftest import ROOT

    body = {"name": "st", "config": str(ROOT / "configs" / "default.yaml"),
            "partitions": ["iid"], "methods": ["fdapt"], "seeds": [0],
            "tasks": ["ncbi_disease:probe"], "report_tasks": ["ncbi_disease_prob"],
            "out": str(tmp_path / "st")}
    path = tmp_path / "st.yaml"
    path.write_text(yaml.safe_dump(body))
    study, base, grid, tasks = load_grid(path, [], ROOT / "configs" / "tasks")

    def train(*args, **kwargs):
        raise AssertionError("trained before the study's report tasks were checked")

    console = Console(file=open(tmp_path / "log", "w"))
    with pytest.raises(FdaptError, match="report_tasks: ncbi_disease_prob is scored neither"):
        run_study(console, console, train, study, base, grid, tasks, path, [], "cpu", False)
    assert not (tmp_path / "st").exists()
