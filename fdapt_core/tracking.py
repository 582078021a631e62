"""Experiment tracking through the libraries users already run: TensorBoard
(`torch.utils.tensorboard`, event files) and MLflow (a local SQLite store by default: MLflow 3
keeps its plain-file store in maintenance mode). Off by default, offline by default
(`tracking.backends`, `bench run|compare|study --report-to`).

Each run logs its resolved config at the start, every round's row (held-out loss and
perplexity, tokens, tokens/s, FLOPs, bytes up and down, frozen blocks, wall time) as the round
ends, and its totals when it finishes. Runs of one config name share an MLflow experiment,
tagged by method, partition and seed, so a `compare` or a `study` is browsed as one group;
TensorBoard gets one folder per run under `<dir>/tensorboard/<name>/`.

A `Tracker` is a set of callbacks (`fl.context.Callbacks`); `Tee` hands each hook to several.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os
from pathlib import Path
from typing import Optional

import yaml

from .config.run import RunConfig
from .errors import ConfigError

BACKENDS = ("tensorboard", "mlflow")
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


def folder(cfg: RunConfig) -> Path:
    """Where the tracking data goes: `tracking.dir`, else `<output_dir>/tracking`."""
    return Path(cfg.tracking.dir or Path(cfg.output_dir) / "tracking")


def mlflow_uri(cfg: RunConfig) -> str:
    return cfg.tracking.mlflow_uri or f"sqlite:///{(folder(cfg) / 'mlflow.db').resolve()}"


def check(cfg: RunConfig) -> None:
    """Refuse, before anything trains, a backend whose package is missing or a tracking folder
    that cannot be written (one line: a `ConfigError`)."""
    if not cfg.tracking.backends:
        return
    for backend in cfg.tracking.backends:
        if importlib.util.find_spec(PACKAGES[backend]) is None:
            raise ConfigError(f"tracking.backends: {backend} needs the tracking extra: "
                              "pip install 'fdapt-bench[tracking]'")
    where = folder(cfg)
    try:
        where.mkdir(parents=True, exist_ok=True)
        probe = where / f".write-check-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"tracking.dir: cannot write the tracking data under {where} "
                          f"({exc.strerror})") from None


def flat(tree: dict, prefix: str = "") -> dict:
    """A nested config as dotted keys."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def round_metrics(row: dict) -> dict[str, float]:
    """A round's row as numbers: held-out loss, perplexity, wall time, and the clients' sums
    (tokens, FLOPs, bytes) and mean frozen blocks."""
    clients = [c for c in row.get("clients") or [] if not c.get("dropped")]
    out = {"eval_loss": row.get("eval_loss"), "eval_ppl": row.get("eval_ppl"),
           "wall_s": row.get("wall_s")}
    for key in ("tokens", "train_flops", "bytes_up", "bytes_down"):
        values = [c.get(key) for c in clients if c.get(key) is not None]
        out[key] = float(sum(values)) if values else None
    frozen = [c.get("frozen_blocks") for c in clients]
    frozen = [len(f) if isinstance(f, list) else f for f in frozen if f is not None]
    out["frozen_blocks"] = sum(frozen) / len(frozen) if frozen else None
    train_s = row.get("local_train_s") or row.get("train_wall_s")
    out["tokens_per_s"] = out["tokens"] / train_s if out["tokens"] and train_s else None
    return {k: float(v) for k, v in out.items()
            if isinstance(v, (int, float)) and math.isfinite(v)}


def total_metrics(record: dict) -> dict[str, float]:
    """A finished record's totals and final held-out loss, as numbers."""
    totals = record.get("totals") or {}
    out = {f"total_{k}": float(v) for k, v in totals.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    final = (record.get("final_eval") or {}).get("loss")
    if final is not None:
        out["final_eval_loss"] = float(final)
    return out


class Tracker:
    """The tracking backends of one run, fed by the session's callbacks."""

    def __init__(self, cfg: RunConfig, method: str):
        self.cfg, self.method = cfg, method
        self.backends = list(cfg.tracking.backends)
        self.writer = None
        self.mlflow = None
        self.finished = False
        self.label = f"{method}-{cfg.partition.method}-s{cfg.seed}"

    def run_start(self, record: dict) -> None:
        cfg = self.cfg
        if "tensorboard" in self.backends:
            # the tracking extra's: imported only where a run is tracked
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder(cfg) / "tensorboard" / cfg.name / self.label))
            self.writer.add_text("config", "```\n" + yaml.safe_dump(cfg.to_dict()) + "```")
        if "mlflow" in self.backends:
            import mlflow  # the tracking extra's: imported only where a run is tracked

            logging.getLogger("mlflow").setLevel(logging.WARNING)  # its store's set-up lines
            logging.getLogger("alembic").setLevel(logging.WARNING)
            mlflow.set_tracking_uri(mlflow_uri(cfg))
            mlflow.set_experiment(cfg.name)
            mlflow.start_run(run_name=self.label, tags={
                "method": self.method, "partition": cfg.partition.method,
                "seed": str(cfg.seed), "config_hash": record.get("config_hash", "")})
            params = {k: str(v)[:6000] for k, v in flat(cfg.to_dict()).items()}
            keys = sorted(params)
            for i in range(0, len(keys), 100):  # MLflow takes at most 100 params a call
                mlflow.log_params({k: params[k] for k in keys[i:i + 100]})
            self.mlflow = mlflow

    def round_end(self, round_index: int, row: dict) -> None:
        metrics = round_metrics(row)
        step = round_index + 1
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"round/{k}", v, step)
            self.writer.flush()
        if self.mlflow is not None:
            self.mlflow.log_metrics(metrics, step=step)

    def run_end(self, record: dict) -> None:
        metrics = total_metrics(record)
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"totals/{k.removeprefix('total_')}", v, 0)
        if self.mlflow is not None:
            self.mlflow.log_metrics(metrics)
            self.mlflow.set_tag("status", record.get("status", ""))
        self.finished = True

    def close(self, stopped: bool = False) -> None:
        """End the run in every backend: in MLflow FINISHED, KILLED where a stop was asked
        for (it resumes), FAILED otherwise."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.mlflow is not None:
            self.mlflow.end_run(status="FINISHED" if self.finished
                                else "KILLED" if stopped else "FAILED")
            self.mlflow = None

    # the step-level hooks: nothing to log there
    def round_start(self, *args) -> None: ...
    def client_start(self, *args) -> None: ...
    def step(self, *args) -> None: ...
    def client_end(self, *args) -> None: ...


def open_tracker(cfg: RunConfig, method: str) -> Optional[Tracker]:
    """The run's tracker (None without backends), checked first (`check`)."""
    if not cfg.tracking.backends:
        return None
    check(cfg)
    return Tracker(cfg, method)


class Tee:
    """Hands each callback to every one of `callbacks` that has it."""

    def __init__(self, *callbacks):
        self.callbacks = [c for c in callbacks if c is not None]

    def __getattr__(self, name):
        hooks = [getattr(c, name) for c in self.callbacks if hasattr(c, name)]

        def call(*args, **kwargs):
            for hook in hooks:
                hook(*args, **kwargs)
        return call
