"""`bench report`: a paper's tables and figures from run records alone.

Reads `<folder>/<method>/record.json` (see `bench.collect`), and writes into one folder:
`report.md` (the tables, figure references, provenance and notes), one CSV per table and per
figure's data, and `figures/*.png|pdf`. Nothing trains and no model is loaded. The folder is
built aside and renamed into place: a failed report leaves the previous one as it was.
"""
from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fdapt_core.errors import DataError
from fdapt_core.downstream.finetune import finetune_seeds as derived_seeds

from . import figures as figs
from .collect import (GENERAL, STALL, Collection, collect, contended, downstream_stats,
                      efficiency_stats, loss_curve, network_curve, network_of, round_train_s,
                      saved_pct, stalls, target_loss, time_saved_by_seed, time_saved_interval)
from .report_verdicts import dapt_md, power_plan, verdicts_md
from .tables import csv_text, md_table
from .verdicts import (MARGIN_PTS, claim_rows, claim_summary, differences, majority_check,
                       pair_seeds)

MB = 1e6


@dataclass
class Report:
    out: Path
    notes: list[str]
    figures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- numbers

def _fmt(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _signed(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:+.{digits}f}"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _seeds(seeds) -> str:
    return ",".join(str(s) for s in seeds)


def efficiency_rows(coll: Collection) -> list[dict]:
    """Per partition × trained method: cost and quality, savings relative to fdapt."""
    rows = []
    for part in coll.partitions:
        stats = {m: efficiency_stats(c) for m in coll.methods
                 if (c := coll.cell(part, m)) is not None}
        stats = {m: s for m, s in stats.items() if s is not None}
        ref = stats.get("fdapt")
        target = target_loss(coll.cells, part)
        for m, s in stats.items():
            cell = coll.cell(part, m)
            net = network_curve(cell, target) or {}
            rows.append({
                "partition": part, "method": m, "corpus": cell.trained[0].corpus,
                "synthetic": cell.trained[0].synthetic, "seeds": _seeds(s["seeds"]),
                "n_seeds": len(s["seeds"]), "rounds": _seeds(s["rounds"]),
                "clients": s["clients"], "train_flops": s["train_flops"],
                "flops_saved_vs_fdapt_pct": saved_pct(s["train_flops"],
                                                      ref and ref["train_flops"]),
                "local_train_s": s["local_train_s"], "local_train_s_std": s["local_train_s_std"],
                "timed_seeds": _seeds(s["timed_seeds"]),
                **_time_saved(coll, part, m, s, ref),
                "bytes_up_mb": None if s["bytes_up"] is None else s["bytes_up"] / MB,
                "bytes_down_mb": None if s["bytes_down"] is None else s["bytes_down"] / MB,
                "bytes_sent_mb": None if s["bytes_sent"] is None else s["bytes_sent"] / MB,
                "tokens_per_s": s["tokens_per_s"], "peak_mem_mb": s["peak_mem_mb"],
                "initial_loss": s["initial_loss"], "final_loss": s["final_loss"],
                "final_loss_std": s["final_loss_std"], "final_ppl": s["final_ppl"],
                "final_loss_vs_fdapt": None if ref is None
                else s["final_loss"] - ref["final_loss"],
                # projected on the records' own links (network.*): see fdapt_core/network.py
                "round_s_projected": net.get("round_s"), "target_loss": target,
                "time_to_target_s": net.get("time_to_target_s"),
                # runs of the cell timed under contention (their times are marked "!")
                "contended_runs": s["contended_runs"],
                # runs timed on another thread count than most (also marked "!")
                "other_threads_runs": s["other_threads_runs"],
                # its times (or fdapt's) come from runs timed apart only: marked "!"
                "timed_dirty": s["times_apart"] or bool(ref and ref["times_apart"]),
            })
    return rows


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
                    "seeds": _seeds(s["seeds"]), "n_scores": s["n"],
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


def _time_saved(coll: Collection, part: str, method: str, s: dict, ref: dict | None) -> dict:
    """Time saved vs fdapt (%): the mean over the seeds both timed alone, with its 95 %
    t-interval over seeds; from the mean times where there are too few seeds for one."""
    cell, rcell = coll.cell(part, method), coll.cell(part, "fdapt")
    ci = time_saved_interval(cell, rcell) if rcell is not None and method != "fdapt" else None
    return {"train_time_saved_vs_fdapt_pct": ci.estimate if ci is not None
            else saved_pct(s["local_train_s"], ref and ref["local_train_s"]),
            "time_saved_ci95_low": ci and ci.low, "time_saved_ci95_high": ci and ci.high}


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
        return _signed(r[f"vs_{ref}_pts"])
    return f"{_signed(r[f'vs_{ref}_paired_pts'])} [{low:+.2f}, {high:+.2f}]"


def tradeoff_points(coll: Collection, eff: list[dict], down: list[dict],
                    mean_of: list[str] | None = None) -> tuple[list, str]:
    """(partition, method, FLOPs saved vs fdapt %, quality change vs fdapt with the half-width
    of its 95 % interval, the tasks' intervals combined as independent) and the y label: the mean over the tasks `mean_of` of
    the downstream change (points) where any scores exist, else the held-out loss change."""
    mean_of = [t.label for t in coll.tasks] if mean_of is None else mean_of
    use_down = any(r["vs_fdapt_pts"] is not None and r["method"] != "fdapt"
                   and r["task_label"] in mean_of for r in down)
    points = []
    for r in eff:
        if use_down:
            d = [x for x in down if x["partition"] == r["partition"]
                 and x["method"] == r["method"] and x["vs_fdapt_pts"] is not None
                 and x["task_label"] in mean_of]
            y = sum(x["vs_fdapt_pts"] for x in d) / len(d) if d else None
            # the mean's interval: the tasks' intervals as independent (their noise is)
            halves = [(x["vs_fdapt_ci95_high"] - x["vs_fdapt_ci95_low"]) / 2 for x in d
                      if x["vs_fdapt_ci95_low"] is not None]
            y_half = (sum(h * h for h in halves) ** 0.5 / len(d)) \
                if d and len(halves) == len(d) else None
        else:
            y = r["final_loss_vs_fdapt"]
        points.append({"partition": r["partition"], "method": r["method"],
                       "flops_saved_vs_fdapt_pct": r["flops_saved_vs_fdapt_pct"],
                       "y": y, "y_ci95_half": y_half if use_down else None,
                       "y_kind": "downstream_vs_fdapt_pts" if use_down
                       else "final_loss_vs_fdapt"})
    label = "downstream change vs fdapt\n(points, mean over tasks)" if use_down \
        else "held-out MLM loss change vs fdapt\n(nats; no downstream scores)"
    return points, label


def curve_rows(coll: Collection) -> list[dict]:
    rows = []
    for part in coll.partitions:
        for m in coll.methods:
            cell = coll.cell(part, m)
            if cell is None:
                continue
            for r in cell.trained:
                losses = [r.rec["initial_eval"]["loss"], *[x["eval_loss"] for x in
                                                           r.rec["rounds"]]]
                rows += [{"partition": part, "method": m, "seed": r.seed, "round": i,
                          "heldout_loss": v} for i, v in enumerate(losses)]
    return rows


def provenance_rows(coll: Collection) -> list[dict]:
    rows = []
    for part in coll.partitions:
        for m in coll.methods:
            cell = coll.cell(part, m)
            for r in sorted(cell.runs, key=lambda r: r.seed) if cell else []:
                env = r.rec.get("environment", {})
                rows.append({
                    "partition": part, "method": m, "seed": r.seed, "record": str(r.path),
                    "status": r.rec.get("status"), "corpus": r.corpus,
                    "synthetic": r.synthetic, "config_hash": r.rec.get("config_hash"),
                    "manifest_sha256": r.rec.get("manifest_sha256"),
                    "device": env.get("device"), "git_commit": env.get("git_commit"),
                    "git_dirty": env.get("git_dirty"),
                    "torch": env.get("packages", {}).get("torch"),
                })
    return rows


# ----------------------------------------------------------------------------- Markdown

def _part_heading(coll: Collection, part: str) -> str:
    runs = [r for m in coll.methods if (c := coll.cell(part, m)) for r in c.trained]
    if not runs:
        return f"**{part}**"
    r = runs[0]
    corpus = "**SYNTHETIC corpus**" if r.synthetic else f"corpus `{r.corpus}`"
    return f"**{part}** ({corpus})"


def mean_task_labels(coll: Collection, down: list[dict], left_out: tuple[str, ...]) -> list[str]:
    """The tasks a "mean over tasks" averages: scored against fdapt in every partition and
    carrying a verdict, so that every partition's mean is over the same tasks."""
    return [t.label for t in coll.tasks if t.label not in left_out and all(
        any(r["partition"] == p and r["task_label"] == t.label and r["vs_fdapt_pts"] is not None
            for r in down) for p in coll.partitions)]


def _downstream_md(coll: Collection, rows: list[dict], mean_of: list[str] = ()) -> list[str]:
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
            line.append("ref" if m == "fdapt" else _signed(sum(d) / len(d) if d else None))
            table.append(line)
        out += [_part_heading(coll, part), ""] + md_table(header, table)
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


def _efficiency_md(coll: Collection, rows: list[dict]) -> list[str]:
    factor, unit = figs.scale_unit([r["train_flops"] for r in rows], figs.FLOP_UNITS)
    out = ["## Table 2: efficiency and held-out loss", "",
           "Means over pretraining seeds. FLOPs: training FLOPs as dispatched (counted with "
           "FlopCounterMode, forward + backward); local time: the clients' training loops "
           "(± std over seeds); saved %: relative to fdapt in the same partition (negative: "
           "more), time saved: each seed's saving over the rounds both runs trained, its "
           "mean and 95 % t-interval over seeds (runs timed apart, named below the table, "
           "left out of every time; stalled rounds named there too); MB = 10^6 bytes, up + "
           "down = total; peak MB: process RSS on CPU, CUDA max allocated on GPU; loss: "
           "held-out MLM cross-entropy after the last round (nats), ppl = its exponential.",
           ""]
    header = ["method", "seeds", "rounds", f"train FLOPs ({unit})", "FLOPs saved %",
              "local time (s)", "time saved %", "MB up", "MB down", "MB total", "tokens/s",
              "peak MB", "final loss", "Δ loss fdapt", "final ppl", "round s (net)",
              "to target s (net)"]
    for part in coll.partitions:
        prow = [r for r in rows if r["partition"] == part]
        if not prow:
            continue
        table = []
        for r in prow:
            flag = "!" if r["timed_dirty"] else ""
            wall = _fmt(r["local_train_s"], 1)
            if r["n_seeds"] > 1 and r["local_train_s_std"] is not None:
                wall += f" ± {r['local_train_s_std']:.1f}"
            loss = _fmt(r["final_loss"], 3)
            if r["n_seeds"] > 1 and r["final_loss_std"] is not None:
                loss += f" ± {r['final_loss_std']:.3f}"
            table.append([
                r["method"], r["seeds"], r["rounds"],
                _fmt(None if r["train_flops"] is None else r["train_flops"] / factor, 2),
                "ref" if r["method"] == "fdapt" else _fmt(r["flops_saved_vs_fdapt_pct"], 1),
                wall + flag,
                ("ref" if r["method"] == "fdapt" else _fmt(r["train_time_saved_vs_fdapt_pct"], 1)
                 + ("" if r["time_saved_ci95_low"] is None else
                    f" [{r['time_saved_ci95_low']:.1f}, {r['time_saved_ci95_high']:.1f}]"))
                + flag,
                _fmt(r["bytes_up_mb"], 1), _fmt(r["bytes_down_mb"], 1),
                _fmt(r["bytes_sent_mb"], 1), _fmt(r["tokens_per_s"], 0) + flag,
                _fmt(r["peak_mem_mb"], 0), loss,
                "ref" if r["method"] == "fdapt" else _signed(r["final_loss_vs_fdapt"], 3),
                _fmt(r["final_ppl"], 1), _timed(r["round_s_projected"], flag),
                _timed(r["time_to_target_s"], flag),
            ])
        out += [_part_heading(coll, part), ""] + md_table(header, table)
        out += [_network_note(coll, part, prow[0]["target_loss"]), ""]
        if not any(r["method"] == "fdapt" for r in prow):
            out += ["*No fdapt run in this partition: FLOPs saved %, time saved % and "
                    "Δ loss fdapt are left empty (-).*", ""]
        out += _apart_notes(coll, part)
        out += _stall_notes(coll, part)
    return out


def _stall_notes(coll: Collection, part: str) -> list[str]:
    """Rounds that stalled (at least STALL × their run's median round), and what each
    method's time saved would be without them."""
    found, methods = [], set()
    for m in coll.methods:
        cell = coll.cell(part, m)
        for r in sorted(cell.trained if cell else [], key=lambda r: r.seed):
            times = round_train_s(r)
            for i in stalls(r):
                found.append(f"{m} seed {r.seed} round {i + 1} ({times[i]:.1f} s, the run's "
                             f"median round {statistics.median(times):.1f} s)")
                methods.add(m)
    if not found:
        return []
    ref = coll.cell(part, "fdapt")
    effects = []
    for m in coll.methods:
        cell = coll.cell(part, m)
        if ref is None or cell is None or m == "fdapt" or not (methods & {m, "fdapt"}):
            continue
        with_, without = (time_saved_by_seed(cell, ref, skip_stalls=s) for s in (False, True))
        if with_ and without:
            effects.append(f"{m} {statistics.fmean(with_.values()):+.1f} % with them, "
                           f"{statistics.fmean(without.values()):+.1f} % without")
    text = (f"*Stalled rounds (at least {STALL:g}× their run's median round): "
            + "; ".join(found) + ". They stay in the table; time saved vs fdapt, mean over "
            "seeds: " + ("; ".join(effects) if effects else "unchanged") + ".*")
    return [text, ""]


def _apart_notes(coll: Collection, part: str) -> list[str]:
    """Which runs were timed apart (under contention, or on another thread count), and what
    the table did with them."""
    usual = coll.usual_threads
    apart = []
    for m in coll.methods:
        cell = coll.cell(part, m)
        for r in sorted(cell.trained if cell else [], key=lambda r: r.seed):
            if r.timed_apart:
                why = "contended" if contended(r.rec) else \
                    f"{r.rec['host']['threads']} thread(s), most runs {usual}"
                apart.append(f"{m} seed {r.seed} ({why})")
    if not apart:
        return []
    return ["*Timed apart: " + "; ".join(apart) + ". Under contention other processes took "
            "cores the run needed; a run started beside another takes a share of the cores. "
            "Such runs are left out of local time, tokens/s, time saved and the projected "
            "times; where no run of a cell was timed alone, its times are shown marked ! and "
            "are not comparable. Each record's `host` says by how much.*", ""]


def _timed(value: float | None, flag: str) -> str:
    """A projected time, marked when the compute it adds up was timed under contention."""
    return "-" if value is None else _fmt(value, 1) + flag


def _network_note(coll: Collection, part: str, target: float | None) -> str:
    """How the (net) columns were projected for one partition."""
    cell = next(c for (p, _), c in coll.cells.items() if p == part and c.trained)
    net = network_of(cell.trained[0].rec)
    links = (f"{net.up_mbps:g}/{net.down_mbps:g} Mbit/s up/down, {net.latency_ms:g} ms latency"
             + (f", per-client spread sigma {net.heterogeneity:g}" if net.heterogeneity else ""))
    goal = "no target (no fdapt run, no report.target_loss)" if target is None \
        else f"target held-out loss {target:.3f}"
    return (f"*(net): projected on {links}: measured local training + transfer, the slowest "
            f"client gating each round (fdapt_core/network.py); to target: {goal}, empty "
            f"where a seed never reached it.*")


def training_code_changes(commits: list[str]) -> dict[tuple[str, str], list[str] | None]:
    """(older, newer) commit → the files of `fdapt_core/` (the training code) that differ
    between them, for commits consecutive in time (None: a commit this checkout lacks)."""
    root = Path(__file__).resolve().parents[1]

    def when(c: str) -> str:  # the commit time, so that consecutive means in history
        try:
            res = subprocess.run(["git", "show", "-s", "--format=%ct", c], cwd=root,
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return ""
        return res.stdout.strip().zfill(12) if res.returncode == 0 else ""

    commits = sorted(commits, key=when)
    out = {}
    for a, b in zip(commits, commits[1:]):
        try:
            res = subprocess.run(["git", "diff", "--name-only", a, b, "--", "fdapt_core/"],
                                 cwd=root, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            out[(a, b)] = None
            continue
        out[(a, b)] = res.stdout.split() if res.returncode == 0 else None
    return out


def _files_md(files: list[str], most: int = 8) -> str:
    """Changed files by name, so that a reader can tell a change of the training loop from
    one of, say, the study's grid or the report."""
    names = [f"`{f.removeprefix('fdapt_core/')}`" for f in files]
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _commits_md(rows: list[dict]) -> list[str]:
    """Whether the records were trained by one training code: their commits, whether
    `fdapt_core/` differs between them, and records trained on uncommitted changes."""
    commits = list(dict.fromkeys(r["git_commit"] for r in rows if r["git_commit"]))
    out = []
    dirty = [r for r in rows if r["git_dirty"]]
    unknown = [r for r in rows if r["git_dirty"] is None]
    if len(commits) > 1:
        changes = training_code_changes(commits)
        differ = [f"`{a[:10]}`→`{b[:10]}`: " + ("not in this checkout" if files is None
                                               else _files_md(files))
                  for (a, b), files in changes.items() if files != []]
        out.append(f"**The records span {len(commits)} commits.** "
                   + ("Between them `fdapt_core/` (the training code) changes: "
                      + "; ".join(differ) + ". Differences between methods may then include "
                      "differences of code." if differ else
                      "`fdapt_core/` (the training code) is the same in all of them."))
    if dirty:
        out.append(f"**{len(dirty)} record(s) were trained on uncommitted changes to "
                   "`fdapt_core/`** (git_dirty): their commit does not name their code.")
    bare = [r for r in unknown if r["git_commit"] is None and r["device"] is None]
    unknown = [r for r in unknown if r not in bare]
    if unknown and len(unknown) == len(rows):
        out.append("These records predate the dirty flag: whether their training code had "
                   "uncommitted changes is not recorded.")
    elif unknown:
        out.append(f"{len(unknown)} record(s) predate the dirty flag.")
    if bare:
        names = sorted({r["method"] for r in bare})
        out.append(f"{len(bare)} record(s) ({', '.join(names)}) carry no environment (written "
                   "before the starting model's record kept one): the code that scored them is "
                   "known only from the commits around them.")
    return [line for n in out for line in (n, "")]


def _provenance_md(rows: list[dict]) -> list[str]:
    out = ["## Table 3: provenance", "",
           "One row per run record. The config hash covers the whole resolved config (seed "
           "included); the manifest hash covers the split (document ids per client and the "
           "held-out ids): methods of one partition and seed should share it.", ""]
    out += _commits_md(rows)
    table = [[r["partition"], r["method"], str(r["seed"]), f"`{r['record']}`",
              "synthetic" if r["synthetic"] else r["corpus"],
              f"`{r['config_hash'] or '-'}`", f"`{(r['manifest_sha256'] or '-')[:16]}`",
              r["device"] or "-", (r["git_commit"] or "-")[:10]
              + {True: " (dirty)", False: "", None: ""}[r["git_dirty"]]] for r in rows]
    return out + md_table(["partition", "method", "seed", "record", "corpus", "config hash",
                           "manifest sha256", "device", "git commit"], table, left=9)


def _setup_md(coll: Collection) -> list[str]:
    """One line per distinct set-up; partitions that share one are named together."""
    lines: dict[str, list[str]] = {}
    for part in coll.partitions:
        runs = [r for m in coll.methods if (c := coll.cell(part, m)) for r in c.trained]
        if not runs:
            continue
        rec = runs[0].rec
        cfg, data = rec["config"], rec.get("data", {})
        model = cfg.get("model", {})
        corpus = "SYNTHETIC corpus (generated in code, not real text)" if runs[0].synthetic \
            else f"corpus `{cfg['data'].get('path')}`"
        docs = f"{data['train_documents']:,} training / {data['validation_documents']:,} " \
            f"held-out documents, {data['train_tokens']:,} training tokens; " \
            if {"train_documents", "validation_documents", "train_tokens"} <= set(data) else ""
        seeds = sorted({r.seed for r in runs})
        methods = [m for m in coll.methods if (c := coll.cell(part, m)) and c.trained]
        totals = rec.get("totals") or {}
        dapt = ""
        if totals.get("steps") and totals.get("tokens"):
            share = f" ({totals['tokens'] / data['train_tokens']:.1%} of one pass over the " \
                "training tokens)" if data.get("train_tokens") else ""
            dapt = f"; DAPT of {totals['steps']:,} steps, {totals['tokens']:,} tokens a run{share}"
        text = (f"{corpus}: {docs}model `{model.get('preset') or model.get('name_or_path')}`, "
                f"{cfg['fl']['clients']} clients × {cfg['fl']['rounds']} rounds, sequence "
                f"length {cfg['data'].get('max_seq_length')}{dapt}; methods "
                f"{', '.join(methods)}; pretraining seeds {_seeds(seeds)}")
        lines.setdefault(text, []).append(part)
    out = [f"- **{', '.join(parts)}**: {text}" for text, parts in lines.items()]
    return out + _downstream_setup(coll)


def _downstream_setup(coll: Collection) -> list[str]:
    """One line per task: how it was fine-tuned and on how many examples."""
    out = []
    for task in coll.tasks:
        run, d = next(((r, x) for r in coll.runs for x in (r.rec.get("downstream") or {}).values()
                       if isinstance(x, dict) and x.get("task_hash") == task.task_hash),
                      (None, None))
        if d is None:
            continue
        ex = d.get("examples") or {}
        sizes = ", ".join(f"{v:,} {k}" for k, v in ex.items())
        seeds = [r.get("seed") for r in d.get("runs") or []]
        derived = seeds == derived_seeds(run.seed, len(seeds))
        which = ("derived from the pretraining seed, the same for every method at it"
                 if derived else "seeds 0, 1, … for every method and every pretraining seed")
        probe = any("probe_c" in r for r in d.get("runs") or [])
        how = ("a linear probe (logistic regression on the frozen model's features, C chosen "
               "on dev), one deterministic fit per model" if probe else
               f"{d.get('epochs', '?')} epochs, "
               + ("one fine-tuning seed per model" if int(d.get("seeds") or 1) == 1
                  else f"{d['seeds']} fine-tuning seeds per model") + f" ({which})")
        out.append(f"- **{task.label}** ({task.metric}): "
                   + ("quick budget" if d.get("quick") else "full budget")
                   + (f", {sizes} examples" if sizes else "") + f", {how}")
    return out


FIGURES = {
    "fig1_heldout_loss": "Figure 1: held-out MLM loss per round (round 0: the starting model, "
                         "before training), one panel per partition; bands: ±1 std over seeds.",
    "fig2_downstream": "Figure 2: downstream scores per task (points), mean with ±1 std error "
                       "bars (none for a single fine-tuning run); the y axis does not start "
                       "at 0.",
    "fig3_cost": "Figure 3: training FLOPs, the clients' local-training wall time (±1 std "
                 "over seeds) and bytes sent (uploads + downloads; central sends none) per "
                 "method.",
    "fig4_tradeoff": "Figure 4: efficiency against quality, both relative to fdapt in the same "
                     "partition: training FLOPs saved (%) on x, the change in quality on y "
                     "(higher is better for downstream scores, lower for held-out loss), "
                     "with its 95 % interval where it has one; color = method, marker = "
                     "partition.",
    "fig5_loss_vs_cost": "Figure 5: held-out loss against bytes sent (left) and against the "
                         "projected wall time on the records' network links (right), one line "
                         "per method and a row per partition; means over seeds; the dotted "
                         "line is the time-to-target loss.",
}


def _figures(coll: Collection, eff, down, points, ylabel, folder: Path) -> dict[str, str | None]:
    """stem → None when drawn, else the reason it was skipped."""
    colors = figs.method_colors(coll.methods)
    done: dict[str, str | None] = {}

    curves = {}
    for part in coll.partitions:
        curves[part] = {}
        for m in coll.methods:
            cell = coll.cell(part, m)
            c = loss_curve(cell) if cell else None
            if c:
                curves[part][m] = (*c, len(cell.trained))
    done["fig1_heldout_loss"] = None if figs.loss_curves(
        curves, coll.methods, colors, folder, "fig1_heldout_loss") \
        else "no per-round held-out losses in these records"

    scores: dict[str, dict] = {}
    for r in down:
        scores.setdefault(r["task_label"], {})[(r["partition"], r["method"])] = \
            (r["mean_pts"], r["std_pts"])
    tasks = [(t.label, t.metric) for t in coll.tasks]
    done["fig2_downstream"] = None if figs.downstream_bars(
        scores, tasks, coll.partitions, coll.methods, colors, folder, "fig2_downstream") \
        else "no downstream scores in these records (run `python -m bench downstream`)"

    cost = {(r["partition"], r["method"]): {
        "train_flops": r["train_flops"], "local_train_s": r["local_train_s"],
        "local_train_s_std": r["local_train_s_std"] if r["n_seeds"] > 1 else None,
        "bytes_sent": None if r["bytes_sent_mb"] is None else r["bytes_sent_mb"] * MB}
        for r in eff}
    done["fig3_cost"] = None if figs.cost_bars(
        cost, coll.partitions, [m for m in coll.methods if m != GENERAL], colors, folder,
        "fig3_cost") else "no training records"

    pts = [(p["partition"], p["method"], p["flops_saved_vs_fdapt_pct"], p["y"],
            p["y_ci95_half"]) for p in points]
    reason = "no fdapt record to compare against in any partition" \
        if not any(r["method"] == "fdapt" for r in eff) \
        else "no method with both a FLOP count and a quality change relative to fdapt"
    done["fig4_tradeoff"] = None if figs.tradeoff(
        pts, coll.partitions, coll.methods, colors, ylabel, folder, "fig4_tradeoff") \
        else reason

    net_curves = {part: {m: c for m in coll.methods if m != GENERAL
                         and (cell := coll.cell(part, m)) is not None
                         and (c := network_curve(cell, None)) is not None}
                  for part in coll.partitions}
    targets = {part: target_loss(coll.cells, part) for part in coll.partitions}
    done["fig5_loss_vs_cost"] = None if figs.loss_vs_cost(
        net_curves, targets, coll.methods, colors, folder, "fig5_loss_vs_cost") \
        else "no per-round held-out losses in these records"
    return done


def render(coll: Collection, eff, down, prov, done: dict, command: str, ylabel: str,
           claims: list[dict] = (), majority: list = (), margin: float = MARGIN_PTS,
           plan: list[str] = (), dapt: list[str] = (), mean_of: list[str] = (),
           setup: list[str] = ()) -> str:
    title = default_name(coll)
    n_runs = len(coll.runs)
    where = ", ".join(f"`{f}`" for f in coll.folders) if len(coll.folders) <= 4 \
        else f"{len(coll.folders)} folders (Table 3 names each record)"
    lines = [f"# fdapt-bench report: {title}", "",
             f"{n_runs} run records ({_n(len(coll.methods), 'method')} × "
             f"{_n(len(coll.partitions), 'partition')}) from {where}; regenerated from the "
             f"records alone with `{command}`.", ""]
    synth = [p for p in coll.partitions if any(r.synthetic for m in coll.methods
                                               if (c := coll.cell(p, m)) for r in c.runs)]
    if synth:
        lines += [f"> **Synthetic corpus** in {', '.join(synth)}: text generated in code, not "
                  "real text. These numbers check the harness; they say nothing about DAPT.",
                  ""]
    lines += verdicts_md(claims, majority, margin, plan)
    lines += list(dapt)
    lines += ["## Setup", ""] + _setup_md(coll) + list(setup) + [""]
    lines += _downstream_md(coll, down, mean_of)
    lines += _efficiency_md(coll, eff)
    lines += ["## Figures", "", "PNG (300 dpi) and PDF in `figures/`.", ""]
    for stem, caption in FIGURES.items():
        if done.get(stem) is None:
            lines += [f"![{caption}](figures/{stem}.png)", "", f"*{caption}*"
                      + (f" y axis: {ylabel.replace(chr(10), ' ')}." if stem == "fig4_tradeoff"
                         else "") + f" ([PDF](figures/{stem}.pdf))", ""]
        else:
            lines += [f"*{caption.split(':')[0]}: not drawn: {done[stem]}.*", ""]
    lines += _provenance_md(prov)
    if coll.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in coll.notes] + [""]
    lines += ["## Files", "",
              "- `downstream.csv`: Table 1, one row per partition × method × task",
              "- `efficiency.csv`: Table 2 (FLOPs in FLOP, time in s, bytes in MB)",
              "- `provenance.csv`: Table 3",
              "- `verdicts.csv`: the claims' tests, one row per partition × method × task",
              "- `heldout_loss.csv`: Figure 1's data, one row per run and round",
              "- `tradeoff.csv`: Figure 4's data", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- output

def default_name(coll: Collection) -> str:
    """The comparison's base name: the records' name less a `-<partition>` / `-s<seed>`
    suffix when that leaves one name, else the folders' common prefix."""
    bases = set()
    for r in coll.runs:
        name = str(r.rec.get("name") or r.folder.parent.name)
        raw = r.rec["config"]["partition"]["method"]
        for _ in range(2):
            name = re.sub(r"[-_](s|seed)\d+$", "", name)
            for suffix in (f"-{raw}", f"_{raw}"):
                if name.endswith(suffix) and len(name) > len(suffix):
                    name = name[: -len(suffix)]
        bases.add(name)
    if len(bases) == 1:
        return bases.pop()
    prefix = os.path.commonprefix([f.resolve().name for f in coll.folders]).rstrip("-_")
    return prefix or "+".join(sorted(bases))


def default_out(coll: Collection) -> Path:
    if len(coll.folders) == 1:
        return coll.folders[0] / "report"
    return coll.folders[0].parent / default_name(coll) / "report"


def _check_out(out: Path, coll: Collection) -> None:
    """The report replaces `out` whole: never a folder holding anything but a report."""
    for r in coll.runs:
        if out.resolve() in (r.folder.resolve(), *r.folder.resolve().parents):
            raise DataError(f"--out: {out} holds run records ({r.path}); choose another")
    if out.exists() and not out.is_dir():
        raise DataError(f"--out: {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "report.md").is_file():
        raise DataError(f"--out: {out} exists and is not a report folder (no report.md); "
                        "choose another")


def verdict_rows(coll: Collection, margin: float = MARGIN_PTS) -> tuple[dict, list, list, list]:
    """What `verdicts.csv` is written from: (every paired difference, the efficiency rows, the
    majority-class checks, the claims' rows). The report, `bench study --plan` and the
    coverage test (tests/test_coverage.py) all read verdicts through here."""
    diffs = differences(coll)  # every paired downstream difference, once
    eff = efficiency_rows(coll)
    majority = [c for t in coll.tasks if (c := majority_check(coll, t)) is not None]
    claims = claim_rows(coll, diffs, {(r["partition"], r["method"]): r for r in eff},
                        tuple(c.task.label for c in majority if not c.beaten), margin)
    return diffs, eff, majority, claims


def study_plan(specs: list[str], margin: float, finetune_seeds: int,
               test_n: dict[str, int]) -> list[str]:
    """`bench study --plan`: the power plan of the records in `specs`, for a design of
    `finetune_seeds` fine-tuning seeds on test sets of `test_n` examples."""
    coll = collect(specs)
    diffs, _, _, claims = verdict_rows(coll, margin)
    summary = [f"- {'Claim ' + str(c) if c != 'beyond' else 'Beyond the paper'}: "
               f"{claim_summary(claims, c)}" for c in (1, 2, "beyond")
               if any(r["claim"] == c for r in claims)]
    return summary + [""] + power_plan(coll, diffs, claims, finetune_seeds, test_n)


def make_report(specs: list[str], out: Path | None = None, command: str | None = None,
                margin: float = MARGIN_PTS, finetune_seeds: int | None = None,
                test_n: dict[str, int] | None = None, setup: list[str] = ()) -> Report:
    """Read the records, then write the report folder `out` (built aside, then renamed).
    `margin`: the claims' equivalence margin (points); `finetune_seeds` and `test_n`
    (test examples per task name): the design the power plan prices (default: the
    records'); `setup`: more lines for the setup (a study's head warm-up)."""
    coll = collect(specs)  # every input error is raised here, before anything is written
    out = Path(out) if out is not None else default_out(coll)
    _check_out(out, coll)
    command = command or f"python -m bench report --runs {','.join(specs)}"
    diffs, eff, majority, claims = verdict_rows(coll, margin)
    down, prov = downstream_rows(coll, diffs), provenance_rows(coll)
    plan = power_plan(coll, diffs, claims, finetune_seeds, test_n or {})
    mean_of = mean_task_labels(coll, down, tuple(c.task.label for c in majority
                                                  if not c.beaten))
    points, ylabel = tradeoff_points(coll, eff, down, mean_of)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise DataError(f"--out: cannot write under {out.parent} ({exc.strerror})") from None
    try:
        done = _figures(coll, eff, down, points, ylabel, tmp / "figures")
        files = {
            "report.md": render(coll, eff, down, prov, done, command, ylabel, claims,
                                majority, margin, plan, dapt_md(coll, diffs, mean_of),
                                mean_of, list(setup)),
            "verdicts.csv": csv_text(claims) if claims else "",
            "efficiency.csv": csv_text(eff) if eff else "",
            "downstream.csv": csv_text(down) if down else "",
            "provenance.csv": csv_text(prov),
            "heldout_loss.csv": csv_text(rows) if (rows := curve_rows(coll)) else "",
            "tradeoff.csv": csv_text(points) if points else "",
        }
        for name, text in files.items():
            if text:
                (tmp / name).write_text(text, encoding="utf-8")
        umask = os.umask(0o022)
        os.umask(umask)
        for p in [tmp, *tmp.rglob("*")]:
            p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            if old is not None:
                os.replace(old, out)  # the previous report, as it was
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"--out: cannot write {out} ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    drawn = [f"figures/{s}.{ext}" for s, why in done.items() if why is None
             for ext in ("png", "pdf")]
    skipped = [f"{s}: {why}" for s, why in done.items() if why is not None]
    return Report(out, coll.notes, drawn, skipped)
