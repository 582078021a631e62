"""`bench perf --history`: the records of a folder as a history per measure, with the first
record of a step change that lies outside the records' own intervals (asv's view of a nightly
benchmark), tables and one PNG per measure."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from bench.cli import app
from fdapt_core.perf.history import history


def _record(folder, day: int, commit: str, ratio: float, tps: float, quick=False):
    rec = {"created": f"2026-12-{day:02d}T01:00:00Z", "quick": quick,
           "environment": {"device": "cpu", "git_commit": commit * 8},
           "throughput": {"tokens_per_s": {"harness": tps, "plain": tps, "trainer": tps},
                          "samples_tokens_per_s": {"harness": [tps * 0.98, tps * 1.02],
                                                   "plain": [tps * 0.97, tps * 1.03],
                                                   "trainer": [tps * 0.9, tps * 1.1]}},
           "harness_vs_plain_ratio": ratio,
           "harness_vs_plain_ci90": [ratio - 0.02, ratio + 0.02],
           "harness_vs_trainer_ratio": 1.1, "suite_wall_s": 700.0 + day}
    (folder / f"perf-cpu-{day}.json").write_text(json.dumps(rec))


def test_a_step_change_is_marked_where_it_begins_and_noise_is_not(tmp_path):
    # harness throughput: 1000 1005 1002 | 800 805 (a step down on day 4, it stays)
    # the ratio: one night out of its band on day 2, back on day 3: noise, not a step
    for day, commit, ratio, tps in ((1, "a", 1.00, 1000), (2, "b", 1.10, 1005),
                                    (3, "c", 1.00, 1002), (4, "d", 1.01, 800),
                                    (5, "e", 0.99, 805)):
        _record(tmp_path, day, commit, ratio, tps)
    (tmp_path / "not-a-record.json").write_text("{}")
    h = history(tmp_path)
    steps = {name: [(p.commit[:1], p.step) for p in pts if p.step] for name, pts in h.items()}
    assert steps["tokens_per_s_harness"] == [("d", "down")]
    assert steps["harness_vs_plain_ratio"] == []
    assert [p.low for p in h["harness_vs_plain_ratio"]][0] == 0.98
    res = CliRunner().invoke(app, ["perf", "--history", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "step down begins" in res.output and "dddddddd" in res.output
    assert (tmp_path / "history" / "tokens_per_s_harness.png").stat().st_size > 1000
    assert (tmp_path / "history" / "harness_vs_plain_ratio.png").is_file()


def test_a_quick_suite_is_its_own_series(tmp_path):
    _record(tmp_path, 1, "a", 1.0, 1000)
    _record(tmp_path, 2, "b", 1.0, 300, quick=True)  # a smoke-sized suite: not a step
    assert not any(p.step for p in history(tmp_path)["tokens_per_s_harness"])


def test_an_empty_folder_is_one_line(tmp_path):
    import io

    import pytest
    from rich.console import Console

    from bench.perf import run_history
    from fdapt_core.errors import FdaptError

    with pytest.raises(FdaptError, match="no perf record there"):
        run_history(Console(file=io.StringIO()), tmp_path)
