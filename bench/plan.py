"""A power plan: what deciding each claim row would cost, read from the records at hand.

The records are a pilot. Per verdict row the paired differences `d[seed, fine-tuning seed]`
and the shared test noise give the variance components (`fdapt_core.stats.components`):
between pretraining seeds, between fine-tuning seeds of one model, and the test set's shared
part, rescaled to the test set the planned study scores on. From them: the fewest pretraining
seeds whose expected 90 % half-width fits inside the margin (what showing equivalence takes if
the true difference is 0), and inside the margin less the observed |Δ| (if it is what was
observed); and what those seeds cost in hours on this host, from the records' own training
and fine-tuning times. A claim needs every row (intersection-union), so its seeds are its
rows' largest.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Optional

from fdapt_core.stats import Components, components, half_width, seeds_needed

from .collect import Collection
from .tables import md_table

MOST = 200  # seeds the plan looks up to


@dataclass(frozen=True)
class PlanRow:
    claim: object
    partition: str
    method: str
    reference: str
    task: str
    estimate: float
    margin: float
    components: Components
    pilot_seeds: int
    pilot_finetune_seeds: int
    separable: bool  # fine-tuning noise told apart from pretraining noise (2+ ft seeds)
    seeds_at_zero: Optional[int]  # half-width ≤ margin
    seeds_at_estimate: Optional[int]  # half-width ≤ margin − |Δ|
    half_width_now: float  # expected at the planned design with the pilot's seed count


def plan_rows(claims: list[dict], diffs: dict, coll: Collection, finetune_seeds: int,
              test_n: dict[str, int]) -> list[PlanRow]:
    """One plan row per verdict row that has per-example outcomes. `test_n[task name]`: the
    test examples the planned study scores on (the pilot's own where absent)."""
    by_label = {t.label: t.name for t in coll.tasks}
    out = []
    for r in claims:
        name = by_label.get(r["task"], r["task"])
        d = diffs.get((r["partition"], r["method"], r["reference"], name))
        if d is None or d.paired is None or d.by_seed_ft is None or d.test_n is None:
            continue
        pilot = components(d.by_seed_ft, d.paired.shared_var, crossed=d.design == "crossed")
        scale = d.test_n / test_n.get(name, d.test_n)  # shared test noise ∝ 1 / examples
        c = Components(pilot.pretraining, pilot.finetuning, pilot.test * scale)
        room = r["margin_pts"] - abs(d.estimate)
        out.append(PlanRow(
            r["claim"], r["partition"], r["method"], r["reference"], r["task"], d.estimate,
            r["margin_pts"], c, d.seeds, d.by_seed_ft.shape[1], d.by_seed_ft.shape[1] > 1,
            seeds_needed(c, finetune_seeds, r["margin_pts"], most=MOST),
            seeds_needed(c, finetune_seeds, room, most=MOST) if room > 0 else None,
            half_width(c, max(d.seeds, 2), finetune_seeds)))
    return out


def hours_per_seed(coll: Collection, claim_methods: dict, finetune_seeds: int,
                   tasks: list[str]) -> dict:
    """claim → hours one more pretraining seed costs on this host: per partition, each of the
    claim's methods trained once (the median of its records' wall time) and fine-tuned
    `finetune_seeds` times per task (the median time of a fine-tuning run in its records)."""
    out = {}
    for claim, pairs in claim_methods.items():
        total = 0.0
        for part, method in sorted(pairs):
            cell = coll.cell(part, method)
            if cell is None:
                continue
            walls = [(r.rec.get("totals") or {}).get("wall_s") for r in cell.runs]
            walls = [w for w in walls if w]
            total += statistics.median(walls) if walls else 0.0
            for task in tasks:
                runs = [x.get("wall_s") for r in cell.runs
                        for x in ((r.rec.get("downstream") or {}).get(task) or {}).get("runs", [])
                        if x.get("wall_s")]
                total += finetune_seeds * (statistics.median(runs) if runs else 0.0)
        out[claim] = total / 3600
    return out


def plan_md(rows: list[PlanRow], hours: dict, finetune_seeds: int,
            test_n: dict[str, int]) -> list[str]:
    """The report's "what deciding would take" section (and `bench study --plan`)."""
    if not rows:
        return []
    sizes = ", ".join(f"{k} {v:,}" for k, v in sorted(test_n.items()))
    out = ["### What deciding would take: a power plan", "",
           "The records read as a pilot: per row the variance components of the paired "
           "difference (points²: between pretraining seeds, between fine-tuning seeds of one "
           "model, and the test set's shared part"
           + (f", rescaled to test sets of {sizes} examples" if sizes else "")
           + f"), and the fewest pretraining seeds, each fine-tuned {finetune_seeds}× per task, "
           "whose expected 90 % half-width fits inside the margin (if the true Δ is 0) or "
           "inside the margin less the observed |Δ| (if it is as observed). Hours: per seed, "
           "each of the claim's methods trained and fine-tuned once more, at this host's "
           "measured medians.", ""]
    if any(not r.separable and not r.task.endswith("_probe") for r in rows):
        out += ["*The pilot fine-tuned each model once: fine-tuning noise cannot be told apart "
                "from pretraining noise, and is counted as pretraining noise, which more "
                "fine-tuning seeds would not reduce (the plan is conservative).*", ""]
    if any(r.task.endswith("_probe") for r in rows):
        out += ["*A linear probe (`_probe` tasks) is one deterministic fit per model: it has "
                "no fine-tuning noise, and its one fit is all a planned seed needs.*", ""]
    order = {1: 0, 2: 1, "beyond": 2}
    rows = sorted(rows, key=lambda r: order.get(r.claim, 3))
    table = []
    for r in rows:
        c = r.components
        table.append([str(r.claim), r.partition, f"{r.method} − {r.reference}", r.task,
                      f"{r.estimate:+.2f}", f"±{r.margin:.2f}",
                      f"{c.pretraining:.2f} / {c.finetuning:.2f} / {c.test:.3f}",
                      f"{r.half_width_now:.2f} ({r.pilot_seeds})",
                      _seeds(r.seeds_at_zero, c, r.margin), _seeds(r.seeds_at_estimate, c,
                                                                  r.margin - abs(r.estimate))])
    out += md_table(["claim", "partition", "difference", "task", "Δ", "margin",
                   "var: pretrain / fine-tune / test", "half-width (seeds)",
                   "seeds if Δ = 0", "seeds if Δ as observed"], table)
    for claim in dict.fromkeys(r.claim for r in rows):
        mine = [r for r in rows if r.claim == claim]
        label = f"Claim {claim}" if claim != "beyond" else "Beyond the paper"
        zero = [r.seeds_at_zero for r in mine]
        seen = [r.seeds_at_estimate for r in mine]
        per = hours.get(claim)
        out.append(f"- **{label}**: " + _claim_cost(zero, per, "if every Δ is 0") + "; "
                   + _claim_cost(seen, per, "if every Δ is as observed") + ".")
    return out + [""]


def _seeds(n: Optional[int], c: Components, room: float) -> str:
    if n is not None:
        return str(n)
    if room <= 0:
        return "— (|Δ| ≥ margin)"
    return f"> {MOST}" + (" (test noise alone: a larger test set)"
                          if half_width(c, 10 ** 6, 1) > room else "")


def _claim_cost(seeds: list, per_seed_h: Optional[float], when: str) -> str:
    if any(s is None for s in seeds):
        return f"not within {MOST} seeds {when}"
    n = max(seeds)
    cost = "" if per_seed_h is None else f", about {n * per_seed_h:.1f} h on this host " \
        f"({per_seed_h:.2f} h a seed)"
    return f"{n} pretraining seeds {when}{cost}"
