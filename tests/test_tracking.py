"""Experiment tracking through TensorBoard and MLflow (fdapt_core/tracking.py): every round's
held-out loss, read back through the libraries' own readers, is the record's; a compare groups
its runs in one MLflow experiment, tagged by method; a backend that cannot work is one line
before anything trains."""
from __future__ import annotations

import subprocess
import sys

import pytest

from fdapt_core.errors import ConfigError
from fdapt_core.runner import run
from fdapt_core.tracking import Tee, check, mlflow_uri, open_tracker
from tests.conftest import ROOT

pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")


def _tracked(cfg, method):
    tracker = open_tracker(cfg, method)
    try:
        return run(cfg, method, callbacks=Tee(tracker))
    finally:
        tracker.close()


@pytest.mark.slow
def test_every_rounds_held_out_loss_reads_back_from_both_trackers(tiny, tmp_path):
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny("fl.rounds=2", "tracking.backends=[tensorboard, mlflow]", "name=tracked",
               f"tracking.dir={tmp_path / 'tracking'}")
    records = {m: _tracked(cfg, m) for m in ("central", "fdapt", "ffdapt")}
    mlflow.set_tracking_uri(mlflow_uri(cfg))
    runs = mlflow.search_runs(experiment_names=["tracked"])
    assert sorted(runs["tags.method"]) == ["central", "fdapt", "ffdapt"]
    client = mlflow.tracking.MlflowClient()
    for _, r in runs.iterrows():
        rec = records[r["tags.method"]]
        history = client.get_metric_history(r["run_id"], "eval_loss")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == \
            [(i + 1, row["eval_loss"]) for i, row in enumerate(rec["rounds"])]
        assert r["params.fl.rounds"] == "2" and r["status"] == "FINISHED"
        assert r["metrics.total_train_flops"] == rec["totals"]["train_flops"]
    for m, rec in records.items():
        folder = tmp_path / "tracking" / "tensorboard" / "tracked" / f"{m}-iid-s0"
        events = EventAccumulator(str(folder))
        events.Reload()
        losses = [(e.step, e.value) for e in events.Scalars("round/eval_loss")]
        # TensorBoard keeps float32
        assert [s for s, _ in losses] == [1, 2]
        assert [v for _, v in losses] == pytest.approx([r["eval_loss"] for r in rec["rounds"]],
                                                       rel=1e-6)
        assert "round/bytes_up" in events.Tags()["scalars"] or m == "central"


def test_a_tracking_backend_that_cannot_work_is_refused_before_training(tiny, tmp_path,
                                                                         monkeypatch):
    with pytest.raises(ConfigError, match="tracking.backends: 'wandb' is not one of"):
        tiny("tracking.backends=[wandb]")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        cfg = tiny("tracking.backends=[tensorboard]", f"tracking.dir={locked / 'sub'}")
        if not __import__("os").access(locked, __import__("os").W_OK):  # root writes anyway
            with pytest.raises(ConfigError, match="tracking.dir: cannot write"):
                check(cfg)
    finally:
        locked.chmod(0o700)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"mlflow needs the tracking extra"):
        check(tiny("tracking.backends=[mlflow]"))


def test_tracking_leaves_the_config_hash_alone(tiny):
    """Where a run is logged is not what it computes: a finished record is reused whether or
    not it was tracked."""
    assert tiny("tracking.backends=[mlflow]").hash() == tiny().hash()


@pytest.mark.slow
def test_report_to_on_the_command_line_is_one_line_when_refused(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bench", "compare", "--methods", "fdapt",
                        "--report-to", "wandb", "--set", f"output_dir={tmp_path / 'r'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.startswith("error: tracking.backends: 'wandb'")
    assert "Traceback" not in p.stderr and not (tmp_path / "r").exists()
