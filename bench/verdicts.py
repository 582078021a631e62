"""Differences with their uncertainty, and the reference study's two claims as verdicts.

A downstream difference between two methods of one partition is read on paired pretraining
seeds and the same test examples. With per-example outcomes beside the records
(`fdapt_core/downstream/outcomes.py`), its interval is a hierarchical bootstrap: seeds
(paired, with replacement), then test examples. Without them (older records) it is a
t-interval over the per-seed differences of the recorded means, which needs two seeds. The
study's claims, with a margin of 1 % of the reference's score:

1. fdapt is within 1 % of central downstream, in every partition (IID and non-IID);
2. ffdapt saves compute (the study: 12.1 % of training FLOPs) with downstream changes under
   1 % relative to fdapt.

Each is tested per partition and task with two one-sided tests at α = 0.05 (the 90 %
interval; `fdapt_core.stats.equivalence`): equivalent, not equivalent, or inconclusive.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Optional

import numpy as np

from fdapt_core.downstream import outcomes as oc
from fdapt_core.stats import (EQUIVALENT, INCONCLUSIVE, NOT_EQUIVALENT, Interval,
                              equivalence, hierarchical_bootstrap, t_interval)

from .collect import Cell, Collection, Task, task_scores

MARGIN = 0.01  # the study's "within 1 %", relative to the reference's score
CLAIMED_FLOPS_SAVED = 12.1  # % the reference study reports for FFDAPT
RESAMPLES = 1000
SEED = 0  # the bootstrap's own seed: the same report every time


LEVELS = (0.95, 0.90)  # every Δ shown with its 95 % interval; TOST at α = 0.05 reads the 90 %


@dataclass(frozen=True)
class Difference:
    """method − reference on one task (points), with its intervals and how they were taken."""

    estimate: float
    intervals: dict[float, Interval]  # level → interval (empty: too little data for one)
    method: str  # "bootstrap (seeds × examples)" or "t over seeds"
    seeds: int
    reference_mean: float


def _outcomes(cell: Cell, task: Task) -> dict[int, dict]:
    """seed → per-example outcomes of that run, where the files are there."""
    found = {}
    for run in cell.runs:
        d = run.rec.get("downstream", {}).get(task.name)
        if d and d.get("outcomes") and d.get("task_hash") == task.task_hash:
            data = oc.load(run.folder, task.name, task.task_hash)
            if data is not None:
                found[run.seed] = data
    return found


def _means(cell: Cell, task: Task) -> dict[int, float]:
    out = {}
    for run in cell.runs:
        v = task_scores(run, task)
        if v is not None:
            out[run.seed] = statistics.fmean(v)
    return out


def pair_seeds(a: dict, b: dict) -> tuple[dict, dict]:
    """Seed-keyed values of two cells; the starting model has one record whatever the seed,
    so a lone value that pairs with no seed pairs with every seed of the other side."""
    if not set(a) & set(b):
        if len(b) == 1:
            b = {s: next(iter(b.values())) for s in a}
        elif len(a) == 1:
            a = {s: next(iter(a.values())) for s in b}
    return a, b


def difference(cell: Cell, ref: Cell, task: Task) -> Optional[Difference]:
    """`cell` − `ref` on `task` in points, over their paired seeds (None if none pair)."""
    a, b = pair_seeds(_outcomes(cell, task), _outcomes(ref, task))
    paired = sorted(set(a) & set(b))
    same_test = paired and all(a[s]["n"] == b[s]["n"] and a[s].get("true") == b[s].get("true")
                               for s in paired)
    if same_test:
        scored = {"a": a, "b": b}

        def score(seed, which, idx):
            return 100.0 * oc.mean_score(scored[which][seed], idx)

        intervals = hierarchical_bootstrap(score, paired, a[paired[0]]["n"], "a", "b",
                                           resamples=RESAMPLES, seed=SEED, levels=LEVELS)
        ref_mean = statistics.fmean(100.0 * oc.mean_score(b[s]) for s in paired)
        return Difference(intervals[0].estimate, dict(zip(LEVELS, intervals)),
                          "bootstrap (seeds × examples)", len(paired), ref_mean)
    ma, mb = pair_seeds(_means(cell, task), _means(ref, task))
    paired = sorted(set(ma) & set(mb))
    if not paired:
        return None
    diffs = [ma[s] - mb[s] for s in paired]
    intervals = {level: t_interval(diffs, level) for level in LEVELS}
    return Difference(statistics.fmean(diffs),
                      {k: v for k, v in intervals.items() if v is not None}, "t over seeds",
                      len(paired), statistics.fmean(mb[s] for s in paired))


@dataclass(frozen=True)
class MajorityCheck:
    """A classification task's best model against always answering the test set's most
    common label (points; the bootstrap draws the same examples for both)."""

    task: Task
    label: str  # the majority label
    score: float  # the task's metric of always answering it (points)
    best: str  # "partition method" of the best mean score
    above: Interval  # best − majority, 95 %

    @property
    def beaten(self) -> bool:
        return self.above.low > 0


def majority_check(coll: Collection, task: Task) -> Optional[MajorityCheck]:
    """Whether some model beats the majority class on `task` (None for NER, or with no
    per-example outcomes): a task no model beats measures nothing about pretraining, so its
    differences carry no verdict. The best cell by mean score is tested."""
    best = None
    for part in coll.partitions:
        for m in coll.methods:
            outs = _outcomes(cell, task) if (cell := coll.cell(part, m)) else {}
            if not outs:
                continue
            if next(iter(outs.values())).get("kind") != "labels":
                return None
            mean = statistics.fmean(oc.mean_score(o) for o in outs.values())
            if best is None or mean > best[0]:
                best = (mean, f"{part} {m}", outs)
    if best is None:
        return None
    _, name, outs = best
    desc = next(iter(outs.values()))
    majority = int(np.bincount(desc["true"], minlength=len(desc["labels"])).argmax())
    always = {"pred": [majority] * desc["n"]}

    def score(seed, which, idx):
        return 100.0 * (oc.mean_score(outs[seed], idx) if which == "model"
                        else oc.score(desc, always, idx))

    above = hierarchical_bootstrap(score, sorted(outs), desc["n"], "model", "majority",
                                   resamples=RESAMPLES, seed=SEED, levels=(0.95,))[0]
    return MajorityCheck(task, desc["labels"][majority], 100.0 * oc.score(desc, always),
                         name, above)


# Pretraining seeds a verdict needs: their spread is the interval's largest part, and one seed
# has none to resample (a 1-seed study once reported "holds" on an interval that knew only
# test-example noise); two give a single difference. Below this a row says so.
MIN_SEEDS = 3
TOO_FEW_SEEDS = "too few seeds"


def verdict(diff: Optional[Difference]) -> tuple[str, Optional[Interval], Optional[float]]:
    """(verdict, the 90 % interval that decided it, the margin in points)."""
    if diff is None:
        return "no data", None, None
    margin = MARGIN * abs(diff.reference_mean)
    ci = diff.intervals.get(0.90)
    if diff.seeds < MIN_SEEDS:
        return TOO_FEW_SEEDS, ci, margin
    if ci is None:
        return INCONCLUSIVE, None, margin  # one seed and no outcomes: no interval at all
    return equivalence(ci, margin), ci, margin


def differences(coll: Collection) -> dict[tuple[str, str, str, str], Optional[Difference]]:
    """(partition, method, reference, task name) → the difference, for every method against
    central and against fdapt where both cells are there."""
    out = {}
    for part in coll.partitions:
        for ref in ("central", "fdapt"):
            rcell = coll.cell(part, ref)
            if rcell is None:
                continue
            for m in coll.methods:
                cell = coll.cell(part, m)
                if cell is None or m == ref:
                    continue
                for task in coll.tasks:
                    out[(part, m, ref, task.name)] = difference(cell, rcell, task)
    return out


def claim_rows(coll: Collection, diffs: dict, flops_saved: dict,
               left_out: tuple[str, ...] = ()) -> list[dict]:
    """One row per (claim, partition, method, task): the difference, its 90 % interval, the
    margin and the verdict. `diffs` from `differences`; `flops_saved[(part, method)]` the
    exact FLOPs saved vs fdapt (%); `left_out`: task labels that carry no verdict (see
    `majority_check`)."""
    rows = []
    for part in coll.partitions:
        for task in coll.tasks:
            if task.label in left_out:
                continue
            d = diffs.get((part, "fdapt", "central", task.name))
            if coll.cell(part, "fdapt") and coll.cell(part, "central"):
                v, ci, margin = verdict(d)
                rows.append(_row(1, part, "fdapt", "central", task, d, ci, margin, v, None))
            for m in coll.methods:
                if not m.startswith("ffdapt") or coll.cell(part, m) is None \
                        or coll.cell(part, "fdapt") is None:
                    continue
                d = diffs.get((part, m, "fdapt", task.name))
                v, ci, margin = verdict(d)
                rows.append(_row(2, part, m, "fdapt", task, d, ci, margin, v,
                                 flops_saved.get((part, m))))
    return rows


def _row(claim, part, method, ref, task, d, ci, margin, v, flops) -> dict:
    return {"claim": claim, "partition": part, "method": method, "reference": ref,
            "task": task.label, "metric": task.metric,
            "delta_pts": None if d is None else d.estimate,
            "ci90_low": None if ci is None else ci.low,
            "ci90_high": None if ci is None else ci.high,
            "margin_pts": margin, "verdict": v, "seeds": None if d is None else d.seeds,
            "interval_from": None if d is None else d.method,
            "flops_saved_vs_fdapt_pct": flops}


def claim_summary(rows: list[dict], claim: int) -> str:
    """holds (every test equivalent), breaks (some test not equivalent), or cannot be
    decided on this data."""
    mine = [r["verdict"] for r in rows if r["claim"] == claim]
    if not mine or all(v == "no data" for v in mine):
        return "not tested (no records for it)"
    if any(v == NOT_EQUIVALENT for v in mine):
        return "breaks"
    if all(v == EQUIVALENT for v in mine):
        return "holds"
    if all(v in (TOO_FEW_SEEDS, "no data") for v in mine):
        return f"cannot be decided: fewer than {MIN_SEEDS} pretraining seeds"
    return "cannot be decided on this data"
