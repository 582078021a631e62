"""The report's verdict sections: the paper's claims test by test, DAPT against the starting
model (assay sensitivity), and the power plan, as Markdown lines (`bench/report.py` puts them
in place)."""
from __future__ import annotations

from fdapt_core.stats import components, seeds_needed

from ..collect import Collection
from ..plan import hours_per_seed, plan_md, plan_rows
from ..scope import claim_scope
from ..tables import md_table
from ..efficiency import CLAIMED_EFFICIENCY, efficiency_verdict
from ..verdicts import (MARGIN_PTS, MIN_SEEDS, NO_ASSAY, PAPER, QUOTES, RESAMPLES, TOO_FEW_SEEDS,
                       claim_summary, downstream_summary)


def _fmt(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _signed(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:+.{digits}f}"


def majority_md(checks: list) -> list[str]:
    """Each classification task against always answering its most common label: a task no
    model beats carries no verdict."""
    out = []
    for c in checks:
        task = f"{c.task.label} {c.task.metric}"
        vs = (f"the best model, {c.best}, scores {_signed(c.estimate)} "
              + ("" if c.above is None else f"[{_signed(c.above.low)}, {_signed(c.above.high)}] ")
              + "points from it" + (" (95 %)" if c.above is not None else " (one seed)"))
        if c.beaten:
            out.append(f"*{task}: above the majority class (always `{c.label}`: "
                       f"{c.score:.2f} points): {vs}.*")
        else:
            out.append(f"***{task} carries no verdict**: no model beats the majority class "
                       f"(always `{c.label}`: {c.score:.2f} points); {vs}. Its scores are in "
                       "Table 1; what they differ by measures fine-tuning noise, not "
                       "pretraining.*")
    return [line for n in out for line in (n, "")]


def _verdict_table(rows: list[dict], efficiency: bool = False) -> list[str]:
    header = ["partition", "method", "task", "Δ (points)", "90 % interval", "df", "margin",
              "p beyond", "Holm interval (level)", "DAPT shown", "verdict", "seeds"] \
        + (["FLOPs saved %"] if efficiency else [])
    table = []
    for r in rows:
        ci = "-" if r["ci90_low"] is None else f"[{r['ci90_low']:+.2f}, {r['ci90_high']:+.2f}]"
        df = r.get("df")
        line = [r["partition"], f"{r['method']} − {r['reference']}",
                f"{r['task']} {r['metric']}", _signed(r["delta_pts"]), ci,
                "-" if df is None else ("∞" if df == float("inf") else f"{df:.1f}"),
                f"±{r['margin_pts']:.2f}",
                "-" if r.get("p_beyond_margin") is None else f"{r['p_beyond_margin']:.3f}",
                "-" if r.get("ci_holm_low") is None else
                f"[{r['ci_holm_low']:+.2f}, {r['ci_holm_high']:+.2f}] "
                f"({100 * r['ci_holm_level']:.1f} %)",
                {True: "yes", False: "no", None: "-"}[r.get("dapt_shown")],
                r["verdict"], "-" if r["seeds"] is None else
                f"{r['seeds']} × {r.get('finetune_seeds') or '?'} ft"]
        if efficiency:
            line.append(_fmt(r["flops_saved_vs_fdapt_pct"], 1))
        table.append(line)
    return md_table(header, table)


def _efficiency_half(claims: list[dict]) -> list[str]:
    """Claim 2's efficiency half: FLOPs (an exact count) and training time saved vs fdapt,
    one line per partition and method, against the paper's 12.1 %."""
    seen, table = set(), []
    for r in claims:
        key = (r["partition"], r["method"])
        if r["claim"] != 2 or key in seen:
            continue
        seen.add(key)
        low, high = r["time_saved_ci95_low"], r["time_saved_ci95_high"]
        time = _fmt(r["time_saved_vs_fdapt_pct"], 1) + (
            "" if low is None else f" [{low:+.1f}, {high:+.1f}]")
        lo, hi = r.get("flops_saved_min_pct"), r.get("flops_saved_max_pct")
        flops = _fmt(r["flops_saved_vs_fdapt_pct"], 1) + (
            "" if lo is None or hi is None or round(lo, 1) == round(hi, 1)
            else f" ({lo:.1f}–{hi:.1f} by seed)")
        table.append([r["partition"], f"{r['method']} vs fdapt", flops, time,
                      efficiency_verdict(r)])
    if not table:
        return []
    return (["*Efficiency half*: the paper's 12.1 % against what was measured: training FLOPs "
             "saved (an exact count: the mean over seeds, and its range by seed, as each seed's "
             "split sets its clients' freeze allocation) and the clients' local-training "
             "time saved (mean over the seeds timed alone, 95 % t-interval over seeds).", ""]
            + md_table(["partition", "method", "FLOPs saved %", "time saved % [95 %]",
                        "against the paper's 12.1 %"], table))


def verdicts_md(claims: list[dict], majority: list = (), margin: float = MARGIN_PTS,
                 plan: list[str] = ()) -> list[str]:
    """The report's first section: the paper's claims in its words, test by test."""
    out = ["## Verdicts: the FDAPT paper's claims", "",
           f"Quoted from {PAPER}. Margin: **±{margin:g} points** on each task's metric, "
           "fixed before the runs (a study file's `margin_pts`; 1 point by default, a stated "
           "choice: the paper gives no margin for \"competitive\"). Each row: the 90 % "
           "interval of the paired difference. Where every pretraining seed has fine-tuning "
           "seeds of its own (derived from it, the same for every method at that seed), a "
           "t-interval over pretraining seeds (each seed's difference the mean over its "
           "fine-tuning seeds) widened by the test-set noise all seeds share "
           f"({RESAMPLES} seeded resamples of test examples), Satterthwaite's df; where the "
           "fine-tuning seeds were shared by every pretraining seed (older records), a crossed "
           "random-effects interval, whose few fine-tuning seeds leave few df; "
           "`interval_from` names which. Simulated through this code with pretraining, "
           "fine-tuning, interaction and test noise (`tests/test_coverage.py`), the first "
           "covers 0.86–0.94 at 3 and 10 seeds; the per-seed interval that reports read "
           "before covered 0.66 at 10 seeds with shared fine-tuning seeds. "
           "**equivalent** when the interval lies inside ±margin (two one-sided tests at "
           "α = 0.05) *and* the task shows DAPT over the starting model (fdapt − general "
           "above 0, one-sided at 90 %: column `dapt_shown`); inside the margin on a task "
           "that does not show DAPT, the starting model itself would pass, so the row "
           f"says **{NO_ASSAY}**. **not equivalent** when the difference is "
           "shown beyond the margin (one-sided p < 0.05 after Holm's correction across the "
           "claim's rows: the *Holm interval* is the row's interval at the level its step "
           "used, 1 − 2·0.05/(rows − rank); the 90 % interval beside it is unadjusted, and "
           "only it decides equivalence, which needs no correction); else **inconclusive**. "
           "A readout draw (training and dev examples) shared by several pretraining seeds "
           "moves all their differences alike: such rows get no interval (`interval_from` "
           "says so); the readout's selection jump (a probe's choice of C), partly carried by "
           "a draw made per seed, is covered in the same simulation (0.86–0.94 at 3 and 11 "
           "seeds). A claim **holds** only if every row is "
           "equivalent and **breaks** if any row is shown beyond the margin; claim 2 holds only "
           f"if its efficiency half also reaches the paper's {CLAIMED_EFFICIENCY} % (the exact "
           "FLOPs count, the primary measure, on every partition; the time interval where no "
           "FLOPs were counted) and breaks if it is shown below on every partition of the "
           "paper's own set-up (DistilBERT-base, 8 clients, 512 tokens); short of it on "
           "another set-up it is **not reproduced** there. A row resting on fewer than "
           f"{MIN_SEEDS} pretraining seeds says **{TOO_FEW_SEEDS}**.", ""]
    out += majority_md(list(majority))
    for claim in (1, 2, "beyond"):
        rows = [r for r in claims if r["claim"] == claim and r["verdict"] is not None]
        if claim == "beyond":
            if rows:
                out += ["**Beyond the paper: other freeze policies, within the same margin of "
                        f"fdapt: {claim_summary(claims, claim)}.**", ""]
                out += _verdict_table(rows, efficiency=True)
            continue
        out += [f"**Claim {claim}**: \"{QUOTES[claim]}\". **{claim_summary(claims, claim)}.**",
                ""]
        if claim_scope(claims, claim):
            out += [f"*It rests on*: {claim_scope(claims, claim)}.", ""]
        if claim == 2:
            out += _efficiency_half(claims)
            if rows:
                out += ["*Downstream half* (ffdapt with the paper's allocation vs fdapt):",
                        ""]
        if not rows:
            out += ["*No records to test it: it needs "
                    + ("central and fdapt" if claim == 1
                       else "fdapt and ffdapt with the paper's allocation (freeze.policy: paper)")
                    + " runs with downstream scores.*", ""]
            continue
        out += _verdict_table(rows)
    out += list(plan)
    return out


def dapt_md(coll: Collection, diffs: dict, tasks_of: list[str]) -> list[str]:
    """Whether DAPT moved each task away from the starting model, with its 95 % interval,
    and, where it is not shown, the pretraining seeds that would show an effect of the size
    observed (one-sided at 90 %, the assay-sensitivity test the verdicts use)."""
    table = []
    for part in coll.partitions:
        for m in coll.methods:
            for task in coll.tasks:
                if task.label not in tasks_of:
                    continue
                d = diffs.get((part, m, "general", task.name))
                ci = d.intervals.get(0.95) if d is not None else None
                if d is None:
                    continue
                moved = "not shown" if ci is None or ci.low <= 0 <= ci.high else \
                    ("up" if ci.low > 0 else "down")
                table.append([part, f"{m} − general", f"{task.label} {task.metric}",
                              _signed(d.estimate), "-" if ci is None
                              else f"[{ci.low:+.2f}, {ci.high:+.2f}]", str(d.seeds), moved,
                              _seeds_to_show(d)])
    if not table:
        return []
    return (["## DAPT against the starting model", "",
             "Each adapted model's score minus the starting model's (`general`, no DAPT), "
             "paired as the verdicts are, with its 95 % interval: whether DAPT moved the task "
             "at all. A verdict of equivalence needs fdapt's row shown above 0 (one-sided, "
             "90 %) on its task: a task that cannot see DAPT cannot see a loss of it either. "
             "*Seeds to show it*: the pretraining seeds whose expected interval would show an "
             "effect of the size observed, at the records' fine-tuning seeds and test sets "
             "(from their variance components); where none up to 200 would, deciding needs "
             "another regime (more DAPT, fine-tuning to convergence, a less noisy task: "
             "docs/study.md, the pilot).", ""]
            + md_table(["partition", "difference", "task", "Δ (points)", "95 % interval",
                        "seeds", "moved", "seeds to show it"], table))


def _seeds_to_show(d) -> str:
    """Pretraining seeds at which an effect of d's size would be shown above 0 one-sided at
    90 % (the 80 % interval's half-width below |Δ|), from d's own variance components."""
    if d.paired is None or d.by_seed_ft is None or d.estimate <= 0:
        return "-" if d.estimate > 0 else "none: Δ ≤ 0"
    c = components(d.by_seed_ft, d.paired.shared_var, crossed=d.design == "crossed")
    n = seeds_needed(c, d.by_seed_ft.shape[1], d.estimate, level=0.80)
    return "over 200" if n is None else str(n)


def power_plan(coll: Collection, diffs: dict, claims: list[dict],
               finetune_seeds: int | None, test_n: dict[str, int],
               planned_seeds: int | None = None) -> list[str]:
    """The plan section for the claims whose downstream rows are undecided (nothing when all
    are decided): more seeds narrow downstream intervals; claim 2's efficiency half is read
    in its own table."""
    undecided = {r["claim"] for r in claims
                 if not downstream_summary(claims, r["claim"]).startswith(("holds", "breaks"))}
    claims = [r for r in claims if r["claim"] in undecided]
    pilot_ft = max((d.by_seed_ft.shape[1] for d in diffs.values()
                    if d is not None and d.by_seed_ft is not None), default=1)
    ft = finetune_seeds or pilot_ft
    rows = plan_rows(claims, diffs, coll, ft, test_n, planned_seeds)
    pairs: dict = {}
    for r in claims:
        pairs.setdefault(r["claim"], set()).update({(r["partition"], r["method"]),
                                                   (r["partition"], r["reference"])})
    hours = hours_per_seed(coll, pairs, ft, [t.name for t in coll.tasks])
    blind = sorted({f"{r['partition']} {r['task']}" for r in claims
                    if r.get("dapt_shown") is False})
    caveat = [] if not blind else [
        f"- **More seeds narrow these intervals, but do not decide the rows on tasks that do "
        f"not show DAPT** ({', '.join(blind)}): there an equivalence says nothing at any seed "
        "count. Deciding them needs the task to show DAPT first (the seeds that would take are "
        "in the section *DAPT against the starting model*; where they are over 200, another "
        "regime: more DAPT, fine-tuning to convergence, a probe or a less noisy task).", ""]
    return plan_md(rows, hours, ft, test_n) + caveat
