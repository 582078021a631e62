"""What a verdict rests on, in words: the start model, the federation, the DAPT budget and the
readout. A verdict holds for this set-up only; its line in the report, `verdicts.csv` and
`bench study --plan` says which (issue 42: "equivalent" read on a probe after 9.5 % of one pass
over the corpus is not the paper's claim after 15 passes)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Optional

from .collect import Cell

REFERENCE_PASSES = 15  # the reference study: 15 rounds of one local epoch over each shard


def start_model(rec: dict) -> str:
    """The model DAPT started from: its name (a study's head warm-up names the model it warmed
    up), class and size."""
    model = rec.get("model") or {}
    cfg = (rec.get("config") or {}).get("model") or {}
    name = cfg.get("name_or_path") or f"preset {cfg.get('preset')}"
    warmed = ""
    warmup = Path(name).parent / "record.json"
    if "head-warmup" in name and warmup.is_file():
        try:
            name = json.loads(warmup.read_text())["config"]["model"]["name_or_path"]
            warmed = " with a warmed-up MLM head"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    name = name.removeprefix("package:")
    size = "" if model.get("parameters") is None else f" {model['parameters'] / 1e6:.1f} M"
    return f"{name} ({model.get('class', 'model')}{size}){warmed}"


def dapt_budget(runs: list[dict]) -> str:
    """The DAPT steps and what share of a pass over the corpus they are (the medians over the
    cell's seeds), beside the reference study's passes."""
    steps = [(r.get("totals") or {}).get("steps") for r in runs]
    passes = [(r.get("totals") or {}).get("tokens", 0) / r["data"]["train_tokens"]
              for r in runs if (r.get("data") or {}).get("train_tokens")]
    if not any(steps) or not passes:
        return "DAPT budget not recorded"
    return (f"DAPT {statistics.median(s for s in steps if s):.0f} steps, "
            f"{statistics.median(passes):.3g} passes of the corpus (reference study: "
            f"{REFERENCE_PASSES})")


def readout(scored: list[dict]) -> str:
    """How the task was read: a linear probe or fine-tuning, what chose its setting, and
    whether its data draw followed the pretraining seed."""
    if not scored:
        return "readout not recorded"
    d = scored[0]
    ex = d.get("examples") or {}
    dev = f"{ex['dev']:,} dev examples" if ex.get("dev") else "the dev split"
    train = f"{ex['train']:,}" if ex.get("train") else "its"
    runs = d.get("runs") or [{}]
    if "probe_c" in runs[0]:
        how = f"linear probe on {train} training examples, C chosen on {dev}"
    else:
        how = (f"fine-tuned {d.get('epochs', '?')} epoch(s) × {d.get('seeds', '?')} seed(s) on "
               f"{train} training examples, best epoch on {dev}")
    per_seed = all(x.get("readout_seed") is not None for x in scored)
    return how + ("; data drawn per pretraining seed" if per_seed
                  else "; one data draw for every seed")


def verdict_scope(cell: Cell, ref: Optional[Cell], task_name: str) -> str:
    """The scope of a verdict row on `cell` − `ref` for `task_name` ("" for a cell with no
    records)."""
    if not getattr(cell, "runs", None):
        return ""
    trained = [r.rec for r in cell.trained] or [r.rec for r in cell.runs]
    rec = trained[0]
    cfg = rec.get("config") or {}
    scored = [(r.rec.get("downstream") or {}).get(task_name)
              for c in (cell, ref) for r in getattr(c, "runs", None) or []]
    return "; ".join([
        start_model(rec),
        f"{(cfg.get('fl') or {}).get('clients')} clients, "
        f"{(cfg.get('data') or {}).get('max_seq_length')} tokens",
        dapt_budget(trained), f"{task_name}: " + readout([s for s in scored if s])])


def claim_scope(rows: list[dict], claim) -> str:
    """The scopes a claim's verdict rows rest on, one per line's worth ("" if none named)."""
    scopes = dict.fromkeys(r.get("scope") for r in rows if r["claim"] == claim and r.get("scope"))
    return " | ".join(scopes)
