"""Wall times taken on a busy host are flagged wherever they are shown: compare, report, perf."""
from __future__ import annotations

import io

from rich.console import Console

from bench.perf import summary_table
from bench.report import make_report
from bench.tables import notes, rich_table, rows_of, write_tables
from tests.test_missing_reference import compare_record
from tests.test_report import make_record, write

BUSY = {"cpus": 2, "threads": 2, "other_cpu_cores": 1.6, "load_avg_max": 3.9,
        "contended": True}
QUIET = {"cpus": 2, "threads": 2, "other_cpu_cores": 0.02, "load_avg_max": 2.0,
         "contended": False}


def test_compare_marks_the_times_of_a_contended_run_and_the_savings_against_it(tmp_path):
    records = [compare_record(m) for m in ("central", "fdapt", "ffdapt-bottom")]
    records[0]["host"], records[1]["host"], records[2]["host"] = QUIET, BUSY, QUIET
    rows = rows_of(records, [False] * 3)
    text = io.StringIO()
    Console(file=text, width=250).print(rich_table(rows, "t"))
    lines = {ln.split("│")[1].strip(): ln for ln in text.getvalue().splitlines()
             if ln.count("│") > 3 and ln.split("│")[1].strip() in ("central", "fdapt",
                                                                   "ffdapt-bottom")}
    # fdapt's own times are marked; the others' are clean, but their time saved % compares
    # with fdapt's contended time, so that one column is marked too
    # wall s, tok/s, time saved % (vs itself) and the projected time to target
    assert lines["fdapt"].count("!") == 4
    assert lines["central"].count("!") == 1 and lines["ffdapt-bottom"].count("!") == 1
    foot = notes(records)
    assert any("fdapt: timed under contention" in n and "1.6 of the host's 2 cores" in n
               for n in foot)
    write_tables(tmp_path, rows, "t", foot)
    csv = (tmp_path / "compare.csv").read_text().splitlines()
    assert "contended" in csv[0].split(",") and "_saving_dirty" not in csv[0]
    assert "timed under contention" in (tmp_path / "compare.md").read_text()


def test_compare_prints_the_real_token_difference_when_budgets_differ():
    records = [compare_record("central"), compare_record("fdapt")]
    assert any("as many training tokens" in n for n in notes(records))
    records[0]["totals"]["tokens"] = 5085
    assert any("central trained 5,085 tokens, fdapt 5,000 (+1.7 %)" in n
               for n in notes(records))


def test_report_marks_contended_cells(tmp_path):
    for method, host in (("fdapt", QUIET), ("ffdapt-bottom", BUSY)):
        rec = make_record(method, "iid", 0)
        rec["host"] = host
        write(tmp_path / "runs", rec)
    make_report([str(tmp_path / "runs")], tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Timed under contention" in md and "ffdapt-bottom (1 run)" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| ffdapt-bottom"))
    # local time, time saved %, tokens/s and the projected round time (its time to target
    # is "-": it never reaches fdapt's final loss)
    assert row.count("!") == 4


def test_perf_table_says_how_busy_the_host_was():
    rec = {"throughput": {"tokens_per_s": {"harness": 1.0, "plain": 1.0, "trainer": 1.0}},
           "harness_vs_plain_ratio": 1.0, "harness_vs_trainer_ratio": 1.0,
           "outside_train_share": 0.1, "ffdapt": {}, "memory": {"peak_mem_mb": {"2": 1.0}},
           "memory_growth": 0.0, "suite_wall_s": 1.0, "host": BUSY}
    text = io.StringIO()
    Console(file=text, width=200).print(summary_table(rec))
    assert "1.60 of 2 cores" in text.getvalue() and "contended" in text.getvalue()
