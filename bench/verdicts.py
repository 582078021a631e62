"""Differences with their uncertainty, and the FDAPT paper's claims as verdicts.

The paper (Jiang, Svoboda and Lane, arXiv 2307.06933) claims, in its words:

1. "FDAPT can maintain competitive downstream task performance to the centralized baseline in
   both IID and non-IID situations";
2. "FFDAPT improves the computational efficiency by 12.1% on average and exhibits similar
   downstream task performance to vanilla FDAPT, with general performance fluctuations
   remaining less than 1%".

Each downstream half is tested as equivalence within a margin fixed before any run (a study
file's `margin_pts`, 1 point by default: a stated choice, not the paper's) per partition and
task, with two one-sided tests at α = 0.05 (`fdapt_core.stats`). A claim holds only if every
row is equivalent (intersection-union: each row at α, no correction needed); it breaks only if
some row is shown beyond the margin after Holm's correction across the claim's rows; else it
cannot be decided, and the power plan (`bench/plan.py`) says what deciding it would take.
Claim 2's efficiency half is the exact FLOPs count saved (the training-time interval where no
FLOPs were counted) against 12.1 %, scoped to the set-up it was counted on (`scope_of`), and
claim 2 holds only if both its halves do. Other freeze policies than the paper's allocation are tested apart ("beyond the paper").

A difference is read on paired pretraining seeds and the same test examples. Each
pretraining seed's models are fine-tuned with that seed's own fine-tuning seeds (the same for
every method at that seed, fresh for every other seed): per seed the mean over its
fine-tuning seeds, a t-interval over seeds widened by the test-set noise they share (from
resampling examples), Satterthwaite's degrees of freedom (`fdapt_core.stats.paired_difference`).
Records whose fine-tuning seeds were shared by every pretraining seed get the crossed
random-effects interval (`crossed_difference`), whose fine-tuning part shows in its few
degrees of freedom (`finetune_design`). A row is "equivalent" only on a task that shows DAPT
over the starting model (`assay`). Without per-example outcomes (older records) it is the
t-interval over the per-seed differences of the recorded means, without the test part.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Optional

import numpy as np

from fdapt_core.downstream import outcomes as oc
from fdapt_core.stats import (EQUIVALENT, INCONCLUSIVE, NOT_EQUIVALENT, Interval,
                              PairedDifference, crossed_difference, equivalent, holm,
                              paired_difference, replicate_variances, shared_test_variance)

from .cell_stats import task_scores
from .scope import verdict_scope
from .collect import Cell, Collection, Task
from .efficiency import (NOT_REPRODUCED, efficiency_summary, efficiency_words, scope_of,
                         scope_words)

MARGIN_PTS = 1.0  # the default equivalence margin (points): a stated choice
ALPHA = 0.05  # each TOST, and Holm's family-wise level for "not equivalent"
RESAMPLES = 1000  # resamples of test examples for the shared test noise
SEED = 0  # the resampling's own seed: the same report every time
LEVELS = (0.95, 0.90)  # every Δ shown with its 95 % interval; TOST at α = 0.05 reads the 90 %

QUOTES = {
    1: "FDAPT can maintain competitive downstream task performance to the centralized "
       "baseline in both IID and non-IID situations",
    2: "FFDAPT improves the computational efficiency by 12.1% on average and exhibits similar "
       "downstream task performance to vanilla FDAPT, with general performance fluctuations "
       "remaining less than 1%",
}
PAPER = "Jiang, Svoboda and Lane, FDAPT (arXiv 2307.06933), abstract"

# Pretraining seeds a verdict needs: tests/test_coverage.py shows the interval's coverage at
# 3 seeds and more; one seed has no spread to read (a 1-seed study once reported "holds" on
# an interval that knew only test-example noise), two leave a t with one degree of freedom.
MIN_SEEDS = 3
TOO_FEW_SEEDS = "too few seeds"


@dataclass(frozen=True)
class Difference:
    """method − reference on one task (points), with its intervals and how they were taken."""

    estimate: float
    intervals: dict[float, Interval]  # level → interval (empty: too little data for one)
    method: str  # how the interval was taken
    seeds: int
    reference_mean: float
    paired: Optional[PairedDifference] = None
    by_seed_ft: Optional[np.ndarray] = None  # [seed, fine-tuning seed] differences (points)
    test_n: Optional[int] = None  # test examples it was read on
    design: Optional[str] = None  # fine-tuning seeds: FRESH, CROSSED or MIXED


def _arrays(data: dict, recorded: Optional[dict] = None) -> dict:
    """Outcomes with their lists as arrays, once, so that resampling them is cheap, and the
    fine-tuning seed of each entry (`ft_seeds`): the entry's own, else the record's runs'
    (outcome files written before entries named it), else 0, 1, … (what every model was
    fine-tuned with before seeds were derived from the pretraining seed)."""
    out = dict(data)
    if "true" in out:
        out["true"] = np.asarray(out["true"])
    entries = data["seeds"]
    runs = (recorded or {}).get("runs") or []
    if all("seed" in e for e in entries):
        ids = [int(e["seed"]) for e in entries]
    elif len(runs) == len(entries) and all("seed" in r for r in runs):
        ids = [int(r["seed"]) for r in runs]
    else:
        ids = list(range(len(entries)))
    out["ft_seeds"] = tuple(ids)
    # the readout's data draw: entries written before it followed the pretraining seed name
    # none, and every model was read on seed 0's draw
    out["readout_seeds"] = tuple(sorted({int(e.get("readout_seed", 0)) for e in entries}))
    out["seeds"] = [{k: np.asarray(v) for k, v in e.items() if k not in ("seed", "readout_seed")}
                    for e in entries]
    return out


def _outcomes(cell: Cell, task: Task) -> dict[int, dict]:
    """seed → per-example outcomes of that run, where the files are there."""
    found = {}
    for run in cell.runs:
        d = run.rec.get("downstream", {}).get(task.name)
        if d and d.get("outcomes") and d.get("task_hash") == task.task_hash:
            data = oc.load(run.folder, task.name, task.task_hash)
            if data is not None:
                found[run.seed] = _arrays(data, d)
    return found


def _ft_scores(data: dict, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """The task's score (points) of each fine-tuning seed's model: on the test set
    (`[seed]`), or on every resample of `outcomes.resample_weights` (`[seed, resample]`)."""
    if weights is None:
        return np.array([100.0 * oc.score(data, s) for s in data["seeds"]])
    return np.array([100.0 * oc.resampled_scores(data, s, weights) for s in data["seeds"]])


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


FRESH, CROSSED, MIXED = "fresh", "crossed", "mixed"


def finetune_design(sides: tuple[dict, ...], paired: list) -> str:
    """How the fine-tuning seeds of the paired pretraining seeds relate. `fresh`: no
    fine-tuning seed serves two pretraining seeds on either side, so each pretraining seed's
    difference carries its own fine-tuning noise and the spread between them shows it all.
    `crossed`: on some side every pretraining seed used the same fine-tuning seeds (all
    studies before seeds were derived from the pretraining seed, or one start model scored
    once for all), so a fine-tuning seed's effect is shared by every difference. `mixed`:
    neither; no interval is read from it."""
    shared = False
    for side in sides:
        ids = [side[s]["ft_seeds"] for s in paired]
        if all(i == ids[0] for i in ids[1:]):
            shared = True
        elif sum(len(set(i)) for i in ids) != len(set().union(*map(set, ids))):
            return MIXED
    return CROSSED if shared else FRESH


def readout_shared(sides: tuple[dict, ...], paired: list) -> bool:
    """Whether some readout draw (training subsample, dev sample: `finetune.readout_seed`)
    served two pretraining seeds on either side: its effect on the readout, a probe's choice
    of C among them, then moves those seeds' differences alike, and the spread between seeds
    cannot show it (a starting model read once for every seed is the same case)."""
    for side in sides:
        seen: dict[int, int] = {}
        for s in paired:
            for r in side[s]["readout_seeds"]:
                if seen.setdefault(r, s) != s:
                    return True
    return False


def difference(cell: Cell, ref: Cell, task: Task) -> Optional[Difference]:
    """`cell` − `ref` on `task` in points, over their paired seeds (None if none pair)."""
    a, b = pair_seeds(_outcomes(cell, task), _outcomes(ref, task))
    paired = sorted(set(a) & set(b))
    same_test = paired and all(a[s]["n"] == b[s]["n"] and np.array_equal(
        a[s].get("true", []), b[s].get("true", [])) for s in paired)
    if same_test:
        return _from_outcomes(a, b, paired)
    ma, mb = pair_seeds(_means(cell, task), _means(ref, task))
    paired = sorted(set(ma) & set(mb))
    if not paired:
        return None
    d = paired_difference([ma[s] - mb[s] for s in paired], 0.0)
    intervals = {level: d.interval(level) for level in LEVELS}
    return Difference(d.estimate, {k: v for k, v in intervals.items() if v is not None},
                      "t over seeds (recorded means; no test-set part)", len(paired),
                      statistics.fmean(mb[s] for s in paired), d)


def _from_outcomes(a: dict, b: dict, paired: list) -> Difference:
    n = a[paired[0]]["n"]
    fa = {s: _ft_scores(a[s]) for s in paired}
    fb = {s: _ft_scores(b[s]) for s in paired}
    per_seed = [fa[s].mean() - fb[s].mean() for s in paired]
    same_ft = all(len(fa[s]) == len(fb[s]) == len(fa[paired[0]]) for s in paired)
    by_seed_ft = np.array([fa[s] - fb[s] for s in paired]) if same_ft else None
    # the same resamples of the test set for every seed and both methods, by the unit its
    # examples share (a sentence), or by example
    weights = oc.unit_resample_weights(a[paired[0]], np.random.default_rng(SEED), RESAMPLES)
    reps = np.array([_ft_scores(a[s], weights).mean(axis=0)
                     - _ft_scores(b[s], weights).mean(axis=0) for s in paired]).T
    shared = shared_test_variance(*replicate_variances(reps))
    design = finetune_design((a, b), paired)
    ref_mean = statistics.fmean(fb[s].mean() for s in paired)
    if len(paired) > 1 and readout_shared((a, b), paired):
        # no interval, and so no verdict; its variance components still serve a plan as a
        # pilot's, which then misses the draw's own variance (`plan.plan_md` says so)
        return Difference(float(np.mean(per_seed)), {}, SHARED_READOUT_HOW, len(paired),
                          ref_mean, paired_difference(per_seed, shared), by_seed_ft, n, design)
    if design == FRESH or len(paired) < 2:  # one seed: no interval either way
        d = paired_difference(per_seed, shared)
        how = FRESH_HOW if len(paired) > 1 else ONE_SEED_HOW
    elif design == CROSSED and by_seed_ft is not None and by_seed_ft.shape[1] > 1:
        d, how = crossed_difference(by_seed_ft, shared), CROSSED_HOW
    else:
        why = (MIXED_HOW if design == MIXED else ONE_SHARED_HOW if design == CROSSED
               and by_seed_ft is not None and by_seed_ft.shape[1] == 1 else UNALIGNED_HOW)
        return Difference(float(np.mean(per_seed)), {}, why, len(paired), ref_mean, None,
                          by_seed_ft, n, design)
    intervals = {level: d.interval(level) for level in LEVELS}
    return Difference(d.estimate, {k: v for k, v in intervals.items() if v is not None}, how,
                      len(paired), ref_mean, d, by_seed_ft, n, design)


FRESH_HOW = "t over seeds + shared test noise"
ONE_SEED_HOW = "none: one seed"
SHARED_READOUT_HOW = ("none: one readout draw (training and dev examples) shared by several "
                      "pretraining seeds (its effect cannot be told from the difference)")
CROSSED_HOW = ("crossed random effects (fine-tuning seeds shared by every pretraining seed) "
               "+ shared test noise")
ONE_SHARED_HOW = ("none: one fine-tuning seed shared by every pretraining seed (its effect "
                  "cannot be told from the difference)")
MIXED_HOW = "none: fine-tuning seeds partly shared between pretraining seeds"
UNALIGNED_HOW = "none: fine-tuning seeds shared, but their counts differ between models"


@dataclass(frozen=True)
class MajorityCheck:
    """A classification task's best model against always answering the test set's most
    common label (points)."""

    task: Task
    label: str  # the majority label
    score: float  # the task's metric of always answering it (points)
    best: str  # "partition method" of the best mean score
    above: Optional[Interval]  # best − majority, 95 % (None: one seed)
    estimate: float

    @property
    def beaten(self) -> bool:
        return self.above.low > 0 if self.above is not None else self.estimate > 0


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
            mean = statistics.fmean(float(_ft_scores(o).mean()) for o in outs.values())
            if best is None or mean > best[0]:
                best = (mean, f"{part} {m}", outs)
    if best is None:
        return None
    _, name, outs = best
    desc = next(iter(outs.values()))
    majority = int(np.bincount(desc["true"], minlength=len(desc["labels"])).argmax())
    # the constant answer, once for each fine-tuning seed of the model it is read against:
    # the same design, no noise of its own
    always = {s: {**o, "seeds": [{"pred": np.full(desc["n"], majority)}] * len(o["seeds"])}
              for s, o in outs.items()}
    diff = _from_outcomes(outs, always, sorted(outs))
    return MajorityCheck(task, desc["labels"][majority],
                         float(_ft_scores(next(iter(always.values())))[0]), name,
                         diff.intervals.get(0.95), diff.estimate)


def differences(coll: Collection) -> dict[tuple[str, str, str, str], Optional[Difference]]:
    """(partition, method, reference, task name) → the difference, for every method against
    central, fdapt and the starting model (`general`) where both cells are there."""
    out = {}
    for part in coll.partitions:
        for ref in ("central", "fdapt", "general"):
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


def paper_allocation(cell: Cell) -> bool:
    """An ffdapt cell freezing by the paper's allocation (and nothing else changed)."""
    run = cell.runs[0]
    policy = run.rec.get("config", {}).get("freeze", {}).get("policy")
    return cell.method in ("ffdapt", "ffdapt-paper") and policy == "paper"


ASSAY_ALPHA = 0.10  # DAPT shown: fdapt − general above 0, one-sided at 90 %
NO_ASSAY = "cannot be decided: the task does not detect DAPT at this budget"
NO_PLACEBO = "cannot be decided: DAPT against the starting model not measured"


def assay(diffs: dict, part: str, task: Task) -> dict:
    """Assay sensitivity (ICH E10): whether this task, at this budget, shows DAPT's own effect
    over the starting model (fdapt − general above 0, one-sided at 90 %). An equivalence on
    a task that cannot see DAPT says nothing: the starting model itself would pass it."""
    d = diffs.get((part, "fdapt", "general", task.name))
    p = d.paired.p_above(0.0) if d is not None and d.paired is not None and d.intervals \
        and d.seeds >= MIN_SEEDS else None
    return {"dapt_shown": None if p is None else p < ASSAY_ALPHA,
            "dapt_delta_pts": None if d is None else d.estimate, "dapt_p": p}


def claim_rows(coll: Collection, diffs: dict, efficiency: dict,
               left_out: tuple[str, ...] = (), margin: float = MARGIN_PTS) -> list[dict]:
    """One row per (claim, partition, method, task): the difference, its 90 % interval, the
    margin, whether the task shows DAPT (`assay`) and the verdict. Claims 1 and 2 are the
    paper's; claim "beyond" tests other freeze policies against fdapt the same way. `diffs`
    from `differences`; `efficiency[(part, method)]` the efficiency row (FLOPs and time saved
    vs fdapt); `left_out`: task labels that carry no verdict (see `majority_check`)."""
    rows = []
    for part in coll.partitions:
        for task in coll.tasks:
            if task.label in left_out:
                continue
            shown = assay(diffs, part, task)
            if coll.cell(part, "fdapt") and coll.cell(part, "central"):
                rows.append(_row(1, part, "fdapt", "central", task,
                                 diffs.get((part, "fdapt", "central", task.name)), margin,
                                 None, shown, verdict_scope(coll.cell(part, "fdapt"),
                                                            coll.cell(part, "central"),
                                                            task.name)))
            for m in coll.methods:
                cell = coll.cell(part, m)
                if not m.startswith("ffdapt") or cell is None \
                        or coll.cell(part, "fdapt") is None:
                    continue
                claim = 2 if paper_allocation(cell) else "beyond"
                rows.append(_row(claim, part, m, "fdapt", task,
                                 diffs.get((part, m, "fdapt", task.name)), margin,
                                 {**(efficiency.get((part, m)) or {}), **scope_of(cell)},
                                 shown, verdict_scope(cell, coll.cell(part, "fdapt"),
                                                      task.name)))
    for claim in (1, 2, "beyond"):  # Holm within each claim's family of rows
        mine = [r for r in rows if r["claim"] == claim]
        for r, beyond in zip(mine, holm([r["p_beyond_margin"] for r in mine], ALPHA)):
            if beyond:
                r["verdict"] = NOT_EQUIVALENT
        _holm_intervals(mine, [diffs.get(key) for key in _keys(mine, coll)])
    return rows


def _keys(rows: list[dict], coll: Collection) -> list[tuple]:
    name = {t.label: t.name for t in coll.tasks}
    return [(r["partition"], r["method"], r["reference"], name.get(r["task"], r["task"]))
            for r in rows]


def _holm_intervals(rows: list[dict], diffs: list[Optional[Difference]]) -> None:
    """Each tested row's interval at the level its "beyond the margin" word was decided at:
    Holm's step for its rank among the claim's k p-values is α/(k − rank) one-sided, so the
    two-sided interval at 1 − 2α/(k − rank); a row is shown beyond the margin where that
    interval lies wholly beyond it (and every row ranked before it was). The 90 % interval
    beside it is unadjusted: it decides "equivalent", which needs no correction (each row
    must pass on its own)."""
    tested = sorted((r["p_beyond_margin"], i) for i, r in enumerate(rows)
                    if r["p_beyond_margin"] is not None)
    for r in rows:
        r.update(ci_holm_low=None, ci_holm_high=None, ci_holm_level=None)
    for rank, (_, i) in enumerate(tested):
        d = diffs[i]
        if d is None or d.paired is None:
            continue
        level = 1 - 2 * ALPHA / (len(tested) - rank)
        ci = d.paired.interval(level)
        rows[i].update(ci_holm_low=ci.low, ci_holm_high=ci.high, ci_holm_level=level)


def _row(claim, part, method, ref, task, d: Optional[Difference], margin: float,
         eff: Optional[dict], shown: dict, scope: str = "") -> dict:
    ci = d.intervals.get(0.90) if d is not None else None
    if d is None:
        v, p = "no data", None
    elif d.seeds < MIN_SEEDS:
        v, p = TOO_FEW_SEEDS, None
    elif ci is None:
        v, p = INCONCLUSIVE, None
    else:
        v = INCONCLUSIVE
        if equivalent(ci, margin):
            v = EQUIVALENT if shown["dapt_shown"] else \
                NO_PLACEBO if shown["dapt_shown"] is None else NO_ASSAY
        p = d.paired.p_beyond(margin) if d.paired is not None else None
    eff = eff or {}
    ft = None if d is None or d.by_seed_ft is None else int(d.by_seed_ft.shape[1])
    return {"claim": claim, "partition": part, "method": method, "reference": ref,
            "task": task.label, "metric": task.metric,
            "delta_pts": None if d is None else d.estimate,
            "ci90_low": None if ci is None else ci.low,
            "ci90_high": None if ci is None else ci.high,
            "margin_pts": margin, "verdict": v, "p_beyond_margin": p,
            "seeds": None if d is None else d.seeds, "finetune_seeds": ft,
            "finetune_design": None if d is None else d.design,
            "df": None if d is None or d.paired is None or ci is None else d.paired.df,
            "interval_from": None if d is None else d.method, **shown,
            "flops_saved_vs_fdapt_pct": eff.get("flops_saved_vs_fdapt_pct"),
            "flops_saved_min_pct": eff.get("flops_saved_min_pct"),
            "flops_saved_max_pct": eff.get("flops_saved_max_pct"),
            "time_saved_vs_fdapt_pct": eff.get("train_time_saved_vs_fdapt_pct"),
            "time_saved_ci95_low": eff.get("time_saved_ci95_low"),
            "time_saved_ci95_high": eff.get("time_saved_ci95_high"),
            "scope": scope, "setup": eff.get("setup"), "paper_scope": eff.get("paper_scope"),
            "timed_on": eff.get("timed_on")}


def downstream_summary(rows: list[dict], claim) -> str:
    """A claim's downstream rows: holds (every row equivalent on a task that shows DAPT),
    breaks (some row beyond the margin after Holm), or cannot be decided, and why."""
    mine = [r["verdict"] for r in rows if r["claim"] == claim]
    if not mine or all(v == "no data" for v in mine):
        return "not tested (no records for it)"
    if any(v == NOT_EQUIVALENT for v in mine):
        return "breaks"
    if all(v == EQUIVALENT for v in mine):
        return "holds"
    if all(v in (TOO_FEW_SEEDS, "no data") for v in mine):
        return f"cannot be decided: fewer than {MIN_SEEDS} pretraining seeds"
    blind = sum(v in (NO_ASSAY, NO_PLACEBO) for v in mine)
    if blind and all(v in (EQUIVALENT, NO_ASSAY, NO_PLACEBO) for v in mine):
        return (f"cannot be decided: within the margin, but {blind} of its {len(mine)} rows "
                "are on tasks that do not show DAPT over the starting model at this budget")
    return "cannot be decided on this data"


def claim_summary(rows: list[dict], claim) -> str:
    """A claim's verdict. Claim 2 says two things, "improves the computational efficiency by
    12.1 %" and "similar downstream task performance": it holds only if both halves do, and
    breaks if either is shown not to on the paper's set-up; a saving short of 12.1 % on
    another set-up reads "not reproduced on <scope>". Claims 1 and "beyond" are their
    downstream rows."""
    down = downstream_summary(rows, claim)
    if claim != 2 or down.startswith("not tested"):
        return down
    eff = efficiency_summary(rows)
    if down == "breaks" or eff == "below":
        overall = "breaks"
    elif down == "holds" and eff == "reached":
        overall = "holds"
    elif eff == NOT_REPRODUCED:
        overall = f"not reproduced on {scope_words(rows)}"
    else:
        overall = "cannot be decided"
    but = "but" if down == "holds" and overall != "holds" else "and"
    return f"{overall}: its downstream half {down}, {but} {efficiency_words(eff, rows)}"


