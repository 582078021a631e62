"""Statistics of report cells over seeds: downstream scores, efficiency totals, time saved and
stalled rounds, held-out loss and network curves."""
from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING

from fdapt_core.network import project, time_to_target
from fdapt_core.stats import t_interval

from .collect import GENERAL, Cell, Run, Task
from .record_timing import contended, network_of, other_threads

if TYPE_CHECKING:
    from fdapt_core.stats import Interval


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0 for a single value), as the fine-tuning does."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _mean_or_none(values: list) -> float | None:
    """A mean only when every seed has the value: a partial mean would mislead."""
    if not values or any(v is None for v in values):
        return None
    return statistics.fmean(values)


def task_scores(run: Run, task: Task) -> list[float] | None:
    """A run's scores on a task (points, one per fine-tuning seed), or None."""
    for key, d in run.rec.get("downstream", {}).items():
        if not isinstance(d, dict) or d.get("task", key) != task.name \
                or d.get("metric") != task.metric or d.get("task_hash") != task.task_hash:
            continue
        s = d.get("scores", {}).get(task.metric)
        if not s:
            return None
        values = s.get("values") or [s["mean"]]
        return [100.0 * v for v in values]
    return None


def downstream_stats(cell: Cell, task: Task) -> dict | None:
    """Pooled over pretraining seeds and fine-tuning seeds: mean, std, counts; and per
    pretraining seed its mean, with a t-interval over those means (two seeds or more). The
    starting model counts once, however many cells scored it."""
    pooled, seeds, by_seed, seen = [], [], {}, set()
    for r in cell.runs:
        v = task_scores(r, task)
        if cell.method == GENERAL and v is not None:
            # the starting model is one model whatever the cell: a copy scored in another
            # cell with the same fine-tuning seeds is the same scores, not another sample
            if tuple(v) in seen:
                continue
            seen.add(tuple(v))
        if v is not None:
            pooled += v
            seeds.append(r.seed)
            by_seed[r.seed] = statistics.fmean(v)
    if not pooled:
        return None
    mean, std = mean_std(pooled)
    ci = t_interval([by_seed[s] for s in sorted(by_seed)])
    return {"mean": mean, "std": std, "n": len(pooled), "seeds": sorted(seeds),
            "by_seed": {s: by_seed[s] for s in sorted(by_seed)},
            "t95": None if ci is None else (ci.low, ci.high)}


def round_train_s(run: Run) -> list[float]:
    """The clients' local-training seconds of each round of a run."""
    return [sum(c.get("wall_s") or 0.0 for c in r.get("clients", []))
            for r in run.rec.get("rounds", [])]


STALL = 1.5  # a round this many times its run's median round time is a stall


def stalls(run: Run) -> list[int]:
    """Rounds (0-based) whose local-training time is at least STALL × the run's median
    round: a host that stopped the run for a while, which a whole-run contention average
    does not show (one such round turned a 3 % saving into a loss)."""
    times = round_train_s(run)
    if len(times) < 3:  # a median of two is one of them: no stall can be told apart
        return []
    median = statistics.median(times)
    return [i for i, t in enumerate(times) if median > 0 and t >= STALL * median]


def time_saved_by_seed(cell: Cell, ref: Cell, skip_stalls: bool = False) -> dict[int, float]:
    """seed → the local-training time saved vs `ref` (%), over the rounds the two runs share
    (`skip_stalls`: without the rounds either run stalled in). Seeds where either run was
    timed apart (contended, other threads) are left out: their ratio measures the host."""
    refs = {r.seed: r for r in ref.trained if not r.timed_apart}
    out = {}
    for run in cell.trained:
        base = refs.get(run.seed)
        if base is None or run.timed_apart:
            continue
        skip = set(stalls(run)) | set(stalls(base)) if skip_stalls else set()
        pairs = [(t, b) for i, (t, b) in enumerate(zip(round_train_s(run), round_train_s(base)))
                 if i not in skip]
        total = sum(b for _, b in pairs)
        if total > 0:
            out[run.seed] = 100.0 * (1 - sum(t for t, _ in pairs) / total)
    return out


def time_saved_interval(cell: Cell, ref: Cell) -> Interval | None:
    """The local-training time saved vs `ref` (%): the mean over seeds with its 95 %
    t-interval over seeds (None below two). A seed's rounds are not independent repeats of
    one another (they share the run's host and state), so they are summed within the seed."""
    return t_interval(list(time_saved_by_seed(cell, ref).values()))


def timed_runs(runs: list[Run]) -> list[Run]:
    """The runs whose wall times a report shows: those timed alone on a quiet host, or every
    run when none was (its times are then marked as not comparable)."""
    return [r for r in runs if not r.timed_apart] or runs


def efficiency_stats(cell: Cell) -> dict | None:
    """Totals of a cell's training runs, averaged over seeds; wall times and tokens/s over
    its `timed_runs` only."""
    runs = cell.trained
    if not runs:
        return None
    t = [r.totals for r in runs]
    kept = timed_runs(runs)
    timed = [r.totals for r in kept]
    loss_mean, loss_std = mean_std([r.rec["final_eval"]["loss"] for r in runs])
    walls = [x["local_train_s"] for x in timed]
    wall_mean, wall_std = (None, None) if None in walls else mean_std(walls)
    return {
        "seeds": sorted(r.seed for r in runs),
        "rounds": sorted({len(r.rec["rounds"]) for r in runs}),
        "clients": 1 if runs[0].rec.get("base_method") == "central"
        else runs[0].rec["config"].get("fl", {}).get("clients"),
        "train_flops": _mean_or_none([x["train_flops"] for x in t]),
        "local_train_s": wall_mean, "local_train_s_std": wall_std,
        "bytes_up": _mean_or_none([x["bytes_up"] for x in t]),
        "bytes_down": _mean_or_none([x["bytes_down"] for x in t]),
        "bytes_sent": _mean_or_none([None if x["bytes_up"] is None or x["bytes_down"] is None
                                     else x["bytes_up"] + x["bytes_down"] for x in t]),
        "tokens_per_s": _mean_or_none([x["tokens_per_s"] for x in timed]),
        "timed_seeds": sorted(r.seed for r in kept),
        # its times come from runs timed apart (none was timed alone)
        "times_apart": all(r.timed_apart for r in runs),
        "peak_mem_mb": _mean_or_none([x["peak_mem_mb"] for x in t]),
        "contended_runs": sum(contended(r.rec) for r in runs),
        "other_threads_runs": sum(other_threads(r.rec, r.usual_threads) for r in runs),
        "initial_loss": statistics.fmean(r.rec["initial_eval"]["loss"] for r in runs),
        "final_loss": loss_mean, "final_loss_std": loss_std,
        "final_ppl": statistics.fmean(r.rec["final_eval"].get("ppl")
                                      or math.exp(r.rec["final_eval"]["loss"]) for r in runs),
    }


def loss_curve(cell: Cell) -> tuple[list[int], list[float], list[float]] | None:
    """Held-out loss per round over seeds: rounds 0 (the initial eval) … R, mean, std."""
    curves = [[r.rec["initial_eval"]["loss"], *[x["eval_loss"] for x in r.rec["rounds"]]]
              for r in cell.trained]
    if not curves:
        return None
    n = min(len(c) for c in curves)
    means, stds = [], []
    for i in range(n):
        m, s = mean_std([c[i] for c in curves])
        means.append(m if m is not None else math.nan)
        stds.append(s if s is not None else math.nan)
    return list(range(n)), means, stds


def target_loss(coll_cells: dict, partition: str) -> float | None:
    """The partition's time-to-target loss: `report.target_loss` of its records where set,
    else its fdapt runs' mean final loss (None without either)."""
    runs = [r for (part, _), c in coll_cells.items() if part == partition for r in c.trained]
    set_ = [(r.rec.get("config", {}).get("report") or {}).get("target_loss") for r in runs]
    if any(x is not None for x in set_):
        return next(x for x in set_ if x is not None)
    fdapt = coll_cells.get((partition, "fdapt"))
    if fdapt is None or not fdapt.trained:
        return None
    return statistics.fmean(r.rec["final_eval"]["loss"] for r in fdapt.trained)


def network_curve(cell: Cell, target: float | None) -> dict | None:
    """A cell's rounds on its records' links, means over seeds: per round (0 = the start)
    cumulative bytes, projected seconds and held-out loss; the mean projected round time and
    the time to `target` (None if some seed never reached it)."""
    runs = cell.trained
    if not runs:
        return None
    projected = [project(r.rec, network_of(r.rec)) for r in runs]
    n = min(len(p) for p in projected)
    if n == 0:
        return None
    # seconds from the runs timed alone where there are some (see timed_runs)
    kept = {id(r) for r in timed_runs(runs)}
    timed = [p for p, r in zip(projected, runs) if id(r) in kept]
    start = statistics.fmean(r.rec["initial_eval"]["loss"] for r in runs)
    losses = [[t.loss for t in p[:n]] for p in projected]
    reached = [time_to_target(p, target) for p in timed]
    return {
        "bytes": [0.0] + [statistics.fmean(p[i].bytes_sent for p in projected) for i in range(n)],
        "seconds": [0.0] + [statistics.fmean(p[i].elapsed_s for p in timed) for i in range(n)],
        "loss": [start] + [None if any(x[i] is None for x in losses)
                           else statistics.fmean(x[i] for x in losses) for i in range(n)],
        "round_s": statistics.fmean(p[n - 1].elapsed_s / n for p in timed),
        "time_to_target_s": None if target is None or None in reached
        else statistics.fmean(reached),
    }
