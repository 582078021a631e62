"""The report's figures (matplotlib, Agg, no pyplot state): sized and labelled for a paper.

Each function takes plain numbers prepared by `bench.report.write`, writes `<stem>.png` (300 dpi)
and `<stem>.pdf` into a folder and returns the file names, or returns None when it has nothing
to draw (the report says so instead).
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything draws: no display, same output everywhere

from matplotlib import rc_context  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

WIDTH = 6.5  # inches: a one-column paper's text width
DPI = 300
STYLE = {
    "font.size": 8.5, "axes.titlesize": 9, "axes.labelsize": 8.5, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "legend.fontsize": 8, "legend.frameon": False,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "axes.axisbelow": True, "grid.alpha": 0.3, "grid.linewidth": 0.5,
    "lines.linewidth": 1.4, "lines.markersize": 4,
    "pdf.fonttype": 42, "ps.fonttype": 42,  # TrueType in the PDF: editable, searchable text
    "svg.hashsalt": "fdapt-bench",
}
FIXED_COLORS = {"general": "#9e9e9e", "central": "#222222", "fdapt": "#1f77b4"}
PALETTE = ["#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]


def method_colors(methods: list[str]) -> dict[str, str]:
    """One color per method, the same in every figure."""
    colors, i = {}, 0
    for m in methods:
        if m in FIXED_COLORS:
            colors[m] = FIXED_COLORS[m]
        else:
            colors[m] = PALETTE[i % len(PALETTE)]
            i += 1
    return colors


def scale_unit(values, units: list[tuple[float, str]]) -> tuple[float, str]:
    """The largest (factor, unit) that leaves the largest value ≥ 1 (the last one otherwise)."""
    top = max((abs(v) for v in values if v is not None), default=0.0)
    for factor, unit in units:
        if top >= factor:
            return factor, unit
    return units[-1]


FLOP_UNITS = [(1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"),
              (1e6, "MFLOP"), (1.0, "FLOP")]
BYTE_UNITS = [(1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1.0, "bytes")]


def _save(fig: Figure, folder: Path, stem: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / f"{stem}.png", dpi=DPI)
    fig.savefig(folder / f"{stem}.pdf", metadata={"CreationDate": None, "ModDate": None})
    return [f"{stem}.png", f"{stem}.pdf"]


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _legend(fig: Figure, spare: list, handles, labels) -> None:
    """In the first unused panel when there is one, else below the panels, in as many
    columns as fit the width."""
    for ax in spare:
        ax.axis("off")
    if not handles:
        return
    if spare:
        spare[0].legend(handles, labels, loc="center", title="method")
        return
    widest = max(len(x) for x in labels) * 0.55 * STYLE["legend.fontsize"] + 36  # points
    cols = max(1, min(len(labels), int(WIDTH * 72 / widest)))
    fig.legend(handles, labels, loc="outside lower center", ncols=cols)


def loss_curves(curves: dict[str, dict[str, tuple]], methods: list[str], colors: dict,
                folder: Path, stem: str) -> list[str] | None:
    """One panel per partition: held-out MLM loss per round (0 = the initial eval) per
    method; a band of ±1 std where a method has several seeds.
    curves: partition → method → (rounds, mean, std, n_seeds)."""
    parts = [p for p, d in curves.items() if d]
    if not parts:
        return None
    rows, cols = _grid(len(parts))
    with rc_context(STYLE):
        fig = Figure(figsize=(WIDTH, 0.4 + 2.3 * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
        seen = {}
        for ax, part in zip(axes.flat, parts):
            for m in methods:
                if m not in curves[part]:
                    continue
                x, mean, std, n = curves[part][m]
                line, = ax.plot(x, mean, marker="o", color=colors[m], label=m)
                if n > 1:
                    ax.fill_between(x, [a - b for a, b in zip(mean, std)],
                                    [a + b for a, b in zip(mean, std)], color=colors[m],
                                    alpha=0.15, linewidth=0)
                seen.setdefault(m, line)
            ax.set_title(f"partition {part}")
            ax.set_xlabel("round (0 = before training)")
            ax.xaxis.get_major_locator().set_params(integer=True)
        for ax in axes[:, 0]:
            ax.set_ylabel("held-out MLM loss (nats)")
        order = [m for m in methods if m in seen]
        _legend(fig, list(axes.flat)[len(parts):], [seen[m] for m in order], order)
        return _save(fig, folder, stem)


def _grouped_bars(ax, groups: list[str], methods: list[str], colors: dict, value, error,
                  slots: list[str] | None = None):
    """Bars of value(group, method) ± error(group, method): groups on x, one color per method.
    With one group the methods name the ticks; `slots` keeps a place (marked n/a) for methods
    without a value, so that panels side by side line up. Returns the methods drawn."""
    present = [m for m in methods if any(value(g, m) is not None for g in groups)]
    if not present:
        return []
    if slots:
        present = [m for m in methods if m in slots or m in present]
    width = 0.8 / len(present)
    for i, m in enumerate(present):
        xs, ys, es = [], [], []
        for j, g in enumerate(groups):
            v = value(g, m)
            if v is None:
                if len(groups) == 1:
                    ax.annotate("n/a", (j - 0.4 + width * (i + 0.5), 0), xytext=(0, 1),
                                xycoords=("data", "axes fraction"), textcoords="offset points",
                                ha="center", va="bottom", fontsize=7, color="#444444")
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(v)
            es.append(error(g, m) or 0.0)
        if not xs:
            continue
        ax.bar(xs, ys, width * 0.9, color=colors[m], label=m,
               yerr=es if any(es) else None, capsize=2,
               error_kw={"elinewidth": 0.8, "capthick": 0.8, "ecolor": "#444444"})
        for x, y in zip(xs, ys):
            if y == 0:  # a zero is a value, not a missing bar
                ax.annotate("0", (x, 0), xytext=(0, 1), textcoords="offset points",
                            ha="center", va="bottom", fontsize=7, color="#444444")
    if len(groups) == 1:
        ax.set_xticks([-0.4 + width * (i + 0.5) for i in range(len(present))], present,
                      rotation=30, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(range(len(groups)), groups)
    ax.grid(axis="x", visible=False)
    return present


def downstream_bars(scores: dict[str, dict], tasks: list[tuple[str, str]], partitions: list[str],
                    methods: list[str], colors: dict, folder: Path, stem: str) -> list[str] | None:
    """One panel per task: mean score (points) with ±1 std error bars, grouped by partition,
    one bar per method. scores: task label → (partition, method) → (mean, std).
    The y axis starts near the lowest bar (said in the report), not at 0."""
    tasks = [(label, metric) for label, metric in tasks if scores.get(label)]
    if not tasks:
        return None
    many = len(partitions) > 1
    # several partitions: one full-width row per task, else up to three panels side by side
    rows, cols = (len(tasks), 1) if many else _grid(len(tasks))
    with rc_context(STYLE):
        fig = Figure(figsize=(WIDTH, 0.6 + (1.9 if many else 2.7) * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        drawn: list[str] = []
        scored = [m for d in scores.values() for g, m in d]
        for ax, (label, metric) in zip(axes.flat, tasks):
            s = scores[label]
            got = _grouped_bars(ax, partitions, methods, colors,
                                lambda g, m: s.get((g, m), (None, None))[0],
                                lambda g, m: s.get((g, m), (None, None))[1], slots=scored)
            drawn += [m for m in got if m not in drawn]
            lo = min(a - (b or 0) for a, b in s.values())
            hi = max(a + (b or 0) for a, b in s.values())
            bottom = max(0.0, 5 * math.floor((lo - max(2.0, 0.5 * (hi - lo))) / 5))
            ax.set_ylim(bottom, hi + 0.12 * (hi - bottom) + 0.5)
            ax.set_title(label)
            ax.set_ylabel(f"{metric} (points)")
        spare = list(axes.flat)[len(tasks):]
        if many:
            order = [m for m in methods if m in drawn]
            handles = [Line2D([], [], color=colors[m], marker="s", linestyle="", markersize=7)
                       for m in order]
            _legend(fig, spare, handles, order)
        else:
            _legend(fig, spare, [], [])
        return _save(fig, folder, stem)


def cost_bars(cost: dict[tuple[str, str], dict], partitions: list[str], methods: list[str],
              colors: dict, folder: Path, stem: str) -> list[str] | None:
    """Three panels: training FLOPs, local-training wall time (±1 std over seeds), bytes sent
    (up + down). cost: (partition, method) → {train_flops, local_train_s, ..._std, bytes_sent}."""
    if not cost:
        return None
    flop_f, flop_u = scale_unit([c["train_flops"] for c in cost.values()], FLOP_UNITS)
    byte_f, byte_u = scale_unit([c["bytes_sent"] for c in cost.values()], BYTE_UNITS)
    walls = [c["local_train_s"] for c in cost.values() if c["local_train_s"] is not None]
    wall_f, wall_u = (3600.0, "h") if walls and max(walls) >= 7200 else (1.0, "s")
    panels = [
        ("train_flops", flop_f, f"training FLOPs ({flop_u})", None),
        ("local_train_s", wall_f, f"local-training wall time ({wall_u})", "local_train_s_std"),
        ("bytes_sent", byte_f, f"bytes sent, up + down ({byte_u})", None),
    ]
    many = len(partitions) > 1
    with rc_context(STYLE):
        if many:
            fig = Figure(figsize=(WIDTH, 6.2), layout="constrained")
            axes = fig.subplots(3, 1, sharex=True).flat
        else:
            fig = Figure(figsize=(WIDTH, 2.7), layout="constrained")
            axes = fig.subplots(1, 3).flat
        drawn: list[str] = []
        for ax, (key, factor, ylabel, err) in zip(axes, panels):
            def value(g, m, key=key, factor=factor):
                c = cost.get((g, m))
                return None if c is None or c[key] is None else c[key] / factor

            def error(g, m, err=err, factor=factor):
                c = cost.get((g, m))
                return None if c is None or err is None or c.get(err) is None \
                    else c[err] / factor

            got = _grouped_bars(ax, partitions, methods, colors, value, error,
                                slots=[m for g, m in cost])
            drawn += [m for m in got if m not in drawn]
            ax.set_ylabel(ylabel)
            if not got:
                ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center")
        if many:
            order = [m for m in methods if m in drawn]
            handles = [Line2D([], [], color=colors[m], marker="s", linestyle="", markersize=7)
                       for m in order]
            _legend(fig, [], handles, order)
        return _save(fig, folder, stem)


def tradeoff(points: list[tuple], partitions: list[str], methods: list[str], colors: dict,
             ylabel: str, folder: Path, stem: str) -> list[str] | None:
    """FLOP saving vs fdapt (x, %) against the change in quality vs fdapt (y): one marker per
    method × partition, color = method, shape = partition, with the change's 95 % interval as
    an error bar where it has one. points: (partition, method, x, y, half-width or None)."""
    points = [p for p in points if p[2] is not None and p[3] is not None]
    if not points:
        return None
    markers = {p: MARKERS[i % len(MARKERS)] for i, p in enumerate(partitions)}
    with rc_context(STYLE):
        fig = Figure(figsize=(WIDTH, 3.4), layout="constrained")
        ax = fig.subplots()
        ax.axhline(0, color="#888888", linewidth=0.7, linestyle="--", zorder=1)
        ax.axvline(0, color="#888888", linewidth=0.7, linestyle="--", zorder=1)
        for part, m, x, y, half in points:
            if half is not None:
                ax.errorbar([x], [y], yerr=[half], color=colors[m], linewidth=0.9,
                            capsize=2.5, zorder=2)
            ax.scatter([x], [y], s=36, color=colors[m], marker=markers[part],
                       edgecolors="white", linewidths=0.5, zorder=3)
        used = [p for p in partitions if any(q[0] == p for q in points)]
        labelled = len(points) <= 12 and len(used) <= 1
        if labelled:  # few enough, on one partition: each marker named, no legend
            for part, m, x, y, _ in points:
                ax.annotate(m, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7,
                            color="#333333")
        xs = [p[2] for p in points]
        ys = [v for p in points for v in ((p[3],) if p[4] is None else (p[3] - p[4],
                                                                          p[3] + p[4]))]
        for lim, vals, right in ((ax.set_xlim, xs, 0.35 if labelled else 0.12),
                                 (ax.set_ylim, ys, 0.12)):
            lo, hi = min(0.0, *vals), max(0.0, *vals)
            span = (hi - lo) or 1.0
            lim(lo - 0.12 * span, hi + right * span)  # room for the labels on the right
        ax.set_xlabel("training FLOPs saved vs fdapt (%)")
        ax.set_ylabel(ylabel)
        order = [m for m in methods if any(p[1] == m for p in points)]
        if not labelled:
            # figure legends "outside": the constrained layout makes room, nothing is cut off
            fig.legend([Line2D([], [], color=colors[m], marker="o", linestyle="")
                        for m in order], order, title="method", loc="outside right upper")
            if len(used) > 1:
                fig.legend([Line2D([], [], color="#555555", marker=markers[p], linestyle="")
                            for p in used], used, title="partition", loc="outside right lower")
        return _save(fig, folder, stem)


def loss_vs_cost(curves: dict[str, dict[str, dict]], targets: dict[str, float | None],
                 methods: list[str], colors: dict, folder: Path, stem: str) -> list[str] | None:
    """A row per partition: held-out loss against cumulative MB sent (left) and against the
    projected wall time (right), one line per method; a dotted line at the target loss.
    curves: partition → method → `cell_stats.network_curve` (bytes, seconds, loss per round)."""
    parts = [p for p, d in curves.items() if d]
    if not parts:
        return None
    with rc_context(STYLE):
        fig = Figure(figsize=(WIDTH, 0.4 + 2.3 * len(parts)), layout="constrained")
        axes = fig.subplots(len(parts), 2, squeeze=False, sharey="row")
        seen = {}
        for (left, right), part in zip(axes, parts):
            for m in methods:
                c = curves[part].get(m)
                if c is None:
                    continue
                keep = [i for i, v in enumerate(c["loss"]) if v is not None]
                loss = [c["loss"][i] for i in keep]
                line, = left.plot([c["bytes"][i] / 1e6 for i in keep], loss, marker="o",
                                  color=colors[m], label=m)
                right.plot([c["seconds"][i] for i in keep], loss, marker="o", color=colors[m])
                seen.setdefault(m, line)
            for ax in (left, right):
                if targets.get(part) is not None:
                    ax.axhline(targets[part], color="#888888", linewidth=0.7, linestyle=":")
            left.set_title(f"partition {part}")
            left.set_xlabel("MB sent (uploads + downloads)")
            right.set_xlabel("projected wall time (s)")
            left.set_ylabel("held-out loss (nats)")
        order = [m for m in methods if m in seen]
        fig.legend([seen[m] for m in order], order, loc="outside right upper")
        return _save(fig, folder, stem)
