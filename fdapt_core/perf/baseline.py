"""Compare a perf record with a committed baseline, by ratio, with tolerances.

Only ratios and shares measured within one run are compared: absolute tokens/s differ from
machine to machine, a ratio of two loops measured side by side does much less. A metric
measured with an interval (harness ÷ plain: paired repeats, 90 %) is judged by it: a
regression only when the whole interval lies past the limit, "cannot tell" when it straddles
the limit (more pairs would decide), passed when it lies on the right side.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Check:
    """`key` (dotted path in the record) must not move the wrong way by more than `tol`."""

    key: str
    better: str  # "higher" or "lower"
    tol: float
    relative: bool  # tol as a share of the baseline value, else in the metric's own units
    interval: Optional[str] = None  # the record's key of the metric's 90 % interval, if any

    def limit(self, base: float) -> float:
        slack = abs(base) * self.tol if self.relative else self.tol
        return base - slack if self.better == "higher" else base + slack


CHECKS = (
    Check("harness_vs_plain_ratio", "higher", 0.05, True, "harness_vs_plain_ci90"),
    Check("harness_vs_trainer_ratio", "higher", 0.10, True),
    Check("harness_vs_plain_ratio_causal", "higher", 0.05, True, "harness_vs_plain_ci90_causal"),
    Check("harness_vs_trainer_ratio_causal", "higher", 0.10, True),
    Check("outside_train_share", "lower", 0.02, False),
    Check("ffdapt.paper.flops_saved_pct", "higher", 0.5, False),
    Check("ffdapt.bottom.flops_saved_pct", "higher", 0.5, False),
    Check("memory_growth", "lower", 0.05, False),
)


def _get(record: dict, dotted: str):
    node = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def compare(current: dict, baseline: dict, checks=CHECKS) -> list[dict]:
    """One row per check: baseline, current, limit, and whether it passed."""
    rows = []
    for c in checks:
        base, cur = _get(baseline, c.key), _get(current, c.key)
        if base is None:
            continue  # the baseline does not track it
        if cur is None:
            rows.append({"metric": c.key, "baseline": base, "current": None, "limit": None,
                         "better": c.better, "ok": False, "why": "missing in this run"})
            continue
        limit = c.limit(base)
        ci = _get(current, c.interval) if c.interval else None
        row = {"metric": c.key, "baseline": base, "current": cur, "limit": limit,
               "better": c.better, "ci90": ci}
        if ci is None:  # a point: judged as it is
            ok = cur >= limit if c.better == "higher" else cur <= limit
            row.update(ok=ok, why="" if ok else "regression")
        else:
            worse = ci[1] < limit if c.better == "higher" else ci[0] > limit
            better = ci[0] >= limit if c.better == "higher" else ci[1] <= limit
            row.update(ok=not worse, why="regression" if worse else "" if better else
                       f"cannot tell: the 90 % interval [{ci[0]:.3f}, {ci[1]:.3f}] straddles "
                       f"the limit {limit:.3f}; more pairs would decide")
        rows.append(row)
    return rows
