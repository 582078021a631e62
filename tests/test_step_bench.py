"""The GPU check's step bench, run on the CPU at tiny sizes: what it records and how it
decides when the repeats agree. Its figures are GPU figures (scripts/gpu_check.sh); here only
its rules and counts are checked, never a speed."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import fdapt_core.perf.step_bench as sb
from fdapt_core.fl.local import LocalStats
from fdapt_core.heads import scoring_head
from fdapt_core.flops.count import FlopCache

CPU = torch.device("cpu")
TINY = sb.Setup(preset="tiny", batch=4, seq_len=32, vocab=500, precision="fp32")
QUICK = sb.Timing(steps=1, warmup=1, min_repeats=2, max_repeats=2)


def test_a_row_counts_the_model_and_the_run_flops_and_pads_the_vocabulary():
    row = sb.measure(TINY, CPU, QUICK)
    assert row["vocab_rows"] == 512  # 500 padded to a multiple of 64
    assert row["head"].startswith("sparse")
    # MFU's fixed formula keeps the head at every position; the run skips most of it
    assert row["run_flops_per_token"] < row["model_flops_per_token"]
    assert row["repeats"] == 2 and len(row["samples_tokens_per_s"]) == 2
    assert row["gpu_max_allocated_mb"] is None and row["host_peak_rss_mb"] > 0
    dense = sb.measure(replace(TINY, sparse_head=False, pad_vocab=0), CPU, QUICK)
    assert dense["vocab_rows"] == 500
    assert dense["run_flops_per_token"] == dense["model_flops_per_token"]


def timed(monkeypatch, walls):
    """The step bench's loop replaced by one that took these seconds per 100 tokens."""
    walls = iter(walls)

    def fake(*args, **kwargs):
        st = LocalStats()
        st.tokens, st.wall_s = 100, next(walls)
        return st

    monkeypatch.setattr(sb, "train_steps", fake)


def test_repeats_go_on_until_the_last_ones_agree_within_the_spread(monkeypatch):
    timed(monkeypatch, [1.0, 2.0, 1.0, 1.01, 1.0, 9.0])
    row = sb.measure(TINY, CPU, sb.Timing(steps=1, warmup=0, min_repeats=3, max_repeats=6))
    # 100, 50, 100 spread 50 %; 50, 100, 99 still; 100, 99, 100: within 5 %, stop at 5
    assert row["repeats"] == 5 and row["spread_met"] and row["spread"] < 0.05


def test_repeats_that_never_agree_say_so(monkeypatch):
    timed(monkeypatch, [1.0, 2.0, 1.0, 2.0])
    row = sb.measure(TINY, CPU, sb.Timing(steps=1, warmup=0, min_repeats=2, max_repeats=3))
    assert row["repeats"] == 3 and not row["spread_met"] and row["spread"] == pytest.approx(
        2 / 3)


def test_a_policy_saves_the_flops_the_runs_count():
    out = sb.policy_savings(replace(TINY, preset="small", seq_len=16), CPU, QUICK,
                            policies=("bottom",))
    row = out["bottom"]
    assert row["frozen_params"] > 0 and out["none"]["frozen_params"] == 0
    # the run's own FLOP cache, on the frozen set the step bench froze, gives the same saving
    model, _, objective, _ = sb.build(replace(TINY, preset="small", seq_len=16), CPU)
    frozen = sb._freeze(model, replace(TINY, freeze="bottom"))
    cache = FlopCache(model, scoring_head(model, "mlm", True, 0.15, 16))
    full, part = (cache.get(f, (4, 16)).total for f in (frozenset(), frozen))
    assert row["flops_saved_pct"] == pytest.approx(100 * (1 - part / full), abs=1e-9)
    assert row["gap_points"] == pytest.approx(row["wall_saved_pct"] - row["flops_saved_pct"])


def test_the_ladder_stops_at_its_budget():
    out = sb.gpu_rows(CPU, budget_s=0.0, progress=lambda m: None)
    assert out["rows"] == {} and out["policies"] is None
    assert out["skipped"] == [name for name, _ in sb.LADDER] + ["freeze policies"]
