"""Compare a perf record with a committed baseline, by ratio, with tolerances.

Only ratios and shares measured within one run are compared: absolute tokens/s differ from
machine to machine, a ratio of two loops measured side by side does much less.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """`key` (dotted path in the record) must not move the wrong way by more than `tol`."""

    key: str
    better: str  # "higher" or "lower"
    tol: float
    relative: bool  # tol as a share of the baseline value, else in the metric's own units

    def limit(self, base: float) -> float:
        slack = abs(base) * self.tol if self.relative else self.tol
        return base - slack if self.better == "higher" else base + slack


CHECKS = (
    Check("harness_vs_plain_ratio", "higher", 0.05, True),
    Check("harness_vs_trainer_ratio", "higher", 0.10, True),
    Check("harness_vs_plain_ratio_causal", "higher", 0.05, True),
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
        ok = cur >= limit if c.better == "higher" else cur <= limit
        rows.append({"metric": c.key, "baseline": base, "current": cur, "limit": limit,
                     "better": c.better, "ok": ok, "why": "" if ok else "regression"})
    return rows
