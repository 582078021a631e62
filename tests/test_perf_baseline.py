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
