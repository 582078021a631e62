"""Where a run lives and what state it is in: the one place that names run folders and the
one answer to "is this run finished, resumable or new".

A comparison folder `<output_dir>/<name>/` holds one run folder per method; a run folder holds
`record.json` (written as the run goes), its checkpoints, and at the end its model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from .config.run import RunConfig
from .methods import parse_method
from .records import read_json

RunState = Literal["finished", "resumable", "new"]
UNFINISHED = ("running", "interrupted", "failed")  # a record a killed or failed run left
# a run that reached its end: `degraded` went on without a client a federation lost in every
# round (its record says which and why); both are complete records
DONE = ("finished", "degraded")


def comparison_dir(cfg: RunConfig) -> Path:
    """`<output_dir>/<name>`: the folder of the methods run on one config."""
    return Path(cfg.output_dir) / cfg.name


def run_dir(cfg: RunConfig, method: str) -> Path:
    """`<output_dir>/<name>/<method>`: one method's run."""
    return comparison_dir(cfg) / method


def run_state(cfg: RunConfig, method: str) -> tuple[RunState, Optional[dict]]:
    """(state, record): `finished` (a finished record of this exact resolved config and
    method: reuse it), `resumable` (a run of this config that stopped before its end: continue
    it with resume) or `new` (nothing usable: train it; the record, if any, is another
    config's or unreadable)."""
    _, resolved = parse_method(method, cfg)
    try:
        rec = read_json(run_dir(cfg, method) / "record.json")
    except (OSError, ValueError):
        return "new", None
    if not isinstance(rec, dict) or rec.get("config_hash") != resolved.hash():
        return "new", None
    if rec.get("status") in DONE and rec.get("method") == method:
        return "finished", rec
    if rec.get("status") in UNFINISHED:
        return "resumable", rec
    return "new", None


def finished_record(cfg: RunConfig, method: str) -> Optional[dict]:
    """The record of a finished run with this exact resolved config, if there is one."""
    state, rec = run_state(cfg, method)
    return rec if state == "finished" else None
