"""The report's section on the probe's dev-chosen regularisation (bench/report/probe.py)."""
from __future__ import annotations

from bench.collect import collect
from bench.report.probe import probe_md
from tests.test_report import make_record, write

TASK = "chemprot_probe"


def probe(c: float, test: float, dev: list[float]) -> dict:
    """A probe's downstream entry: one fit, its chosen C, its dev score per C."""
    return {TASK: {"task": TASK, "metric": "micro_f1", "quick": True, "seeds": 1,
                   "examples": {"train": 1200, "dev": 200, "test": 3469},
                   "scores": {"micro_f1": {"mean": test, "std": 0.0, "values": [test]}},
                   "runs": [{"seed": 7, "test": {"micro_f1": test}, "dev_by_epoch": dev,
                             "best_epoch": dev.index(max(dev)), "probe_c": c}],
                   "task_hash": "hash-probe"}}


def study(tmp_path, fits: dict[str, list[tuple]]) -> list[str]:
    """One iid cell per seed; `fits[method][seed]` = (C, test score, dev scores)."""
    seeds = len(next(iter(fits.values())))
    for s in range(seeds):
        for m, by_seed in fits.items():
            c, test, dev = by_seed[s]
            write(tmp_path / f"p-iid-s{s}", make_record(m, "iid", s,
                                                        downstream=probe(c, test, dev)))
    return [str(tmp_path / "p-iid-s*")]


def row(lines: list[str], *cells: str) -> list[str]:
    hits = [line for line in lines if all(f"| {c} |" in line for c in cells)]
    assert len(hits) == 1, (cells, lines)
    return [v.strip() for v in hits[0].strip("|").split("|")]


def test_the_spread_splits_by_whether_both_models_chose_the_same_c(tmp_path):
    # ffdapt-paper matches fdapt to 0.1 point when both pick C=0.01, and loses 3.5 points
    # where it picks C=0.1 on a dev margin of one example: the spread is the readout's
    base = [0.50, 0.53, 0.52, 0.48]
    flip = [0.50, 0.52, 0.525, 0.48]
    fits = {"fdapt": [(0.01, 0.550, base), (0.01, 0.545, base), (0.01, 0.548, base),
                      (0.01, 0.552, base)],
            "ffdapt-paper": [(0.01, 0.551, base), (0.1, 0.510, flip), (0.01, 0.549, base),
                             (0.1, 0.517, flip)]}
    lines = probe_md(collect(study(tmp_path, fits)))
    assert lines[0] == "## The probe's choice of regularisation"
    chosen = row(lines, "iid", "ffdapt-paper", TASK)
    assert chosen[3:] == ["4", "0.01 ×2, 0.1 ×2", "0.8", "4 of 4"]
    assert row(lines, "iid", "fdapt", TASK)[3:] == ["4", "0.01 ×4", "1.0", "4 of 4"]
    spread = row(lines, "iid", "ffdapt-paper − fdapt", TASK)
    assert spread[3] == "4"
    assert spread[6] == "2: +0.10 (SD 0.00)"  # the same C: the methods agree
    assert spread[7] == "2: -3.50 (SD 0.00)"  # different C: the whole difference


def test_no_probe_no_section(tmp_path):
    rec = make_record("fdapt", "iid", 0)
    write(tmp_path / "p-iid-s0", rec)
    assert probe_md(collect([str(tmp_path / "p-iid-s0")])) == []
