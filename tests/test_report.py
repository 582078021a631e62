"""`bench report`: tables and figures from run records made up here (no training)."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import figures as figs_mod
from bench.report.write import make_report
from fdapt_core.errors import DataError
from tests.conftest import ROOT

FIGS = ["fig1_heldout_loss", "fig2_downstream", "fig3_cost", "fig4_tradeoff"]
# method → (train FLOPs, local train s, bytes up, bytes down, final-loss offset)
COST = {
    "central": (1.0e13, 120.0, 0, 0, -0.5),
    "fdapt": (1.0e13, 100.0, 4_000_000_000, 4_000_000_000, 0.0),
    "ffdapt-bottom": (7.5e12, 80.0, 1_000_000_000, 4_000_000_000, 0.2),
    "ffdapt-progressive": (9.0e12, 90.0, 3_000_000_000, 4_000_000_000, 0.1),
}


def make_record(method: str, partition: str, seed: int, *, rounds: int = 3,
                downstream: dict | None = None, synthetic: bool = True,
                status: str = "finished", name: str = "grid") -> dict:
    """A record with the fields `bench report` reads, shaped like fdapt_core.runner's."""
    flops, wall, up, down, offset = COST.get(method, COST["fdapt"])
    flops, wall = flops * (1 + 0.01 * seed), wall + seed  # seeds differ a little
    losses = [8.0 - 1.5 * math.log1p(r) + offset + 0.01 * seed for r in range(rounds)]
    rec = {
        "schema_version": 1, "name": name, "method": method,
        "base_method": method.split("-")[0], "status": status,
        "config": {"name": name, "seed": seed,
                   "data": {"source": "synthetic" if synthetic else "jsonl",
                            "path": None if synthetic else "corpus/real.jsonl",
                            "max_seq_length": 32},
                   "partition": {"method": partition, "alpha": 0.5},
                   "model": {"preset": "tiny", "name_or_path": None},
                   "fl": {"clients": 4, "rounds": rounds}},
        "config_hash": f"cfg-{method}-{partition}-{seed}",
        "environment": {"device": "cpu", "git_commit": "0123456789abcdef",
                        "packages": {"torch": "2.13.0"}},
        "data": {"synthetic": synthetic, "train_documents": 540, "validation_documents": 60,
                 "train_tokens": 123456},
        "manifest_sha256": f"manifest-{partition}-{seed}",
        "initial_eval": {"loss": 9.0, "ppl": math.exp(9.0)},
        "rounds": [{"round": r, "eval_loss": v, "eval_ppl": math.exp(v), "clients": []}
                   for r, v in enumerate(losses)],
        "totals": {"rounds": rounds, "train_flops": flops, "local_train_s": wall,
                   "bytes_up": up, "bytes_down": down, "bytes_sent": up + down,
                   "tokens_per_s": 1000.0, "peak_mem_mb": 500.0},
        "final_eval": {"loss": losses[-1], "ppl": math.exp(losses[-1])},
    }
    if status != "finished":
        del rec["totals"], rec["final_eval"]
    if downstream:
        rec["downstream"] = downstream
    return rec


def scores(task: str, metric: str, values: list[float]) -> dict:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) \
        if len(values) > 1 else 0.0
    return {task: {"task": task, "metric": metric, "quick": False, "seeds": len(values),
                   "scores": {metric: {"mean": mean, "std": std, "values": values}},
                   "task_hash": f"hash-{task}"}}


def write(folder: Path, rec: dict) -> Path:
    path = folder / rec["method"] / "record.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return path


@pytest.fixture
def grid(tmp_path):
    """A grid in folders whose names say nothing of the partition: the records do. fdapt has
    two seeds in iid (the second in its own folder); one record is unfinished."""
    res = tmp_path / "results"
    for folder, part in (("grid-a", "iid"), ("grid-b", "by_key")):
        for m in COST:
            write(res / folder, make_record(m, part, 0))
    write(res / "grid-a-s1", make_record("fdapt", "iid", 1))
    write(res / "grid-b", make_record("ffdapt-paper", "by_key", 0, status="interrupted"))
    return res


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_figures(out: Path, stems: list[str]) -> None:
    for stem in FIGS:
        for ext in ("png", "pdf"):
            f = out / "figures" / f"{stem}.{ext}"
            if stem in stems:
                assert f.is_file() and f.stat().st_size > 2000, f
            else:
                assert not f.exists(), f


def test_report_without_downstream(grid):
    rep = make_report([str(grid / "grid-*")])
    out = grid / "grid" / "report"  # the records' base name, beside the folders
    assert rep.out == out
    md = (out / "report.md").read_text()
    assert_figures(out, ["fig1_heldout_loss", "fig3_cost", "fig4_tradeoff"])
    assert "Figure 2: not drawn: no downstream scores" in md
    assert "No downstream scores in these records" in md
    assert "Synthetic corpus" in md and "SYNTHETIC corpus" in md
    assert "ffdapt-progressive" in md and "ffdapt-paper" not in md.split("## Notes")[0]
    assert any("ffdapt-paper" in n and "interrupted" in n for n in rep.notes)

    rows = {(r["partition"], r["method"]): r for r in read_csv(out / "efficiency.csv")}
    assert set(rows) == {(p, m) for p in ("iid", "by_key") for m in COST}
    fd = rows[("iid", "fdapt")]
    assert fd["seeds"] == "0,1" and fd["n_seeds"] == "2"
    fdapt_flops = (1.0e13 + 1.01e13) / 2  # the mean over the two seeds
    assert float(fd["train_flops"]) == pytest.approx(fdapt_flops)
    bottom = rows[("iid", "ffdapt-bottom")]
    assert float(bottom["flops_saved_vs_fdapt_pct"]) == pytest.approx(
        100 * (1 - 7.5e12 / fdapt_flops))
    assert float(bottom["train_time_saved_vs_fdapt_pct"]) == pytest.approx(
        100 * (1 - 80.0 / 100.5))
    assert float(bottom["bytes_sent_mb"]) == pytest.approx(5000.0)
    assert float(bottom["bytes_up_mb"]) == pytest.approx(1000.0)
    by_key = rows[("by_key", "ffdapt-bottom")]  # by_key's fdapt has one seed
    assert float(by_key["flops_saved_vs_fdapt_pct"]) == pytest.approx(25.0)
    assert float(rows[("by_key", "ffdapt-progressive")]["final_loss_vs_fdapt"]) == \
        pytest.approx(0.1)
    assert float(rows[("iid", "fdapt")]["local_train_s_std"]) == pytest.approx(math.sqrt(0.5))
    # the Markdown shows the same numbers: FLOPs in TFLOP, savings, MB
    table2 = md.split("## Table 2")[1].split("## Figures")[0]
    line = next(x for x in table2.split("**by_key**")[1].splitlines()
                if x.startswith("| ffdapt-bottom | 0 |"))
    assert "| 7.50 | 25.0 |" in line and "| 1,000.0 | 4,000.0 | 5,000.0 |" in line
    assert "train FLOPs (TFLOP)" in md

    trade = read_csv(out / "tradeoff.csv")
    assert {r["y_kind"] for r in trade} == {"final_loss_vs_fdapt"}
    curve = [r for r in read_csv(out / "heldout_loss.csv")
             if r["partition"] == "iid" and r["method"] == "central"]
    assert [int(r["round"]) for r in curve] == [0, 1, 2, 3]
    assert float(curve[0]["heldout_loss"]) == 9.0  # round 0 is the initial eval
    prov = read_csv(out / "provenance.csv")
    assert {(r["method"], r["seed"]) for r in prov if r["partition"] == "iid"} == \
        {*((m, "0") for m in COST), ("fdapt", "1")}
    assert all(r["config_hash"].startswith("cfg-") and r["manifest_sha256"] for r in prov)
    assert "`manifest-iid-1`" in md or "`manifest-iid-1" in md


def test_report_with_downstream(tmp_path):
    res = tmp_path / "results"
    values = {"central": ([0.70, 0.72], [0.60]), "fdapt": ([0.66, 0.68], [0.58]),
              "ffdapt-bottom": ([0.65, 0.69], [0.55])}
    for part in ("iid", "by_key"):
        for m, (ner, qa) in values.items():
            ds = {**scores("ncbi_disease", "f1", ner), **scores("pubmedqa", "accuracy", qa)}
            write(res / f"real-{part}", make_record(m, part, 0, downstream=ds,
                                                    synthetic=False, name=f"real-{part}"))
    out = tmp_path / "paper"
    make_report([str(res / "real-iid"), str(res / "real-by_key")], out)
    assert_figures(out, FIGS)
    md = (out / "report.md").read_text()
    assert "Synthetic corpus" not in md and "`corpus/real.jsonl`" in md
    assert "71.00 ± 1.41 (n=2)" in md  # central's ncbi_disease f1 in points
    rows = {(r["partition"], r["method"], r["task"]): r for r in read_csv(out / "downstream.csv")}
    b = rows[("by_key", "ffdapt-bottom", "ncbi_disease")]
    assert float(b["mean_pts"]) == pytest.approx(67.0)
    assert float(b["std_pts"]) == pytest.approx(100 * math.sqrt(0.0008))
    assert float(b["vs_central_pts"]) == pytest.approx(-4.0)
    assert float(b["vs_fdapt_pts"]) == pytest.approx(0.0)
    assert b["n_scores"] == "2"
    trade = {(r["partition"], r["method"]): r for r in read_csv(out / "tradeoff.csv")}
    t = trade[("iid", "ffdapt-bottom")]
    assert t["y_kind"] == "downstream_vs_fdapt_pts"
    assert float(t["y"]) == pytest.approx((0.0 + -3.0) / 2)  # mean over the two tasks
    assert float(t["flops_saved_vs_fdapt_pct"]) == pytest.approx(25.0)


def test_output_is_replaced_whole_and_a_failure_keeps_the_old_one(grid, monkeypatch):
    monkeypatch.setattr(figs_mod, "DPI", 50)  # the files, not their looks, matter here
    out = grid / "rep"
    make_report([str(grid / "grid-a")], out)
    (out / "stale.txt").write_text("from an older report")
    before = (out / "report.md").read_text()

    def boom(*a, **k):
        raise RuntimeError("drawing failed")

    figs_cost_bars = figs_mod.cost_bars
    monkeypatch.setattr(figs_mod, "cost_bars", boom)
    with pytest.raises(RuntimeError):
        make_report([str(grid / "grid-a")], out)
    assert (out / "report.md").read_text() == before and (out / "stale.txt").exists()
    assert [p.name for p in grid.iterdir() if p.name.startswith(".")] == []  # no leftovers
    monkeypatch.setattr(figs_mod, "cost_bars", figs_cost_bars)
    make_report([str(grid / "grid-a")], out)
    assert not (out / "stale.txt").exists()  # a new report replaces the folder whole

    (grid / "notes").mkdir()
    (grid / "notes" / "mine.txt").write_text("keep")
    with pytest.raises(DataError, match="not a report folder"):
        make_report([str(grid / "grid-a")], grid / "notes")
    with pytest.raises(DataError, match="holds run records"):
        make_report([str(grid / "grid-a")], grid)


def test_bad_input_is_one_line_and_exit_2(grid, tmp_path, monkeypatch, capsys):
    import bench.cli as cli
    import fdapt_core.interrupt
    from rich.console import Console

    monkeypatch.setattr(fdapt_core.interrupt, "install_handlers", lambda: None)
    monkeypatch.setattr(cli, "err", Console(stderr=True, width=1000))  # no wrapping

    def bench_main(*args) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["bench", "report", *args])
        with pytest.raises(SystemExit) as exit_:
            cli.main()
        return exit_.value.code, capsys.readouterr().err

    bad = tmp_path / "bad"
    write(bad, make_record("fdapt", "iid", 0))
    (bad / "central").mkdir()
    (bad / "central" / "record.json").write_text('{"method": "central", "sta')
    cases = [
        (str(tmp_path / "missing"), str(tmp_path / "missing")),
        (str(tmp_path), str(tmp_path)),  # a folder with no <method>/record.json
        (str(tmp_path / "nothing-*"), "nothing-*"),
        (str(bad), str(bad / "central" / "record.json")),  # unreadable JSON
        (f"{grid / 'grid-a'},{tmp_path / 'missing'}", str(tmp_path / "missing")),
    ]
    for runs, named in cases:
        code, err = bench_main("--runs", runs, "--out", str(tmp_path / "out"))
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        assert named in err and "Traceback" not in err, err
        assert not (tmp_path / "out").exists()  # nothing written, not even half

    # a record lacking a field the report needs names the file and the key
    broken = make_record("fdapt", "iid", 0)
    del broken["final_eval"]
    path = write(tmp_path / "broken", broken)
    with pytest.raises(DataError, match=r"final_eval\.loss") as exc:
        make_report([str(tmp_path / "broken")], tmp_path / "out3")
    assert str(path) in str(exc.value) and not (tmp_path / "out3").exists()


def test_an_older_record_without_flop_counts_shows_dashes(tmp_path):
    """Records from before FLOP counting: the report says what is missing, draws the rest."""
    for m in ("fdapt", "ffdapt-bottom"):
        rec = make_record(m, "iid", 0)
        if m == "ffdapt-bottom":
            for key in ("train_flops", "local_train_s", "peak_mem_mb"):
                del rec["totals"][key]
            rec["rounds"][0]["clients"] = [{"wall_s": 30.0}, {"wall_s": 20.0}]
            rec["rounds"][1]["clients"] = [{"wall_s": 30.0}]
            rec["rounds"][2]["clients"] = []
        write(tmp_path / "old", rec)
    rep = make_report([str(tmp_path / "old")], tmp_path / "rep")
    assert any("older record without train_flops, peak_mem_mb" in n for n in rep.notes)
    rows = {r["method"]: r for r in read_csv(tmp_path / "rep" / "efficiency.csv")}
    assert rows["ffdapt-bottom"]["train_flops"] == ""  # unknown, not 0
    assert rows["ffdapt-bottom"]["flops_saved_vs_fdapt_pct"] == ""
    assert float(rows["ffdapt-bottom"]["local_train_s"]) == 80.0  # the clients' loops summed
    assert "older record without" in (tmp_path / "rep" / "report.md").read_text()


@pytest.mark.slow
def test_command_line_end_to_end(grid, tmp_path):
    p = subprocess.run([sys.executable, "-m", "bench", "report", "--runs", str(grid / "grid-b"),
                        "--out", str(tmp_path / "cli")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={**os.environ, "COLUMNS": "1000"})
    assert p.returncode == 0, p.stderr
    assert "report:" in p.stdout and (tmp_path / "cli" / "report.md").is_file()
    assert "ffdapt-paper" in p.stderr  # the interrupted record is named as left out
    assert_figures(tmp_path / "cli", ["fig1_heldout_loss", "fig3_cost", "fig4_tradeoff"])


def test_time_saved_is_an_interval_over_seeds_and_stalls_are_named(tmp_path):
    """Rounds of one seed are not independent repeats: pooling (seed, round) pairs gave a
    5-df interval from 2 seeds. And a round that took twice its run's median, with no
    contention measured, went unnamed while it turned the method's saving negative."""
    from bench.cell_stats import stalls, time_saved_by_seed, time_saved_interval
    from bench.collect import collect
    from fdapt_core.stats import t_interval

    walls = {("fdapt", 0): [10, 10, 10], ("ffdapt-paper", 0): [9, 9, 9],
             ("fdapt", 1): [10, 10, 10], ("ffdapt-paper", 1): [9.5, 20, 9.5]}
    for (m, seed), times in walls.items():
        rec = make_record(m, "iid", seed, name="stall")
        for r, t in zip(rec["rounds"], times):
            r["clients"] = [{"client": 0, "wall_s": t}]
        write(tmp_path / "results" / f"stall-s{seed}", rec)
    coll = collect([str(tmp_path / "results" / f"stall-s{s}") for s in (0, 1)])
    cell, ref = coll.cell("iid", "ffdapt-paper"), coll.cell("iid", "fdapt")
    by_seed = time_saved_by_seed(cell, ref)
    assert by_seed == pytest.approx({0: 10.0, 1: -30.0})
    ci = time_saved_interval(cell, ref)
    assert (ci.low, ci.high) == pytest.approx((t_interval([10.0, -30.0]).low,
                                               t_interval([10.0, -30.0]).high))
    run = next(r for r in cell.trained if r.seed == 1)
    assert stalls(run) == [1]
    assert time_saved_by_seed(cell, ref, skip_stalls=True) == pytest.approx({0: 10.0, 1: 5.0})
    out = tmp_path / "report"
    make_report([str(tmp_path / "results" / f"stall-s{s}") for s in (0, 1)], out)
    md = (out / "report.md").read_text()
    assert "ffdapt-paper seed 1 round 2 (20.0 s, the run's median round 9.5 s)" in md
    assert "ffdapt-paper -10.0 % with them, +7.5 % without" in md


def test_a_report_says_which_models_an_earlier_study_had_read(tmp_path):
    """The deciding study's iid seeds 0-2 were the pilot's models (the same split and
    held-out loss), which the pilot had probed before the study was configured, with a C grid
    the study then widened: its report did not say so. Now its setup does, and a model that
    only shares a split does not count."""
    from bench.collect import collect
    from bench.report.setup import read_before

    studies = tmp_path / "studies"
    for study, tasks_hash in (("pilot", "hash-old"), ("main", "hash-new")):
        for seed in (0, 1):
            rec = make_record("fdapt", "iid", seed,
                              downstream=scores("ner", "f1", [0.5]), synthetic=False)
            rec["downstream"]["ner"]["task_hash"] = tasks_hash
            rec["final_eval"] = {"loss": 5.0 + seed if study == "main" or seed == 0 else 9.9}
            write(studies / study / "runs" / f"c-s{seed}", rec)
    coll = collect([str(studies / "main" / "runs" / f"c-s{s}") for s in (0, 1)])
    lines = read_before(coll)
    assert len(lines) == 1 and "iid fdapt seeds 0 are the models of study `pilot`" in lines[0]
    assert "the readout of ner changed after it" in lines[0]
