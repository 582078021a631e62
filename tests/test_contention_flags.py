"""Wall times taken on a busy host are flagged wherever they are shown: compare, report, perf."""
from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from bench.cell_stats import time_saved_interval
from bench.collect import collect
from bench.perf import summary_table
from bench.record_timing import contended
from bench.report.write import make_report
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
    assert "Timed apart: ffdapt-bottom seed 0 (contended)" in md
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


def _timed_record(method: str, seed: int, round_s: float, threads: int = 2) -> dict:
    rec = make_record(method, "iid", seed)
    for i, r in enumerate(rec["rounds"]):
        r["clients"] = [{"wall_s": round_s + 0.1 * i}]
    rec["host"] = {**QUIET, "threads": threads}
    return rec


def test_a_run_on_other_threads_is_left_out_of_time_savings_and_flagged(tmp_path):
    # ffdapt saves 20 % of fdapt's time on seeds 0 and 1; seed 2's ffdapt ran on one thread
    # (it shared the host with another run) and took longer than fdapt: not the method's doing
    folders = [str(tmp_path / f"s{seed}") for seed in (0, 1, 2)]
    for seed, folder in enumerate(folders):
        write(Path(folder), _timed_record("fdapt", seed, 10.0 + seed))
        write(Path(folder), _timed_record("ffdapt-bottom", seed,
                                          12.0 if seed == 2 else 0.8 * (10.0 + seed),
                                          threads=1 if seed == 2 else 2))
    coll = collect(folders)
    assert coll.usual_threads == 2
    ci = time_saved_interval(coll.cell("iid", "ffdapt-bottom"), coll.cell("iid", "fdapt"))
    assert 19.0 < ci.low <= ci.estimate <= ci.high < 21.0
    make_report(folders, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Timed apart: ffdapt-bottom seed 2 (1 thread(s), most runs 2)" in md
    # its times come from seeds 0 and 1, timed alone: not marked, and 20 % saved
    row = next(ln for ln in md.splitlines() if ln.startswith("| ffdapt-bottom"))
    assert "!" not in row and "| 19.8 [" in row


def test_compare_notes_a_run_on_other_threads():
    records = [compare_record(m) for m in ("central", "fdapt", "ffdapt-bottom")]
    records[0]["host"], records[1]["host"] = QUIET, QUIET
    records[2]["host"] = {**QUIET, "threads": 1}
    rows = rows_of(records, [False] * 3)
    assert rows[2]["_saving_dirty"] and not rows[0]["_saving_dirty"]
    assert any("ffdapt-bottom: timed on 1 thread(s) where the other runs used 2" in n
               for n in notes(records))


def test_old_records_are_judged_by_todays_contention_rule():
    # a quarter of a core of others' demand on a 2-thread run of a 2-core host went unflagged
    # once (and slowed it by a fifth); the record's own measure is read again, not its flag
    rec = {"host": {"cpus": 2, "threads": 2, "other_cpu_cores": 0.25, "contended": False}}
    assert contended(rec)
    assert not contended({"host": {**rec["host"], "other_cpu_cores": 0.01}})
    assert contended({"host": {"contended": True}})  # no measure: its flag stands
