"""What a study's records say, for `bench study`: whether a record is scored on the study's
tasks, the test sizes its plan rescales to, and the compute its records hold."""
from __future__ import annotations

from pathlib import Path


def test_sizes(tasks, study) -> dict[str, int]:
    """Test examples each task is scored on in this study (its whole test set, or the quick
    subset): what the power plan rescales the pilot's test noise to."""
    from fdapt_core.downstream.finetune import load_task_data

    return {t.name: len(load_task_data(t, study.quick).test) for t in tasks}


def scored(rec: dict, tasks, quick: bool) -> bool:
    """Whether a run record holds scores of every task with these settings."""
    from fdapt_core.downstream.runs import current

    done = rec.get("downstream") or {}
    return all(current(done.get(t.name), rec, t, quick) for t in tasks)


def study_hours(folders: list[Path]) -> float:
    """Training wall time (every session of every run) and downstream fine-tuning time in
    the records of these folders, in hours."""
    from fdapt_core.records import read_json

    total = 0.0
    for rec_path in sorted(p for f in folders for p in f.glob("*/record.json")):
        rec = read_json(rec_path)
        total += (rec.get("totals") or {}).get("wall_s") or 0.0
        for d in (rec.get("downstream") or {}).values():
            total += sum(r.get("wall_s") or 0.0 for r in d.get("runs", []))
    return total / 3600
