"""The perf gate's comparison rule, on hand-made records."""
from fdapt_core.perf.baseline import Check, compare

BASE = {"harness_vs_plain_ratio": 1.00, "outside_train_share": 0.02,
        "ffdapt": {"paper": {"flops_saved_pct": 12.0}}, "memory_growth": 0.01}


def _by_metric(rows):
    return {r["metric"]: r for r in rows}


def test_within_tolerance_passes():
    cur = {"harness_vs_plain_ratio": 0.96, "outside_train_share": 0.035,
           "ffdapt": {"paper": {"flops_saved_pct": 11.6}}, "memory_growth": 0.05}
    rows = _by_metric(compare(cur, BASE))
    assert all(r["ok"] for r in rows.values())
    assert rows["harness_vs_plain_ratio"]["limit"] == 0.95  # 5 % below, relative
    assert rows["outside_train_share"]["limit"] == 0.04  # 2 points above, absolute


def test_each_direction_of_regression_fails():
    cur = {"harness_vs_plain_ratio": 0.94, "outside_train_share": 0.05,
           "ffdapt": {"paper": {"flops_saved_pct": 11.4}}, "memory_growth": 0.07}
    rows = _by_metric(compare(cur, BASE))
    assert not any(r["ok"] for r in rows.values())
    assert {r["why"] for r in rows.values()} == {"regression"}


def test_missing_metric_fails_and_untracked_is_skipped():
    rows = _by_metric(compare({"memory_growth": 0.0}, {"memory_growth": 0.0,
                                                        "harness_vs_plain_ratio": 1.0}))
    assert rows["harness_vs_plain_ratio"]["ok"] is False
    assert rows["harness_vs_plain_ratio"]["why"] == "missing in this run"
    assert "outside_train_share" not in rows  # not in the baseline: not gated


def test_custom_check():
    c = Check("x", "lower", 0.1, True)
    assert c.limit(2.0) == 2.2
    assert compare({"x": 2.3}, {"x": 2.0}, [c])[0]["ok"] is False


def test_a_ratio_with_an_interval_fails_only_when_the_interval_lies_below_the_limit():
    """±20 % within a run: a point ratio could not tell a 5 % regression from noise. With its
    paired 90 % interval the gate fails only when the whole interval is below the limit."""
    base = {"harness_vs_plain_ratio": 1.00}

    def row(ratio, ci):
        cur = {"harness_vs_plain_ratio": ratio, "harness_vs_plain_ci90": ci}
        return _by_metric(compare(cur, base))["harness_vs_plain_ratio"]

    assert row(0.93, [0.91, 0.94])["ok"] is False  # all of it below 0.95: a regression
    below_but_unsure = row(0.94, [0.90, 0.98])  # the point alone would have failed
    assert below_but_unsure["ok"] and below_but_unsure["why"].startswith("cannot tell")
    clear = row(0.97, [0.96, 0.98])
    assert clear["ok"] and clear["why"] == ""


def test_paired_ratio_interval_covers_and_drift_falls_out():
    import math
    import random

    from fdapt_core.perf.throughput import paired_ratio

    rng = random.Random(0)
    # a host that drifts by ±30 % between pairs, the pair's two loops 3 % apart within it
    drift = [1.0 + 0.3 * math.sin(i) for i in range(12)]
    a = [1000 * d * 0.97 * math.exp(rng.gauss(0, 0.01)) for d in drift]
    b = [1000 * d * math.exp(rng.gauss(0, 0.01)) for d in drift]
    p = paired_ratio(a, b)
    assert p["pairs"] == 12 and p["ci90"][0] < 0.97 < p["ci90"][1] and p["half_width"] < 0.02
    assert paired_ratio(a[:1], b[:1])["ci90"] is None  # one pair: no interval
