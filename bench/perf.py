"""`bench perf`: run the suite, show it, write it, and gate on a baseline."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.table import Table

from fdapt_core.errors import FdaptError

from .record_timing import contended, contention_note
from fdapt_core.perf.baseline import compare
from fdapt_core.perf.suite import QUICK, run_suite
from fdapt_core.records import read_json, write_json_atomic


def summary_table(rec: dict) -> Table:
    t = Table(title="bench perf")
    t.add_column("measure")
    t.add_column("value", justify="right")
    tp = rec["throughput"]["tokens_per_s"]
    for name in ("harness", "plain", "trainer"):
        t.add_row(f"tokens/s, {name} loop (median)", f"{tp[name]:,.0f}")
    ci = rec.get("harness_vs_plain_ci90")
    t.add_row("harness / plain loop" + (" (both: sparse MLM head)"
                                        if rec["throughput"].get("sparse_head") else ""),
              f"{rec['harness_vs_plain_ratio']:.3f}"
              + (f" [{ci[0]:.3f}, {ci[1]:.3f}] 90 %, "
                 f"{rec['throughput']['harness_vs_plain_pairs']} pairs" if ci else ""))
    t.add_row("harness / HF Trainer", f"{rec['harness_vs_trainer_ratio']:.3f}")
    sh = rec.get("sparse_head_minilm")  # older records have none
    if sh and "skipped" in sh:
        t.add_row("sparse MLM head on MiniLM", f"skipped: {sh['skipped']}")
    elif sh:
        for name in ("sparse", "dense"):
            t.add_row(f"MiniLM harness tokens/s, {name} head (median)",
                      f"{sh['tokens_per_s'][name]:,.0f}")
        t.add_row("MiniLM: sparse / dense head", f"{sh['sparse_vs_dense_speedup']:.3f}")
    if "throughput_causal" in rec:  # older records have no decoder row
        tc = rec["throughput_causal"]["tokens_per_s"]
        for name in ("harness", "plain", "trainer"):
            t.add_row(f"decoder tokens/s, {name} loop (median)", f"{tc[name]:,.0f}")
        t.add_row("decoder: harness / plain loop",
                  f"{rec['harness_vs_plain_ratio_causal']:.3f}")
        t.add_row("decoder: harness / HF Trainer",
                  f"{rec['harness_vs_trainer_ratio_causal']:.3f}")
    m = rec["throughput"].get("mfu_harness")
    if m:  # CUDA only; older records held a bare number
        m = m if isinstance(m, dict) else {"mfu": m, "precision": "bf16"}
        if m.get("mfu") is not None:
            t.add_row(f"MFU, harness loop, vs datasheet {m['precision']} peak "
                      f"({m.get('peak_tflops') or '?'} TF/s)", f"{100 * m['mfu']:.1f} %")
        if m.get("mfu_measured_peak") is not None:
            t.add_row(f"MFU, harness loop, vs measured {m['precision']} matmul peak "
                      f"({m['measured_peak_tflops']:.0f} TF/s)",
                      f"{100 * m['mfu_measured_peak']:.1f} %")
    t.add_row("round time outside local training", f"{100 * rec['outside_train_share']:.2f} %")
    for policy, s in rec["ffdapt"].items():
        t.add_row(f"ffdapt-{policy}: FLOPs saved", f"{s['flops_saved_pct']:.1f} %")
        t.add_row(f"ffdapt-{policy}: local-training time saved",
                  f"{s['train_wall_saved_pct']:.1f} %")
    for k, mb in rec["memory"]["peak_mem_mb"].items():
        t.add_row(f"peak memory, {k} clients", f"{mb:,.0f} MB")
    t.add_row("peak memory growth", f"{100 * rec['memory_growth']:+.1f} %")
    t.add_row("suite wall time", f"{rec['suite_wall_s']:.0f} s")
    h = rec.get("host")
    if h and h.get("other_cpu_cores") is not None:
        t.add_row("other processes' CPU use while measuring",
                  f"{h['other_cpu_cores']:.2f} of {h['cpus']} cores"
                  + (" [red]contended[/red]" if h["contended"] else ""))
    return t


def baseline_table(rows: list[dict]) -> Table:
    t = Table(title="against the baseline")
    for col in ("metric", "baseline", "current", "90 % interval", "limit", "result"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for r in rows:
        fmt = (lambda v: "-" if v is None else f"{v:.4g}")
        ci = r.get("ci90")
        result = f"[red]{r['why']}[/red]" if not r["ok"] else \
            f"[yellow]{r['why']}[/yellow]" if r["why"] else "[green]ok[/green]"
        t.add_row(r["metric"], fmt(r["baseline"]), fmt(r["current"]),
                  f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-", fmt(r["limit"]), result)
    return t


def run_perf(out: Console, err: Console, out_file: Optional[Path], baseline: Optional[Path],
             device: str, quick: bool) -> int:
    base = None
    if baseline is not None:  # read first: a bad baseline should not cost a whole suite
        try:
            base = read_json(baseline)
        except (OSError, ValueError) as exc:
            raise FdaptError(f"--baseline {baseline}: cannot read a perf record ({exc})") \
                from None
    rec = run_suite(device=device, sizes=QUICK if quick else None,
                    progress=lambda msg: err.print(f"[dim]{msg}[/dim]"))
    rec["quick"] = quick
    if out_file is None:
        kind = "gpu" if rec["environment"]["device"].startswith("cuda") else "cpu"
        out_file = Path("results/perf") / f"perf-{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json_atomic(out_file, rec)
    out.print(summary_table(rec))
    out.print(f"record: {out_file}")
    if contended(rec):
        err.print("[yellow]warning:[/yellow] " + contention_note("this perf run", rec)
                  + "; a regression verdict from it is not to be trusted")
    if base is None:
        return 0
    rows = compare(rec, base)
    out.print(baseline_table(rows))
    for r in rows:
        if r["ok"] and r["why"]:
            err.print(f"[yellow]{r['metric']}:[/yellow] {r['why']}")
    failed = [r["metric"] for r in rows if not r["ok"]]
    if failed:
        err.print(f"[red]perf regression:[/red] {', '.join(failed)}")
        return 1
    return 0


def run_history(out: Console, folder: Path, plots: Optional[Path] = None) -> int:
    """`bench perf --history FOLDER`: every perf record there, a table per measure by date
    and commit with its interval and the first record of each step change, and one PNG of
    each measure over time (in `plots`, default FOLDER/history/)."""
    from fdapt_core.perf.history import history

    if not folder.is_dir():
        raise FdaptError(f"--history: {folder}: no such folder of perf records")
    series = history(folder)
    if not series:
        raise FdaptError(f"--history: {folder}: no perf record there (bench perf writes "
                         "results/perf/perf-<device>-<time>.json)")
    plots = plots or folder / "history"
    plots.mkdir(parents=True, exist_ok=True)
    for name, points in series.items():
        t = Table(title=f"{name}: {len(points)} record(s)")
        for col in ("date", "commit", "series", "value", "interval", "step"):
            t.add_column(col, justify="right" if col in ("value", "interval") else "left")
        for p in points:
            ci = "-" if p.low is None else f"[{p.low:.4g}, {p.high:.4g}]"
            step = {"up": "[yellow]step up begins[/yellow]",
                    "down": "[yellow]step down begins[/yellow]", None: ""}[p.step]
            t.add_row(p.created[:16].replace("T", " "), p.commit, p.series, f"{p.value:.4g}",
                      ci, step)
        out.print(t)
        _plot(name, points, plots / f"{name}.png")
    out.print(f"plots: {plots}/<measure>.png")
    return 0


def _plot(name: str, points, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for series in dict.fromkeys(p.series for p in points):
        mine = [(i, p) for i, p in enumerate(points) if p.series == series]
        xs = [i for i, _ in mine]
        ys = [p.value for _, p in mine]
        err = [[p.value - p.low if p.low is not None else 0 for _, p in mine],
               [p.high - p.value if p.high is not None else 0 for _, p in mine]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=series)
        for i, p in mine:
            if p.step:
                ax.annotate(f"step {p.step}", (i, p.value), textcoords="offset points",
                            xytext=(0, 10), ha="center", color="tab:red", fontsize=8)
    ax.set_xticks(range(len(points)))
    ax.set_xticklabels([f"{p.created[:10]}\n{p.commit[:7]}" for p in points], fontsize=7)
    ax.set_title(name)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
