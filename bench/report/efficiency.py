"""The report's Table 2: cost and held-out loss per partition × method, with the notes on
runs timed apart, stalled rounds and the projected network times."""
from __future__ import annotations

import statistics

from .. import figures as figs
from ..cell_stats import (STALL, efficiency_stats, network_curve, round_train_s, stalls,
                         target_loss, time_saved_by_seed, time_saved_interval)
from ..collect import Collection
from ..record_timing import contended, network_of, saved_pct
from .format import MB, fmt, part_heading, seeds_text, signed
from ..tables import md_table


def efficiency_rows(coll: Collection) -> list[dict]:
    """Per partition × trained method: cost and quality, savings relative to fdapt."""
    rows = []
    for part in coll.partitions:
        stats = {m: efficiency_stats(c) for m in coll.methods
                 if (c := coll.cell(part, m)) is not None}
        stats = {m: s for m, s in stats.items() if s is not None}
        ref = stats.get("fdapt")
        target = target_loss(coll.cells, part)
        for m, s in stats.items():
            cell = coll.cell(part, m)
            net = network_curve(cell, target) or {}
            rows.append({
                "partition": part, "method": m, "corpus": cell.trained[0].corpus,
                "synthetic": cell.trained[0].synthetic, "seeds": seeds_text(s["seeds"]),
                "n_seeds": len(s["seeds"]), "rounds": seeds_text(s["rounds"]),
                "clients": s["clients"], "train_flops": s["train_flops"],
                "flops_saved_vs_fdapt_pct": saved_pct(s["train_flops"],
                                                      ref and ref["train_flops"]),
                **_flops_saved_range(coll, part, m),
                "local_train_s": s["local_train_s"], "local_train_s_std": s["local_train_s_std"],
                "timed_seeds": seeds_text(s["timed_seeds"]),
                **_time_saved(coll, part, m, s, ref),
                "bytes_up_mb": None if s["bytes_up"] is None else s["bytes_up"] / MB,
                "bytes_down_mb": None if s["bytes_down"] is None else s["bytes_down"] / MB,
                "bytes_sent_mb": None if s["bytes_sent"] is None else s["bytes_sent"] / MB,
                "tokens_per_s": s["tokens_per_s"], "peak_mem_mb": s["peak_mem_mb"],
                "initial_loss": s["initial_loss"], "final_loss": s["final_loss"],
                "final_loss_std": s["final_loss_std"], "final_ppl": s["final_ppl"],
                "final_loss_vs_fdapt": None if ref is None
                else s["final_loss"] - ref["final_loss"],
                # projected on the records' own links (network.*): see fdapt_core/network.py
                "round_s_projected": net.get("round_s"), "target_loss": target,
                "time_to_target_s": net.get("time_to_target_s"),
                # runs of the cell timed under contention (their times are marked "!")
                "contended_runs": s["contended_runs"],
                # runs timed on another thread count than most (also marked "!")
                "other_threads_runs": s["other_threads_runs"],
                # its times (or fdapt's) come from runs timed apart only: marked "!"
                "timed_dirty": s["times_apart"] or bool(ref and ref["times_apart"]),
            })
    return rows


def _flops_saved_range(coll: Collection, part: str, method: str) -> dict:
    """The lowest and highest FLOPs saved vs fdapt of one seed (paired by seed): a freeze
    allocation follows each client's batches, so the saving differs between seeds' splits."""
    cell, ref = coll.cell(part, method), coll.cell(part, "fdapt")
    if cell is None or ref is None:
        return {"flops_saved_min_pct": None, "flops_saved_max_pct": None}
    flops = {r.seed: (r.rec.get("totals") or {}).get("train_flops") for r in cell.trained}
    base = {r.seed: (r.rec.get("totals") or {}).get("train_flops") for r in ref.trained}
    per_seed = [saved_pct(flops[k], base[k]) for k in flops if flops[k] and base.get(k)]
    per_seed = [v for v in per_seed if v is not None]
    return {"flops_saved_min_pct": min(per_seed) if per_seed else None,
            "flops_saved_max_pct": max(per_seed) if per_seed else None}


def _time_saved(coll: Collection, part: str, method: str, s: dict, ref: dict | None) -> dict:
    """Time saved vs fdapt (%): the mean over the seeds both timed alone, with its 95 %
    t-interval over seeds; from the mean times where there are too few seeds for one."""
    cell, rcell = coll.cell(part, method), coll.cell(part, "fdapt")
    ci = time_saved_interval(cell, rcell) if rcell is not None and method != "fdapt" else None
    return {"train_time_saved_vs_fdapt_pct": ci.estimate if ci is not None
            else saved_pct(s["local_train_s"], ref and ref["local_train_s"]),
            "time_saved_ci95_low": ci and ci.low, "time_saved_ci95_high": ci and ci.high}


def efficiency_md(coll: Collection, rows: list[dict]) -> list[str]:
    factor, unit = figs.scale_unit([r["train_flops"] for r in rows], figs.FLOP_UNITS)
    out = ["## Table 2: efficiency and held-out loss", "",
           "Means over pretraining seeds. FLOPs: training FLOPs as dispatched (counted with "
           "FlopCounterMode, forward + backward); local time: the clients' training loops "
           "(± std over seeds); saved %: relative to fdapt in the same partition (negative: "
           "more), time saved: each seed's saving over the rounds both runs trained, its "
           "mean and 95 % t-interval over seeds (runs timed apart, named below the table, "
           "left out of every time; stalled rounds named there too); MB = 10^6 bytes, up + "
           "down = total; peak MB: process RSS on CPU, CUDA max allocated on GPU; loss: "
           "held-out MLM cross-entropy after the last round (nats), ppl = its exponential.",
           ""]
    header = ["method", "seeds", "rounds", f"train FLOPs ({unit})", "FLOPs saved %",
              "local time (s)", "time saved %", "MB up", "MB down", "MB total", "tokens/s",
              "peak MB", "final loss", "Δ loss fdapt", "final ppl", "round s (net)",
              "to target s (net)"]
    for part in coll.partitions:
        prow = [r for r in rows if r["partition"] == part]
        if not prow:
            continue
        table = []
        for r in prow:
            flag = "!" if r["timed_dirty"] else ""
            wall = fmt(r["local_train_s"], 1)
            if r["n_seeds"] > 1 and r["local_train_s_std"] is not None:
                wall += f" ± {r['local_train_s_std']:.1f}"
            loss = fmt(r["final_loss"], 3)
            if r["n_seeds"] > 1 and r["final_loss_std"] is not None:
                loss += f" ± {r['final_loss_std']:.3f}"
            table.append([
                r["method"], r["seeds"], r["rounds"],
                fmt(None if r["train_flops"] is None else r["train_flops"] / factor, 2),
                "ref" if r["method"] == "fdapt" else fmt(r["flops_saved_vs_fdapt_pct"], 1),
                wall + flag,
                ("ref" if r["method"] == "fdapt" else fmt(r["train_time_saved_vs_fdapt_pct"], 1)
                 + ("" if r["time_saved_ci95_low"] is None else
                    f" [{r['time_saved_ci95_low']:.1f}, {r['time_saved_ci95_high']:.1f}]"))
                + flag,
                fmt(r["bytes_up_mb"], 1), fmt(r["bytes_down_mb"], 1),
                fmt(r["bytes_sent_mb"], 1), fmt(r["tokens_per_s"], 0) + flag,
                fmt(r["peak_mem_mb"], 0), loss,
                "ref" if r["method"] == "fdapt" else signed(r["final_loss_vs_fdapt"], 3),
                fmt(r["final_ppl"], 1), _timed(r["round_s_projected"], flag),
                _timed(r["time_to_target_s"], flag),
            ])
        out += [part_heading(coll, part), ""] + md_table(header, table)
        out += [_network_note(coll, part, prow[0]["target_loss"]), ""]
        if not any(r["method"] == "fdapt" for r in prow):
            out += ["*No fdapt run in this partition: FLOPs saved %, time saved % and "
                    "Δ loss fdapt are left empty (-).*", ""]
        out += _apart_notes(coll, part)
        out += _stall_notes(coll, part)
    return out


def _stall_notes(coll: Collection, part: str) -> list[str]:
    """Rounds that stalled (at least STALL × their run's median round), and what each
    method's time saved would be without them."""
    found, methods = [], set()
    for m in coll.methods:
        cell = coll.cell(part, m)
        for r in sorted(cell.trained if cell else [], key=lambda r: r.seed):
            times = round_train_s(r)
            for i in stalls(r):
                found.append(f"{m} seed {r.seed} round {i + 1} ({times[i]:.1f} s, the run's "
                             f"median round {statistics.median(times):.1f} s)")
                methods.add(m)
    if not found:
        return []
    ref = coll.cell(part, "fdapt")
    effects = []
    for m in coll.methods:
        cell = coll.cell(part, m)
        if ref is None or cell is None or m == "fdapt" or not (methods & {m, "fdapt"}):
            continue
        with_, without = (time_saved_by_seed(cell, ref, skip_stalls=s) for s in (False, True))
        if with_ and without:
            effects.append(f"{m} {statistics.fmean(with_.values()):+.1f} % with them, "
                           f"{statistics.fmean(without.values()):+.1f} % without")
    text = (f"*Stalled rounds (at least {STALL:g}× their run's median round): "
            + "; ".join(found) + ". They stay in the table; time saved vs fdapt, mean over "
            "seeds: " + ("; ".join(effects) if effects else "unchanged") + ".*")
    return [text, ""]


def _apart_notes(coll: Collection, part: str) -> list[str]:
    """Which runs were timed apart (under contention, or on another thread count), and what
    the table did with them."""
    usual = coll.usual_threads
    apart = []
    for m in coll.methods:
        cell = coll.cell(part, m)
        for r in sorted(cell.trained if cell else [], key=lambda r: r.seed):
            if r.timed_apart:
                why = "contended" if contended(r.rec) else \
                    f"{r.rec['host']['threads']} thread(s), most runs {usual}"
                apart.append(f"{m} seed {r.seed} ({why})")
    if not apart:
        return []
    return ["*Timed apart: " + "; ".join(apart) + ". Under contention other processes took "
            "cores the run needed; a run started beside another takes a share of the cores. "
            "Such runs are left out of local time, tokens/s, time saved and the projected "
            "times; where no run of a cell was timed alone, its times are shown marked ! and "
            "are not comparable. Each record's `host` says by how much.*", ""]


def _timed(value: float | None, flag: str) -> str:
    """A projected time, marked when the compute it adds up was timed under contention."""
    return "-" if value is None else fmt(value, 1) + flag


def _network_note(coll: Collection, part: str, target: float | None) -> str:
    """How the (net) columns were projected for one partition."""
    cell = next(c for (p, _), c in coll.cells.items() if p == part and c.trained)
    net = network_of(cell.trained[0].rec)
    links = (f"{net.up_mbps:g}/{net.down_mbps:g} Mbit/s up/down, {net.latency_ms:g} ms latency"
             + (f", per-client spread sigma {net.heterogeneity:g}" if net.heterogeneity else ""))
    goal = "no target (no fdapt run, no report.target_loss)" if target is None \
        else f"target held-out loss {target:.3f}"
    return (f"*(net): projected on {links}: measured local training + transfer, the slowest "
            f"client gating each round (fdapt_core/network.py); to target: {goal}, empty "
            f"where a seed never reached it.*")
