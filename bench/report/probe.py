"""The report's section on the linear probe's one choice: the regularisation C picked on dev.

A probe has no fine-tuning seed, but it picks its inverse regularisation C from a grid by its
dev score (`fdapt_core/downstream/probe.py`). On a dev subset of a few hundred examples two
values of C can lie one example apart, and the test score of the model follows whichever won.
That choice is then part of each model's score: an interval over pretraining seeds holds it
(each model chooses on its own), but it can dominate the spread between seeds. This section
shows, per task, how each method chose and how the paired differences spread when both
models of a pair chose the same C and when they did not, so that a reader can tell noise of
the readout from differences of DAPT. It is descriptive: the verdicts above do not use it.
"""
from __future__ import annotations

import statistics
from collections import Counter

from ..collect import Collection, Run, Task
from ..tables import md_table

PAIRS = (("fdapt", "general"), ("fdapt", "central"), ("ffdapt-paper", "fdapt"))
CLOSE_PTS = 1.0  # a dev margin this small (points) is a few examples either way


def _fit(run: Run, task: Task) -> dict | None:
    """The probe's one fit of this task in this record (None: not a probe, not scored)."""
    d = run.rec.get("downstream", {}).get(task.name)
    if not isinstance(d, dict) or d.get("task_hash") != task.task_hash or not d.get("runs"):
        return None
    fit = d["runs"][0]
    if "probe_c" not in fit or task.metric not in fit.get("test", {}):
        return None
    dev = sorted(fit.get("dev_by_epoch") or [])
    return {"c": fit["probe_c"], "test": 100 * fit["test"][task.metric],
            "margin": 100 * (dev[-1] - dev[-2]) if len(dev) > 1 else None,
            "dev_n": d.get("examples", {}).get("dev")}


def _fits(coll: Collection, part: str, method: str, task: Task) -> dict[int, dict]:
    """seed → the probe's fit for that method's model at that seed."""
    cell = coll.cell(part, method)
    out = {}
    for r in cell.runs if cell else []:
        if (f := _fit(r, task)) is not None:
            out[r.seed] = f
    return out


def _summary(values: list[float]) -> str:
    """`count: mean (SD)` of per-seed differences."""
    if not values:
        return "0: -"
    sd = f" (SD {statistics.stdev(values):.2f})" if len(values) > 1 else ""
    return f"{len(values)}: {statistics.fmean(values):+.2f}{sd}"


def probe_md(coll: Collection) -> list[str]:
    """Per probe task: the C each method chose over seeds, its dev margin, and the spread of
    the claims' paired differences with the same C and with different C."""
    choices, spread = [], []
    dev_n = {}
    for task in coll.tasks:
        for part in coll.partitions:
            fits = {m: _fits(coll, part, m, task) for m in coll.methods}
            if not any(fits.values()):
                continue
            for m, by_seed in fits.items():
                if not by_seed:
                    continue
                n = next((f["dev_n"] for f in by_seed.values() if f["dev_n"]), None)
                dev_n[task.label] = n
                counts = Counter(f["c"] for f in by_seed.values())
                margins = [f["margin"] for f in by_seed.values() if f["margin"] is not None]
                close = sum(1 for v in margins if v <= CLOSE_PTS + 1e-9)
                choices.append([part, m, task.label, str(len(by_seed)),
                                ", ".join(f"{c:g} ×{k}" for c, k in sorted(counts.items())),
                                f"{statistics.median(margins):.1f}" if margins else "-",
                                f"{close} of {len(margins)}" if margins else "-"])
            for a, b in PAIRS:
                fa, fb = fits.get(a, {}), fits.get(b, {})
                seeds = sorted(set(fa) & set(fb))
                if len(seeds) < 2:
                    continue
                same = [fa[s]["test"] - fb[s]["test"] for s in seeds if fa[s]["c"] == fb[s]["c"]]
                other = [fa[s]["test"] - fb[s]["test"] for s in seeds if fa[s]["c"] != fb[s]["c"]]
                every = same + other
                spread.append([part, f"{a} − {b}", task.label, str(len(seeds)),
                               f"{statistics.fmean(every):+.2f}",
                               f"{statistics.stdev(every):.2f}", _summary(same),
                               _summary(other)])
    if not choices:
        return []
    sizes = ", ".join(f"{t} {n:,}" for t, n in dev_n.items() if n)
    return (["## The probe's choice of regularisation", "",
             "A linear probe picks its inverse regularisation C from a grid by its dev score "
             f"(dev examples: {sizes}), and the test score follows the C it picked. *Dev margin "
             f"≤ {CLOSE_PTS:g} point*: fits whose best C beat the runner-up on dev by at most "
             f"{CLOSE_PTS:g} point, a few dev examples. "
             "That choice is part of each model's score, so the intervals above hold it (each "
             "model chooses on its own); this section shows how much of the spread between "
             "seeds it makes. It is descriptive: the verdicts do not use it.", ""]
            + md_table(["partition", "method", "task", "seeds", "C chosen", "median dev margin "
                        "(points)", f"dev margin ≤ {CLOSE_PTS:g} point"], choices, left=3)
            + (["Each pair's per-seed difference (points), over all seeds and split by whether "
                "the two models chose the same C. Where the differences are small and steady "
                "with the same C and large or scattered with different C, the spread between "
                "seeds (or the difference itself) rests on the readout's choice rather than on "
                "DAPT: choosing C on a larger dev set (the task's whole dev split), fixed in "
                "the study file before the runs, is what would narrow it.", ""]
               + md_table(["partition", "difference", "task", "seeds", "mean", "SD",
                           "same C: seeds, mean (SD)", "different C: seeds, mean (SD)"],
                          spread, left=3) if spread else []))
