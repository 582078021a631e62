"""`bench flops`: each method's training FLOPs for the whole run, predicted without training
(`fdapt_core.flops.plan`), shown as one table per partition and, with `--frontier`, the freeze
frontier (`fdapt_core.flops.frontier`). The command's options are parsed in `cli.py`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from rich.console import Console
from rich.table import Table

from fdapt_core.config.run import RunConfig
from fdapt_core.errors import FdaptError
from fdapt_core.flops.frontier import FrontierRow, finished_records, frontier
from fdapt_core.flops.plan import PAPER_SAVING_PCT, FlopsPlanner, MethodFlops
from fdapt_core.methods import check
from fdapt_core.records import write_json_atomic


def run_flops(out: Console, err: Console, load: Callable[[list[str]], RunConfig], *,
              methods: str, partitions: Optional[str], show_frontier: bool,
              runs: Optional[str], json_out: Optional[Path], command: str) -> dict:
    """Predict, print and (with `json_out`) write; return what was written. `load(extra)`:
    the config with the command's --set and these overrides after them."""
    t0 = time.perf_counter()
    names = _names(methods, "--methods")
    parts = _names(partitions, "--partitions") if partitions is not None else [None]
    cfgs = [load([f"partition.method={p}"] if p else []) for p in parts]
    for cfg in cfgs:  # every method on every partition checked before any data is read
        for m in names:
            check(cfg, m)
    records = finished_records([Path(r) for r in _names(runs, "--runs")]) if runs else []
    planner = FlopsPlanner()
    tables = []
    for cfg in cfgs:
        setup = planner.setup(cfg)
        rows = planner.methods(cfg, names)
        front = frontier(planner, cfg, records) if show_frontier else None
        out.print(method_table(setup, rows))
        if front is not None:
            out.print(frontier_table(setup, front, bool(runs)))
        tables.append({"setup": setup, "methods": [r.to_dict() for r in rows],
                       "frontier": [r.to_dict() for r in front] if front is not None
                       else None})
    result = {"command": command, "paper_saving_pct": PAPER_SAVING_PCT,
              "elapsed_s": round(time.perf_counter() - t0, 1), "tables": tables}
    err.print(f"counted in {result['elapsed_s']:.1f} s, nothing trained", highlight=False)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(json_out, result)
        out.print(f"json: {json_out}", highlight=False)
    return result


def _names(spec: Optional[str], option: str) -> list[str]:
    names = [s.strip() for s in (spec or "").split(",") if s.strip()]
    if not names:
        raise FdaptError(f"{option}: give at least one entry")
    if len(set(names)) != len(names):
        raise FdaptError(f"{option}: {spec!r} names an entry twice")
    return names


def _title(setup: dict) -> str:
    return (f"{setup['name']}, partition {setup['partition']}: {setup['model']} "
            f"({setup['parameters'] / 1e6:.1f} M parameters, {setup['transformer_blocks']} "
            f"blocks, vocab {setup['vocab']:,}), {setup['seq_len']} tokens × batch "
            f"{setup['batch_size']}, {setup['clients']} clients × {setup['rounds']} rounds; "
            f"batches per client {', '.join(map(str, setup['client_batches']))}; "
            f"{setup['head']} LM head (train.sparse_head: the reference study ran the dense one)")


def frozen_text(row: MethodFlops) -> str:
    """Frozen blocks per client: the static allocation's counts, else the mean per round."""
    if any(f["blocks"] or f["embeddings"] for f in row.frozen):
        counts = [len(f["blocks"]) for f in row.frozen]
        emb = " + emb." if any(f["embeddings"] for f in row.frozen) else ""
        return f"{','.join(map(str, counts))}{emb} (mean {row.frozen_blocks_mean:.2f})"
    if row.policy and not row.policy.get("static", True):
        return f"mean {row.frozen_blocks_mean:.2f} per round"
    return "0"


def _pct(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.2f}"


def method_table(setup: dict, rows: list[MethodFlops]) -> Table:
    t = Table(title=_title(setup))
    for h in ("method", "partition", "frozen blocks per client", "train FLOPs",
              "saved vs fdapt %", "forward FLOPs", "backward FLOPs"):
        t.add_column(h, justify="left" if h in ("method", "partition") else "right")
    for r in rows:
        t.add_row(r.method, r.partition, frozen_text(r), f"{r.train_flops:.6g}",
                  _pct(r.saved_pct), f"{r.forward_flops:.4g}", f"{r.backward_flops:.4g}")
    return t


def frontier_table(setup: dict, rows: list[FrontierRow], with_runs: bool) -> Table:
    t = Table(title=f"freeze frontier, partition {setup['partition']}: FLOPs saved against "
                    f"fdapt (✓: at least {PAPER_SAVING_PCT} %)")
    for h in ("policy and allocation", "frozen blocks / client round", "train FLOPs",
              "saved %", f"≥ {PAPER_SAVING_PCT} %", "held-out loss (runs)"):
        t.add_column(h, justify="left" if h.startswith("policy") else "right")
    for r in rows:
        loss = f"{r.heldout_loss:.4f} ({r.heldout_runs})" if r.heldout_loss is not None \
            else ("none found" if with_runs else "")
        t.add_row(r.label, f"{r.frozen_blocks_mean:.2f}", f"{r.train_flops:.4g}",
                  _pct(r.saved_pct), "✓" if r.reaches else "", loss)
    return t
