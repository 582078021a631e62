"""A power plan: what deciding each claim row would cost, read from the records at hand.

The records are a pilot. Per verdict row the paired differences `d[seed, fine-tuning seed]`
and the shared test noise give the variance components (`fdapt_core.stats.components`):
between pretraining seeds, between fine-tuning seeds of one model, and the test set's shared
part, rescaled to the test set the planned study scores on. From them, by simulating the
verdicts' own interval (`fdapt_core.stats.decision_power`), the probability that the row reads
as hoped at the planned seed count: "equivalent" if the true difference is 0, "beyond the
margin" if it is what was observed (at α over the claim's rows, Holm's first step); and the
fewest pretraining seeds that give 80 % power, with what they cost in hours on this host, from
the records' own training and fine-tuning times. A claim holds only if every row is
equivalent, so its power is the product of its rows' (rows taken as independent); it breaks
if any row is shown beyond the margin. The expected half-width is kept beside: a half-width
that fits the margin on average is at best an even chance of a decision, not a plan.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Optional

from fdapt_core.stats import (Components, components, decision_power, half_width,
                              seeds_for_power)

from .collect import Collection
from .tables import md_table
from .verdicts import SHARED_READOUT_HOW

MOST = 200  # seeds the plan looks up to
POWER = 0.80  # the power a plan's seed count aims at
ALPHA = 0.05  # each TOST, and Holm's family-wise level (as bench/verdicts.py)


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
    half_width_now: float  # expected at the planned design with the pilot's seed count
    finetune_seeds: int  # the planned design's
    rows_in_claim: int  # Holm's first step: α over these
    planned_seeds: int  # the seed count the powers are given at
    draw_shared: bool = False  # the pilot's readout draw was shared by its seeds

    def power(self, seeds: int, hope: str) -> float:
        """P(the row reads "equivalent" if Δ = 0 | "beyond" the margin if Δ is as seen)."""
        if hope == "equivalent":
            return decision_power(self.components, seeds, self.finetune_seeds, 0.0,
                                  self.margin, "equivalent", ALPHA)
        return decision_power(self.components, seeds, self.finetune_seeds, self.estimate,
                              self.margin, "beyond", ALPHA / self.rows_in_claim)

    def seeds_for(self, hope: str) -> Optional[int]:
        return seeds_for_power(lambda n: self.power(n, hope), POWER, MOST)


def plan_rows(claims: list[dict], diffs: dict, coll: Collection, finetune_seeds: int,
              test_n: dict[str, int], planned_seeds: Optional[int] = None) -> list[PlanRow]:
    """One plan row per verdict row that has per-example outcomes. `test_n[task name]`: the
    test examples the planned study scores on (the pilot's own where absent);
    `planned_seeds`: the seed count to give the powers at (None: the pilot's)."""
    by_label = {t.label: t.name for t in coll.tasks}
    per_claim: dict = {}
    for r in claims:
        per_claim[r["claim"]] = per_claim.get(r["claim"], 0) + 1
    out = []
    for r in claims:
        name = by_label.get(r["task"], r["task"])
        d = diffs.get((r["partition"], r["method"], r["reference"], name))
        if d is None or d.paired is None or d.by_seed_ft is None or d.test_n is None:
            continue
        pilot = components(d.by_seed_ft, d.paired.shared_var, crossed=d.design == "crossed")
        scale = d.test_n / test_n.get(name, d.test_n)  # shared test noise ∝ 1 / examples
        c = Components(pilot.pretraining, pilot.finetuning, pilot.test * scale)
        out.append(PlanRow(
            r["claim"], r["partition"], r["method"], r["reference"], r["task"], d.estimate,
            r["margin_pts"], c, d.seeds, d.by_seed_ft.shape[1], d.by_seed_ft.shape[1] > 1,
            half_width(c, max(d.seeds, 2), finetune_seeds), finetune_seeds,
            per_claim[r["claim"]], planned_seeds or d.seeds, d.method == SHARED_READOUT_HOW))
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
    planned = rows[0].planned_seeds
    sizes = ", ".join(f"{k} {v:,}" for k, v in sorted(test_n.items()))
    out = ["### What deciding would take: a power plan", "",
           "The records read as a pilot: per row the variance components of the paired "
           "difference (points²: between pretraining seeds, between fine-tuning seeds of one "
           "model, and the test set's shared part"
           + (f", rescaled to test sets of {sizes} examples" if sizes else "")
           + f"), each seed fine-tuned {finetune_seeds}× per task. From them, simulating the "
           f"verdicts' own interval ({4000:,} studies a seed count), the **power**: the "
           f"probability that the row reads \"equivalent\" if the true Δ is 0, and \"beyond "
           "the margin\" if it is as observed (one-sided at α over the claim's rows, Holm's "
           f"first step), at {planned} pretraining seeds; and the fewest seeds that give "
           f"{POWER * 100:.0f} % power. The expected 90 % half-width is beside it: a half-width that "
           "fits the margin on average is at best an even chance of a decision. Hours: per "
           "seed, each of the claim's methods trained and fine-tuned once more, at this "
           "host's measured medians.", ""]
    if any(not r.separable and not r.task.endswith("_probe") for r in rows):
        out += ["*The pilot fine-tuned each model once: fine-tuning noise cannot be told apart "
                "from pretraining noise, and is counted as pretraining noise, which more "
                "fine-tuning seeds would not reduce (the plan is conservative).*", ""]
    if any(r.task.endswith("_probe") for r in rows):
        out += ["*A linear probe (`_probe` tasks) is one deterministic fit per model on its "
                "seed's readout draw: it has no fine-tuning noise, and its one fit is all a "
                "planned seed needs.*", ""]
    if any(r.draw_shared for r in rows):
        out += ["*The pilot read every seed's models on one readout draw: the draw's own "
                "variance (the training and dev sample, the C it selects) is not in its "
                "components, which understate the noise of a study that draws per seed; "
                "these powers are an upper bound.*", ""]
    order = {1: 0, 2: 1, "beyond": 2}
    rows = sorted(rows, key=lambda r: order.get(r.claim, 3))
    table = []
    for r in rows:
        c = r.components
        table.append([str(r.claim), r.partition, f"{r.method} − {r.reference}", r.task,
                      f"{r.estimate:+.2f}", f"±{r.margin:.2f}",
                      f"{c.pretraining:.2f} / {c.finetuning:.2f} / {c.test:.3f}",
                      f"{r.half_width_now:.2f} ({r.pilot_seeds})",
                      f"{r.power(planned, 'equivalent'):.2f}",
                      _seeds(r.seeds_for("equivalent")),
                      f"{r.power(planned, 'beyond'):.2f}",
                      _seeds(r.seeds_for("beyond"))])
    out += md_table(["claim", "partition", "difference", "task", "Δ", "margin",
                     "var: pretrain / fine-tune / test", "half-width (seeds)",
                     f"P(equivalent | Δ = 0), {planned} seeds", f"seeds for {POWER * 100:.0f} %",
                     f"P(beyond | Δ as seen), {planned} seeds", f"seeds for {POWER * 100:.0f} % "],
                    table)
    out.append("")
    for claim in dict.fromkeys(r.claim for r in rows):
        mine = [r for r in rows if r.claim == claim]
        label = f"Claim {claim}" if claim != "beyond" else "Beyond the paper"
        out.append(f"- **{label}**: " + _claim_line(mine, planned, hours.get(claim)) + ".")
    return out + [""]


def claim_power(rows: list[PlanRow], seeds: int, hope: str) -> float:
    """P(every row equivalent | Δ = 0) or P(some row beyond the margin | Δ as seen), the rows
    taken as independent."""
    if hope == "equivalent":
        return float(math.prod(r.power(seeds, hope) for r in rows))
    return 1.0 - float(math.prod(1.0 - r.power(seeds, hope) for r in rows))


def _claim_line(rows: list[PlanRow], planned: int, per_seed_h: Optional[float]) -> str:
    parts = []
    for hope, words in (("equivalent", "every row equivalent if every Δ is 0"),
                        ("beyond", "some row beyond the margin if every Δ is as observed")):
        now = claim_power(rows, planned, hope)
        n = seeds_for_power(lambda k: claim_power(rows, k, hope), POWER, MOST)
        cost = "" if n is None or per_seed_h is None else \
            f", about {n * per_seed_h:.1f} CPU-h on this host ({per_seed_h:.2f} h a seed)"
        need = f"is not reached within {MOST} seeds" if n is None \
            else f"needs {n} pretraining seeds{cost}"
        parts.append(f"P({words}) {now:.2f} at {planned} seeds; {POWER * 100:.0f} % power "
                     f"{need}")
    return "; ".join(parts)


def _seeds(n: Optional[int]) -> str:
    return f"> {MOST}" if n is None else str(n)
