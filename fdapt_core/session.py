"""One run in this process, from its prepared parts to its finished record: open the run
folder (a resumed run's checked against the config and corpus), build the trainer, start the
record, train the rounds (the record rewritten after each, so progress survives a kill), then
totals, the final model and the record's last state. Every rank of a distributed run and the
Flower ServerApp run through `run_session`; rank 0 alone evaluates and writes.
"""
from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import Optional

import torch
import yaml
from torch import nn

from .adapters import exchanged_names, merged, save_adapter, target_modules
from .assembly import build_context, build_trainer, prepare_ranks
from .checkpoint import ResumeError
from .dist.collectives import gather_objects
from .fl.context import Context, NoCallbacks
from .fl.local import amp_dtype
from .interrupt import StopRequested
from .model import parameter_count
from .prepare import Prepared, data_summary, ranks_here
from .profiling.host import HostLoad, live_runs
from .profiling.peak import device_peak, utilisation
from .config.run import RunConfig
from .records import (SCHEMA_VERSION, environment, loop_wall_s, read_json,
                      write_folder_atomic, write_json_atomic, write_text_atomic)
from .runs import run_dir


def run_session(cfg: RunConfig, method: str, resume: bool = False, callbacks=None,
                world=None, transport=None) -> dict:
    """One run in this process (every rank of a distributed run calls it; rank 0 alone
    evaluates and writes): prepare, open the run folder, build the trainer, start the
    record, train the rounds, total up and save the model."""
    callbacks = callbacks or NoCallbacks()
    main = world is None or world.is_main
    prep = prepare_ranks(cfg, method, world)
    out = run_dir(prep.cfg, method)
    write = write_json_atomic if main else _no_write
    if main:
        _open_run_dir(prep, method, out, resume)
    host = HostLoad(torch.get_num_threads())
    others = max(0, live_runs() - ranks_here(prep.cfg))  # this run's siblings are not others
    record: dict = {}  # filled once the trainer exists; the round-end hook rewrites it

    def round_end(r: int, row: dict) -> None:
        if world is None:  # a rank would count its siblings as others: the run's view at the end
            row["host"] = host.sample()
        write(out / "record.json", record)  # progress survives a kill
        callbacks.round_end(r, row)

    ctx = build_context(prep, out, _RecordFirst(callbacks, round_end), world)
    trainer, freeze_plans = build_trainer(prep, ctx, transport)
    dtype = amp_dtype(prep.cfg.train, prep.device)
    initial = ctx.heldout.evaluate(prep.model, prep.device, dtype) if main \
        else {"loss": None, "ppl": None}
    start = trainer.resume() if resume else 0
    record.update(_new_record(prep, method, world, freeze_plans, initial,
                              start if resume else None, trainer.rounds))
    record["other_fdapt_runs_at_start"] = others
    record["model"]["head"] = ctx.head.why  # where the LM head ran in training
    write(out / "record.json", record)
    if main:
        _hook(callbacks, "run_start")(record)  # e.g. experiment tracking: the config
    t0 = time.perf_counter()
    try:
        trainer.run(start)
    except StopRequested:
        record["status"] = "interrupted"
        write(out / "record.json", record)
        raise
    except BaseException as exc:  # the record must not say "running" for a run that is over
        # (a Flower ServerApp is stopped by SystemExit; only SIGKILL leaves "running" behind)
        record.update(status="failed" if isinstance(exc, Exception) else "interrupted",
                      error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        write(out / "record.json", record)
        raise
    _close_record(record, prep, trainer.rounds, ctx, host, time.perf_counter() - t0)
    record["totals"]["flop_count_s"] = trainer.flop_count_s  # before the rounds, off their clock
    record.update(_save_final_model(prep, out) if main else {"model_dir": "model"})
    record["status"] = "finished"
    lost = always_lost(trainer.rounds)
    if lost:  # the run went on without them: say so rather than "finished"
        record["status"] = "degraded"
        record["degraded"] = (f"client(s) {sorted(lost)} lost in every round they were sent "
                              f"(first: {next(iter(lost.values()))}); the rounds were "
                              "aggregated without them")
    write(out / "record.json", record)
    if main:
        _hook(callbacks, "run_end")(record)  # e.g. experiment tracking: the totals
    return record


def _open_run_dir(prep: Prepared, label: str, out: Path, resume: bool) -> None:
    """A resumed run's folder checked against this config and corpus; a new run's folder
    made afresh, with its manifest and resolved config."""
    cfg = prep.cfg
    if resume:
        if not (out / "record.json").is_file():
            raise ResumeError(f"--resume: no run named {cfg.name!r} with method {label} under "
                              f"{out.parent} (start it without --resume)")
        old = read_json(out / "record.json")
        if old.get("config_hash") != cfg.hash():
            raise ResumeError(f"--resume: the config differs from the one run {cfg.name!r}/"
                              f"{label} started with; resume with the same config and --set")
        if old.get("manifest_sha256") != prep.manifest["sha256"]:
            raise ResumeError(f"--resume: the corpus gives another partition than run "
                              f"{cfg.name!r}/{label} started with (has the data changed?)")
    elif out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "manifest.json", prep.manifest)
    write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _new_record(prep: Prepared, label: str, world, freeze_plans, initial: dict,
                resumed_from: Optional[int], rounds: list[dict]) -> dict:
    """The run record as it starts: what ran, on what, from where."""
    cfg, model = prep.cfg, prep.model
    return {
        "schema_version": SCHEMA_VERSION, "name": cfg.name, "method": label,
        "base_method": prep.method, "objective": prep.objective, "status": "running",
        "config": cfg.to_dict(),
        "seed": cfg.seed,  # with config_hash and manifest_sha256: what makes a cell reproducible
        "config_hash": cfg.hash(), "environment": environment(prep.device),
        "data": data_summary(prep), "manifest_sha256": prep.manifest["sha256"],
        "model": {"parameters": parameter_count(model), "class": type(model).__name__,
                  "peft": peft_summary(cfg, model)},
        # static policies: the plan per client; per-round ones: [] (rows carry frozen_blocks)
        "freeze": freeze_plans.record(model) if freeze_plans is not None else [],
        "freeze_policy": freeze_plans.describe() if freeze_plans is not None else None,
        "initial_eval": {"loss": initial["loss"], "ppl": initial["ppl"]},
        "resumed_from_round": resumed_from,
        "dist": world.describe() if world is not None else None,
        "rounds": rounds,
    }


def _close_record(record: dict, prep: Prepared, rounds: list[dict], ctx: Context,
                  host: HostLoad, session_s: float) -> None:
    """Totals, memory, the host's load, utilisation and the final evaluation (every rank
    joins: the per-rank figures are gathered)."""
    cfg, world, device = prep.cfg, ctx.world, prep.device
    record["rounds"] = rounds
    t = record["totals"] = totals(rounds, parameter_count(prep.model))
    t["session_wall_s"] = session_s
    t["prepare_wall_s"] = prep.prepare_wall_s
    t.update(ctx.memory.summary())  # this session's peak (a resumed run: since resume)
    if world is not None:
        per_rank = gather_objects(world, {"rank": world.rank, **ctx.memory.summary(),
                                          "bytes_collectives": dict(world.bytes_moved),
                                          "host": socket.gethostname(), "cpu_s": host.own_s()})
        t["ranks"] = per_rank
        t["peak_mem_mb"] = max(x["peak_mem_mb"] for x in per_rank)
        # the sibling ranks on this host are this run, not contention
        mine = sum(x["cpu_s"] for x in per_rank if x["host"] == socket.gethostname())
        record["host"] = host.sample(ranks_cpu_s=mine)
    else:
        record["host"] = host.sample()
    # a client trained data-parallel used its group's G devices (central: the whole world)
    devices = 1 if world is None else world.size if prep.method == "central" \
        else world.group_size
    t.update(utilisation(t["train_flops"], t["local_train_s"], devices,
                         device_peak(device, amp_dtype(cfg.train, device),
                                     cfg.profile.peak_tflops)))
    record["final_eval"] = {"loss": rounds[-1]["eval_loss"], "ppl": rounds[-1]["eval_ppl"]}


def _save_final_model(prep: Prepared, out: Path) -> dict:
    """The final model as a plain HF folder (a LoRA run: the adapters on their own first,
    then merged into it); the record's pointers to them."""
    model, saved = prep.model, {"model_dir": "model"}
    if prep.adapters is not None:
        save_adapter(prep.adapters, out / "adapter")
        saved["adapter_dir"] = "adapter"
        model = merged(prep.adapters)
    save_model(model, prep.tokenizer, out / "model")
    return saved


def _no_write(*_args, **_kwargs) -> None:
    pass


def _hook(callbacks, name: str):
    """A run-level hook of `callbacks`, or nothing: callbacks written before the run-level
    hooks existed have only the round's."""
    return getattr(callbacks, name, None) or (lambda *a, **k: None)


class _RecordFirst:
    """The user's callbacks, with the record's own round_end in front."""

    def __init__(self, inner, round_end):
        self._inner, self.round_end = inner, round_end

    def __getattr__(self, name):
        return getattr(self._inner, name)


def peft_summary(cfg: RunConfig, model: nn.Module) -> Optional[dict]:
    """The adapters of a LoRA run for the record (None without)."""
    if cfg.peft.method == "none":
        return None
    names = exchanged_names(model)
    return {"method": cfg.peft.method, "r": cfg.peft.r, "alpha": cfg.peft.alpha,
            "dropout": cfg.peft.dropout, "target_modules": target_modules(cfg.peft, model),
            "adapter_parameters": sum(p.numel() for n, p in model.named_parameters()
                                      if n in names)}


def always_lost(rounds: list[dict]) -> dict[int, str]:
    """{client: the first error} of the clients a real federation lost in every round they
    were sent (a node that cannot train this run, whatever its reason); a client sent once in
    a run of several rounds is not judged on one timeout."""
    seen: dict = {}
    for r in rounds:
        for c in r["clients"]:
            if c["client"] != "central":
                seen.setdefault(c["client"], []).append(c)
    enough = min(2, len(rounds))
    return {k: rows[0].get("error") or "no reason given" for k, rows in seen.items()
            if len(rows) >= enough and all(row.get("fault") == "lost" for row in rows)}


def totals(rounds: list[dict], n_params: int) -> dict:
    """Run totals from the round rows: work, FLOPs, time by phase, throughput, traffic."""
    rows = [c for r in rounds for c in r["clients"]]
    steps = sum(c["steps"] for c in rows)
    tokens = sum(c["tokens"] for c in rows)
    local = sum(c["wall_s"] for c in rows)
    wall = sum(r["wall_s"] + (r["checkpoint_wall_s"] or 0.0) for r in rounds)
    train_wall = sum(r["train_wall_s"] for r in rounds)
    counted = [c["train_flops"] for c in rows]
    phases: dict[str, float] = {}
    for c in rows:
        for k, v in c["phases"].items():
            phases[k] = phases.get(k, 0.0) + v
    phases["aggregation"] = sum(r["aggregate_wall_s"] for r in rounds)
    phases["evaluation"] = sum(r["eval_wall_s"] for r in rounds)
    phases["checkpoint"] = sum(r["checkpoint_wall_s"] or 0.0 for r in rounds)
    up, down = sum(c["bytes_up"] for c in rows), sum(c["bytes_down"] for c in rows)
    # what the uploads would have cost without the codec (older records: as sent)
    dense = sum(c.get("bytes_up_dense", c["bytes_up"]) for c in rows)
    return {
        "rounds": len(rounds), "steps": steps, "tokens": tokens,
        "samples": sum(c["samples"] for c in rows),
        "train_flops": sum(counted) if counted and None not in counted else None,
        "analytic_flops": sum(c["analytic_flops"] for c in rows),
        "train_wall_s": train_wall,
        "local_train_s": local,
        "wall_s": wall,
        "loop_wall_s": loop_wall_s(rounds),
        # everything a round spends outside the clients' training loops: loading the global
        # model, building optimizers, counting FLOPs, aggregating, evaluating, checkpointing
        "outside_train_share": 1.0 - loop_wall_s(rounds) / wall if wall > 0 else None,
        # one training loop's rate, and the run's: over parallel ranks the two differ
        "tokens_per_s": tokens / local if local > 0 else None,
        "tokens_per_train_wall_s": tokens / train_wall if train_wall > 0 else None,
        "samples_per_s": sum(c["samples"] for c in rows) / local if local > 0 else None,
        "phases_s": phases,
        "bytes_up": up, "bytes_down": down, "bytes_sent": up + down, "bytes_up_dense": dense,
        "dropped_updates": sum(bool(c.get("dropped")) for c in rows),
        "rejected_updates": sum(bool(c.get("rejected")) for c in rows),
        "rounds_not_aggregated": sum(not r.get("aggregated", True) for r in rounds),
        # share of parameter updates that happened: steps-weighted trainable share
        "trainable_share": sum(c["trainable_params"] * c["steps"] for c in rows)
        / max(1, n_params * steps),
    }


def save_model(model: nn.Module, tokenizer, folder: Path) -> None:
    """The final model in HF format (safetensors), written aside and renamed."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    write_folder_atomic(folder, write)
