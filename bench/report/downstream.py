"""The report's Table 1: downstream scores per partition × method × task, with paired
differences from central and fdapt."""
from __future__ import annotations

from ..cell_stats import downstream_stats
from ..collect import Collection
from .format import part_heading, seeds_text, signed
from ..tables import md_table
from ..verdicts import differences, pair_seeds


def downstream_rows(coll: Collection, diffs: dict | None = None) -> list[dict]:
    """Long format: per partition × method × task, pooled mean ± std (points), Δ central and
    Δ fdapt (points, the same partition and task settings) with their 95 % intervals
    (`diffs` from `verdicts.differences`)."""
    diffs = diffs if diffs is not None else differences(coll)
    rows = []
    for part in coll.partitions:
        for task in coll.tasks:
            stats = {m: downstream_stats(c, task) for m in coll.methods
                     if (c := coll.cell(part, m)) is not None}
            stats = {m: s for m, s in stats.items() if s is not None}
            central, fdapt = stats.get("central"), stats.get("fdapt")
            for m, s in stats.items():
                cell = coll.cell(part, m)
                rows.append({
                    "partition": part, "method": m, "corpus": cell.runs[0].corpus,
                    "task": task.name, "task_label": task.label, "metric": task.metric,
                    "task_hash": task.task_hash, "quick": task.quick,
                    "seeds": seeds_text(s["seeds"]), "n_scores": s["n"],
                    "mean_pts": s["mean"], "std_pts": s["std"],
                    # over pretraining seeds: each seed's mean, a t-interval of them, and
                    # the paired difference per seed from central and from fdapt
                    "seed_means_pts": _by_seed(s["by_seed"]),
                    "seeds_t95_low": s["t95"] and s["t95"][0],
                    "seeds_t95_high": s["t95"] and s["t95"][1],
                    "vs_central_by_seed_pts": _by_seed(_paired(s, central)),
                    "vs_fdapt_by_seed_pts": _by_seed(_paired(s, fdapt)),
                    "vs_central_pts": None if central is None else s["mean"] - central["mean"],
                    "vs_fdapt_pts": None if fdapt is None else s["mean"] - fdapt["mean"],
                    **_ci_fields(diffs, part, m, "central", task),
                    **_ci_fields(diffs, part, m, "fdapt", task),
                    **_ci_fields(diffs, part, m, "general", task),
                })
    return rows


def _by_seed(values: dict | None) -> str | None:
    """seed:value pairs for a CSV cell ("0:71.20;1:70.85")."""
    if not values:
        return None
    return ";".join(f"{k}:{v:.2f}" for k, v in values.items())


def _paired(s: dict, ref: dict | None) -> dict | None:
    """Per pretraining seed, this cell's mean minus the reference's (the starting model,
    with one record, pairs with every seed)."""
    if ref is None:
        return None
    mine, theirs = pair_seeds(s["by_seed"], ref["by_seed"])
    return {k: v - theirs[k] for k, v in mine.items() if k in theirs}


def _ci_fields(diffs: dict, part: str, method: str, ref: str, task) -> dict:
    """The paired difference's 95 % interval (points) and how it was taken."""
    d = diffs.get((part, method, ref, task.name))
    ci = d.intervals.get(0.95) if d is not None else None
    return {f"vs_{ref}_paired_pts": None if d is None else d.estimate,
            f"vs_{ref}_ci95_low": None if ci is None else ci.low,
            f"vs_{ref}_ci95_high": None if ci is None else ci.high,
            f"vs_{ref}_ci_from": None if d is None else d.method}


def _delta(r: dict, ref: str) -> str:
    """A Δ cell: the paired difference with its 95 % interval where there is one."""
    low, high = r[f"vs_{ref}_ci95_low"], r[f"vs_{ref}_ci95_high"]
    if low is None:
        return signed(r[f"vs_{ref}_pts"])
    return f"{signed(r[f'vs_{ref}_paired_pts'])} [{low:+.2f}, {high:+.2f}]"


def mean_task_labels(coll: Collection, down: list[dict], left_out: tuple[str, ...]) -> list[str]:
    """The tasks a "mean over tasks" averages: scored against fdapt in every partition and
    carrying a verdict, so that every partition's mean is over the same tasks."""
    return [t.label for t in coll.tasks if t.label not in left_out and all(
        any(r["partition"] == p and r["task_label"] == t.label and r["vs_fdapt_pts"] is not None
            for r in down) for p in coll.partitions)]


def downstream_md(coll: Collection, rows: list[dict], mean_of: list[str] = ()) -> list[str]:
    out = ["## Table 1: downstream scores", ""]
    if not rows:
        return out + ["No downstream scores in these records (`python -m bench downstream "
                      "--runs …` adds them).", ""]
    out += ["Headline metric per task in points (×100): mean ± sample std over every "
            "fine-tuning run of every pretraining seed (n = runs pooled), and with several "
            "pretraining seeds the 95 % t-interval of their means (t95); per-seed means and "
            "paired per-seed differences are in downstream.csv; Δ central and "
            "Δ fdapt: the paired difference from that method in the same partition, in "
            "points, with its 95 % interval in brackets, taken as the verdicts' are (a "
            "t-interval over pretraining seeds widened by the shared test noise; without "
            "per-example outcomes, over the per-seed differences alone; none with one seed). "
            "`general` is the starting model with no DAPT. Mean Δ fdapt: over "
            + (", ".join(mean_of) if mean_of else "no task") + " (the tasks scored in every "
            "partition that carry a verdict).", ""]
    for part in coll.partitions:
        prow = [r for r in rows if r["partition"] == part]
        if not prow:
            continue
        tasks = [t for t in coll.tasks if any(r["task_label"] == t.label for r in prow)]
        header = ["method", "seeds"]
        for t in tasks:
            header += [f"{t.label} {t.metric}", "Δ central", "Δ fdapt"]
        header += ["mean Δ fdapt"]
        table = []
        for m in coll.methods:
            mrows = {r["task_label"]: r for r in prow if r["method"] == m}
            if not mrows:
                continue
            seeds = sorted({s for r in mrows.values() for s in r["seeds"].split(",")},
                           key=int)
            line = [m, ",".join(seeds)]
            for t in tasks:
                r = mrows.get(t.label)
                if r is None:
                    line += ["-", "-", "-"]
                    continue
                cell = f"{r['mean_pts']:.2f} ± {r['std_pts']:.2f} (n={r['n_scores']})" \
                    if r["n_scores"] > 1 else f"{r['mean_pts']:.2f} (n=1: no spread)"
                if r["seeds_t95_low"] is not None:
                    cell += f" t95 [{r['seeds_t95_low']:.2f}, {r['seeds_t95_high']:.2f}]"
                line.append(cell)
                line.append("ref" if m == "central" else _delta(r, "central"))
                line.append("ref" if m == "fdapt" else _delta(r, "fdapt"))
            d = [r["vs_fdapt_pts"] for r in mrows.values() if r["vs_fdapt_pts"] is not None
                 and r["task_label"] in mean_of]
            line.append("ref" if m == "fdapt" else signed(sum(d) / len(d) if d else None))
            table.append(line)
        out += [part_heading(coll, part), ""] + md_table(header, table)
        out += _missing_refs(prow, tasks)
    return out


def _missing_refs(prow: list[dict], tasks) -> list[str]:
    """Why a Δ column of one partition is '-': its reference has no score there."""
    out = []
    for ref in ("central", "fdapt"):
        lacking = [t.label for t in tasks
                   if not any(r["method"] == ref and r["task_label"] == t.label for r in prow)]
        if len(lacking) == len(tasks):
            out.append(f"No {ref} scores in this partition: Δ {ref} is left empty (-).")
        elif lacking:
            out.append(f"No {ref} score on {', '.join(lacking)} in this partition: Δ {ref} "
                       "is left empty (-) there.")
    return [line for n in out for line in (f"*{n}*", "")]
