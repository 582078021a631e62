"""A nightly perf history, as airspeed velocity keeps one: every `bench perf` record of a
folder, ordered by time, each measure with the interval its record gives it, and the first
record of each step change.

A measure's interval is its record's own: the 90 % paired interval of a harness / plain ratio
where the record has one, else the range of the repeats' samples of a throughput (a record
without either has a point only). A **step change** begins at the first record whose interval
lies wholly outside the interval of the last record before it that was not a lone outlier, and
whose next record (if there is one) also lies outside that interval, on the same side: a change
that stays, not one noisy night. Records of a quick suite, of other suite sizes, or taken on another device kind
are other series.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# measure → (where its value is in a record, where its interval is: None for none)
MEASURES = {
    "harness_vs_plain_ratio": (("harness_vs_plain_ratio",), ("harness_vs_plain_ci90",)),
    "harness_vs_trainer_ratio": (("harness_vs_trainer_ratio",), None),
    "harness_vs_plain_ratio_causal": (("harness_vs_plain_ratio_causal",),
                                      ("harness_vs_plain_ci90_causal",)),
    "tokens_per_s_harness": (("throughput", "tokens_per_s", "harness"),
                             ("throughput", "samples_tokens_per_s", "harness")),
    "tokens_per_s_plain": (("throughput", "tokens_per_s", "plain"),
                           ("throughput", "samples_tokens_per_s", "plain")),
    "tokens_per_s_trainer": (("throughput", "tokens_per_s", "trainer"),
                             ("throughput", "samples_tokens_per_s", "trainer")),
    "suite_wall_s": (("suite_wall_s",), None),
}


@dataclass(frozen=True)
class Point:
    """One record's value of one measure."""

    created: str
    commit: str
    file: str
    value: float
    low: Optional[float]
    high: Optional[float]
    series: str  # device kind and suite size: only a series is compared with itself
    step: Optional[str] = None  # "up" or "down": the first record of a step change


def _at(rec: dict, path: tuple) -> object:
    for key in path:
        if not isinstance(rec, dict) or key not in rec:
            return None
        rec = rec[key]
    return rec


def _interval(raw) -> tuple[Optional[float], Optional[float]]:
    """(low, high) of a record's interval: the ends of a [low, high] pair, or the range of a
    list of samples (the same computation)."""
    values = [float(v) for v in raw if isinstance(v, (int, float))] \
        if isinstance(raw, list) else []
    return (min(values), max(values)) if values else (None, None)


def read_records(folder: Path) -> list[tuple[Path, dict]]:
    """Every perf record (a JSON with `throughput` and `created`) under `folder`, by time."""
    out = []
    for path in sorted(Path(folder).rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and "throughput" in rec and "created" in rec:
            out.append((path, rec))
    return sorted(out, key=lambda pr: pr[1]["created"])


def history(folder: Path) -> dict[str, list[Point]]:
    """measure → its points, by time, with step changes marked."""
    records = read_records(folder)
    out: dict[str, list[Point]] = {}
    for name, (value_at, interval_at) in MEASURES.items():
        points = []
        for path, rec in records:
            value = _at(rec, value_at)
            if not isinstance(value, (int, float)):
                continue
            low, high = _interval(_at(rec, interval_at)) if interval_at else (None, None)
            env = rec.get("environment") or {}
            kind = "gpu" if str(env.get("device", "")).startswith("cuda") else "cpu"
            # the suite's sizes (model, batch, steps) decide its throughputs: other sizes,
            # another series
            sizes = hashlib.sha256(json.dumps(rec.get("sizes"), sort_keys=True).encode()
                                   ).hexdigest()[:6]
            points.append(Point(rec["created"], str(env.get("git_commit") or "?")[:10],
                                path.name, float(value), low, high,
                                f"{kind}{' quick' if rec.get('quick') else ''} {sizes}"))
        if points:
            out[name] = mark_steps(points)
    return out


def _outside(p: Point, ref: Point) -> Optional[str]:
    """"up" or "down" when p's interval (or value) lies wholly beyond ref's interval."""
    if ref.low is None or ref.high is None:
        return None  # a point with no interval of its own cannot tell noise from a change
    lo = p.low if p.low is not None else p.value
    hi = p.high if p.high is not None else p.value
    if lo > ref.high:
        return "up"
    if hi < ref.low:
        return "down"
    return None


def mark_steps(points: list[Point]) -> list[Point]:
    """Mark the first record of each step change within each series. Each record is read
    against a reference: the last record that was not a lone outlier (outside the reference,
    with the record after it back inside); a record outside the reference whose next record
    is outside on the same side (or that is the last) begins a step and becomes the
    reference."""
    out = list(points)
    by_series: dict[str, list[int]] = {}
    for i, p in enumerate(points):
        by_series.setdefault(p.series, []).append(i)
    for idx in by_series.values():
        ref = points[idx[0]]
        for j in range(1, len(idx)):
            now = points[idx[j]]
            side = _outside(now, ref)
            if side is None:
                ref = now
                continue
            if j + 1 >= len(idx) or _outside(points[idx[j + 1]], ref) == side:
                out[idx[j]] = Point(**{**now.__dict__, "step": side})
                ref = now
    return out
