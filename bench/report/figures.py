"""The report's figures: their captions, their data (held-out curves, the efficiency-quality
trade-off) and their drawing."""
from __future__ import annotations

from pathlib import Path

from .. import figures as figs
from ..cell_stats import loss_curve, network_curve, target_loss
from ..collect import GENERAL, Collection
from .format import MB


FIGURES = {
    "fig1_heldout_loss": "Figure 1: held-out MLM loss per round (round 0: the starting model, "
                         "before training), one panel per partition; bands: ±1 std over seeds.",
    "fig2_downstream": "Figure 2: downstream scores per task (points), mean with ±1 std error "
                       "bars (none for a single fine-tuning run); the y axis does not start "
                       "at 0.",
    "fig3_cost": "Figure 3: training FLOPs, the clients' local-training wall time (±1 std "
                 "over seeds) and bytes sent (uploads + downloads; central sends none) per "
                 "method.",
    "fig4_tradeoff": "Figure 4: efficiency against quality, both relative to fdapt in the same "
                     "partition: training FLOPs saved (%) on x, the change in quality on y "
                     "(higher is better for downstream scores, lower for held-out loss), "
                     "with its 95 % interval where it has one; color = method, marker = "
                     "partition.",
    "fig5_loss_vs_cost": "Figure 5: held-out loss against bytes sent (left) and against the "
                         "projected wall time on the records' network links (right), one line "
                         "per method and a row per partition; means over seeds; the dotted "
                         "line is the time-to-target loss.",
}


def tradeoff_points(coll: Collection, eff: list[dict], down: list[dict],
                    mean_of: list[str] | None = None) -> tuple[list, str]:
    """(partition, method, FLOPs saved vs fdapt %, quality change vs fdapt with the half-width
    of its 95 % interval, the tasks' intervals combined as independent) and the y label: the mean over the tasks `mean_of` of
    the downstream change (points) where any scores exist, else the held-out loss change."""
    mean_of = [t.label for t in coll.tasks] if mean_of is None else mean_of
    use_down = any(r["vs_fdapt_pts"] is not None and r["method"] != "fdapt"
                   and r["task_label"] in mean_of for r in down)
    points = []
    for r in eff:
        if use_down:
            d = [x for x in down if x["partition"] == r["partition"]
                 and x["method"] == r["method"] and x["vs_fdapt_pts"] is not None
                 and x["task_label"] in mean_of]
            y = sum(x["vs_fdapt_pts"] for x in d) / len(d) if d else None
            # the mean's interval: the tasks' intervals as independent (their noise is)
            halves = [(x["vs_fdapt_ci95_high"] - x["vs_fdapt_ci95_low"]) / 2 for x in d
                      if x["vs_fdapt_ci95_low"] is not None]
            y_half = (sum(h * h for h in halves) ** 0.5 / len(d)) \
                if d and len(halves) == len(d) else None
        else:
            y = r["final_loss_vs_fdapt"]
        points.append({"partition": r["partition"], "method": r["method"],
                       "flops_saved_vs_fdapt_pct": r["flops_saved_vs_fdapt_pct"],
                       "y": y, "y_ci95_half": y_half if use_down else None,
                       "y_kind": "downstream_vs_fdapt_pts" if use_down
                       else "final_loss_vs_fdapt"})
    label = "downstream change vs fdapt\n(points, mean over tasks)" if use_down \
        else "held-out MLM loss change vs fdapt\n(nats; no downstream scores)"
    return points, label


def curve_rows(coll: Collection) -> list[dict]:
    rows = []
    for part in coll.partitions:
        for m in coll.methods:
            cell = coll.cell(part, m)
            if cell is None:
                continue
            for r in cell.trained:
                losses = [r.rec["initial_eval"]["loss"], *[x["eval_loss"] for x in
                                                           r.rec["rounds"]]]
                rows += [{"partition": part, "method": m, "seed": r.seed, "round": i,
                          "heldout_loss": v} for i, v in enumerate(losses)]
    return rows


def draw_figures(coll: Collection, eff, down, points, ylabel, folder: Path) -> dict[str, str | None]:
    """stem → None when drawn, else the reason it was skipped."""
    colors = figs.method_colors(coll.methods)
    done: dict[str, str | None] = {}

    curves = {}
    for part in coll.partitions:
        curves[part] = {}
        for m in coll.methods:
            cell = coll.cell(part, m)
            c = loss_curve(cell) if cell else None
            if c:
                curves[part][m] = (*c, len(cell.trained))
    done["fig1_heldout_loss"] = None if figs.loss_curves(
        curves, coll.methods, colors, folder, "fig1_heldout_loss") \
        else "no per-round held-out losses in these records"

    scores: dict[str, dict] = {}
    for r in down:
        scores.setdefault(r["task_label"], {})[(r["partition"], r["method"])] = \
            (r["mean_pts"], r["std_pts"])
    tasks = [(t.label, t.metric) for t in coll.tasks]
    done["fig2_downstream"] = None if figs.downstream_bars(
        scores, tasks, coll.partitions, coll.methods, colors, folder, "fig2_downstream") \
        else "no downstream scores in these records (run `python -m bench downstream`)"

    cost = {(r["partition"], r["method"]): {
        "train_flops": r["train_flops"], "local_train_s": r["local_train_s"],
        "local_train_s_std": r["local_train_s_std"] if r["n_seeds"] > 1 else None,
        "bytes_sent": None if r["bytes_sent_mb"] is None else r["bytes_sent_mb"] * MB}
        for r in eff}
    done["fig3_cost"] = None if figs.cost_bars(
        cost, coll.partitions, [m for m in coll.methods if m != GENERAL], colors, folder,
        "fig3_cost") else "no training records"

    pts = [(p["partition"], p["method"], p["flops_saved_vs_fdapt_pct"], p["y"],
            p["y_ci95_half"]) for p in points]
    reason = "no fdapt record to compare against in any partition" \
        if not any(r["method"] == "fdapt" for r in eff) \
        else "no method with both a FLOP count and a quality change relative to fdapt"
    done["fig4_tradeoff"] = None if figs.tradeoff(
        pts, coll.partitions, coll.methods, colors, ylabel, folder, "fig4_tradeoff") \
        else reason

    net_curves = {part: {m: c for m in coll.methods if m != GENERAL
                         and (cell := coll.cell(part, m)) is not None
                         and (c := network_curve(cell, None)) is not None}
                  for part in coll.partitions}
    targets = {part: target_loss(coll.cells, part) for part in coll.partitions}
    done["fig5_loss_vs_cost"] = None if figs.loss_vs_cost(
        net_curves, targets, coll.methods, colors, folder, "fig5_loss_vs_cost") \
        else "no per-round held-out losses in these records"
    return done
