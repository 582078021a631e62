"""Downstream scores for every model of a comparison, written into its run records.

A comparison folder `results/<name>/` holds one folder per method with a finished record and
its final model. Beside them this module keeps `general/`: the starting model with no DAPT (the
pretrained folder as it is, or a preset's seeded random init with the corpus tokenizer), so
every adapted model is read against where it started.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch

from ..config.run import build_config
from ..errors import DataError
from ..model import resolve_model_path
from ..prepare import prepare
from ..records import SCHEMA_VERSION, environment, read_json, write_json_atomic
from ..runs import DONE
from ..session import save_model
from . import outcomes
from .finetune import readout_seed
from .probe import C_GRID
from .tasks import TaskConfig

GENERAL = "general"


def finished_runs(folder: Path) -> dict[str, Path]:
    """method → run folder, for every finished run with a model under `folder`."""
    if not folder.is_dir():
        raise DataError(f"--runs: {folder}: no such results folder")
    runs = {}
    for rec_path in sorted(folder.glob("*/record.json")):
        try:
            rec = read_json(rec_path)
        except (OSError, ValueError):
            continue
        if rec.get("status") in DONE and (rec_path.parent / "model").is_dir():
            runs[rec["method"]] = rec_path.parent
    if not set(runs) - {GENERAL}:  # the starting model alone is nothing to compare
        raise DataError(f"--runs: {folder} holds no finished run with a model "
                        "(run `bench compare` first)")
    return runs


def ensure_general(folder: Path, runs: dict[str, Path], device: str = "cpu") -> Path:
    """The folder of the starting model's record: reused, with its scores, while it is the
    start of the runs in `folder`; written afresh (dropping its scores) when it is not."""
    out = folder / GENERAL
    rec_path = out / "record.json"
    source = read_json(next(r for m, r in runs.items() if m != GENERAL) / "record.json")
    cfg = build_config(source["config"])
    # a preset's seeded init is saved here; a pretrained model is named where it lies
    model_ref = "model" if cfg.model.preset else _pretrained_ref(cfg.model.name_or_path)
    if _is_start(rec_path, source["config"], model_ref):
        return out
    if cfg.model.preset:
        prep = prepare(cfg, "fdapt")  # the same seeded init and tokenizer every method began from
        save_model(prep.model, prep.tokenizer, out / "model")
    write_json_atomic(rec_path, {
        "schema_version": SCHEMA_VERSION, "name": cfg.name, "method": GENERAL,
        "base_method": GENERAL, "status": "finished", "config": source["config"],
        "config_hash": source["config_hash"], "model_dir": model_ref,
        # the code and packages that score it (its scores are taken on `device`)
        "environment": environment(torch.device(device))})
    return out


def reuse_general(target: Path, sources: list[Path], tasks: list[TaskConfig],
                  quick: bool) -> list[str]:
    """Copy into the starting model's record at `target` the scores (and per-example outcomes)
    of the same starting model scored in another comparison (`sources`, e.g. a study's earlier
    cells), task by task where the settings match: a pretrained start is one model however
    many cells there are, so it is fine-tuned once per pretraining seed (its fine-tuning seeds
    are that seed's, `finetune.finetune_seeds`, paired with the adapted models'), and reused
    by every partition of that seed. A preset's seeded init differs by seed and is never
    copied. Returns the task names copied."""
    rec = read_json(target / "record.json")
    if rec.get("model_dir") == "model":  # a seeded init of this cell's own
        return []
    seed = (rec.get("config") or {}).get("seed")
    copied = []
    for task in tasks:
        if cached_result(target, task, quick) is not None:
            continue
        for src in sources:
            try:
                other = read_json(src / "record.json")
            except (OSError, ValueError):
                continue
            found = cached_result(src, task, quick)
            if other.get("model_dir") != rec.get("model_dir") or found is None \
                    or (other.get("config") or {}).get("seed") != seed:
                continue
            data = outcomes.load(src, task.name, found["task_hash"])
            if found.get("outcomes") and data is None:
                continue
            if data is not None:
                outcomes.save(target, task.name, found["task_hash"],
                              {k: v for k, v in data.items() if k not in ("task", "task_hash")})
            rec = read_json(target / "record.json")
            rec.setdefault("downstream", {})[task.name] = {**found, "reused_from": src.parent.name}
            write_json_atomic(target / "record.json", rec)
            copied.append(task.name)
            break
    return copied


def _pretrained_ref(name_or_path: str) -> str:
    """A local model folder as an absolute path (the record is read from elsewhere later),
    except one named relative to the working directory (a study's head warm-up), kept as
    named: no path of this machine in a record that may be committed; a hub id, or a model
    shipped in a package (`package:<module>`, found again wherever it is installed), as it
    is."""
    if name_or_path.startswith("package:"):
        return name_or_path
    if not Path(name_or_path).is_absolute() and Path(name_or_path).is_dir():
        return name_or_path
    ref = resolve_model_path(name_or_path)
    return str(Path(ref).resolve()) if Path(ref).is_dir() else ref


def _start_of(config: dict) -> dict:
    """What the starting model depends on: a pretrained model is itself; a preset's seeded
    init also depends on the seed and the corpus its tokenizer is trained on."""
    model = config.get("model") or {}
    if model.get("preset"):
        return {"model": model, "seed": config.get("seed"), "data": config.get("data")}
    return {"model": model}


def _is_start(rec_path: Path, config: dict, model_ref: str) -> bool:
    """Whether the `general` record there is the start of runs with this config."""
    try:
        rec = read_json(rec_path)
    except (OSError, ValueError):
        return False
    return (isinstance(rec, dict) and rec.get("status") in DONE
            and rec.get("model_dir") == model_ref
            and _start_of(rec.get("config") or {}) == _start_of(config)
            and (model_ref != "model" or (rec_path.parent / "model").is_dir()))


def model_folder(run: Path) -> Path:
    """A run's model: `model_dir` relative to the run folder, an absolute path, or a hub id."""
    rec = read_json(run / "record.json")
    ref = rec.get("model_dir", "model")
    if ref.startswith("package:"):
        return Path(resolve_model_path(ref))
    local = run / ref
    return local if Path(ref).is_absolute() or local.exists() or ref == "model" else Path(ref)


# How the fine-tuning seeds are chosen, part of every score's hash: scores taken with seeds
# 0, 1, … shared by every pretraining seed are not reused as if their seeds were fresh
FINETUNE_SEEDS = "derived from the pretraining seed"


# Task keys added after scores were taken, at the value that computes what every score before
# them computed: left out of the hash there, so those scores still match their task
TASK_LEGACY = {"probe_select": "dev", "probe_c": None}


def task_hash(task: TaskConfig, quick: bool) -> str:
    # unit_markers decide how a report resamples the test set, not a score: left out
    spec = {"task": {k: v for k, v in asdict(task).items() if k != "unit_markers"
                     and not (k in TASK_LEGACY and v == TASK_LEGACY[k])},
            "quick": quick, "finetune_seeds": FINETUNE_SEEDS}
    if task.probe:  # the regularisation grid the probe picks from decides its scores too
        spec["probe_c_grid"] = list(C_GRID)
    text = json.dumps(spec, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def current(found: dict | None, rec: dict, task: TaskConfig, quick: bool) -> bool:
    """Whether a record's scores of `task` (`found`) are of these settings and drawn with the
    readout seed of the record's pretraining seed (`finetune.readout_seed`). Scores taken
    before the draw followed the pretraining seed carry none: every model was read on seed
    0's draw; they stay readable by a report, which names their shared draw, but a study does
    not take them as its own."""
    seed = int((rec.get("config") or {}).get("seed", 0))
    return bool(found) and found.get("task_hash") == task_hash(task, quick) \
        and found.get("readout_seed") == readout_seed(seed)


def cached_result(run: Path, task: TaskConfig, quick: bool) -> dict | None:
    rec = read_json(run / "record.json")
    found = rec.get("downstream", {}).get(task.name)
    return found if current(found, rec, task, quick) else None


def store_result(run: Path, task: TaskConfig, quick: bool, result: dict) -> None:
    """Add one task's scores to a run record (atomically, keeping everything else); its
    per-example outcomes go to a file beside it (`downstream/<task>.outcomes.json`), written
    first, so a record never points at outcomes that are not there."""
    result = dict(result)
    per_example = result.pop("outcomes", None)
    digest = task_hash(task, quick)
    if per_example is not None:
        outcomes.save(run, task.name, digest, per_example)
    rec = read_json(run / "record.json")
    rec.setdefault("downstream", {})[task.name] = {
        **result, "task_hash": digest,
        "outcomes": None if per_example is None
        else str(outcomes.path_of(run, task.name).relative_to(run))}
    write_json_atomic(run / "record.json", rec)
