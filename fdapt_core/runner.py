"""One run, end to end: data → partition → tokenizer → blocks → model → rounds → record.

Everything that can fail on the user's input (config, corpus, partition, model path) fails in
`prepare`, before anything is written under the run's folder.
"""
from __future__ import annotations

import math
import os
import shutil
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml
from torch import nn

from .checkpoint import Checkpoints, ResumeError
from .config import RunConfig
from .data.corpus import read_hf, read_jsonl, read_text
from .data.document import Document
from .data.heldout import ScoredHeldOut, select_heldout
from .data.packing import TokenizedCorpus, pack, tokenize_corpus
from .data.partition import manifest as make_manifest
from .data.partition import partition
from .data.synthetic import generate as generate_synthetic
from .errors import ConfigError, DataError, ModelError
from .fl.engine import (CentralTrainer, Context, FederatedTrainer, NoCallbacks,
                        SequentialExecutor, client_stream, sample_clients, steps_per_round)
from .fl.codecs import CODECS
from .fl.evaluate import HeldOut
from .fl.strategies import STRATEGIES, build_strategy
from .fl.local import amp_dtype
from .adapters import attach, exchanged_names, merged, save_adapter
from .freeze import check_freeze, freeze_schedule
from .heads import ScoringHead, scoring_head
from .interrupt import StopRequested
from .profiling.flops import FlopCache
from .profiling.host import HostLoad, RunRegistry, live_runs
from .profiling.memory import PeakMemory
from .profiling.peak import device_peak, utilisation
from .model import (block_count, build_model, build_tokenizer, check_model, parameter_count,
                    resolve_objective, tokenizer_info, tokenizer_sha256)
from .objective import build_objective
from .records import (SCHEMA_VERSION, environment, loop_wall_s, read_json,
                      write_folder_atomic, write_json_atomic, write_text_atomic)
from .seeding import derive

METHODS = ("central", "fdapt", "ffdapt")
UPLOAD_CODECS = tuple(c for c in CODECS if c != "none")  # method-name suffixes
FREEZE_POLICIES = ("paper", "bottom", "none", "progressive", "random", "budget")


def parse_method(method: str, cfg: RunConfig) -> tuple[str, RunConfig]:
    """`<base>[-<policy>][-lora][-<codec>][-<strategy>]`: base `central`, `fdapt` or `ffdapt`;
    a freeze policy only after ffdapt (without one, freeze.policy's); `-lora` sets
    peft.method: lora (LoRA clients, or a LoRA central baseline); a federated method may go on
    with an upload codec (`fdapt-int8`), which sets fl.upload_codec, and end in a server
    strategy (`fdapt-fedadam`, `ffdapt-paper-lora-fedprox`), which sets fl.strategy."""
    base, *rest = method.split("-")
    policy = rest.pop(0) if rest and base == "ffdapt" and rest[0] in FREEZE_POLICIES else None
    lora = bool(rest) and rest[0] == "lora"
    if lora:
        rest.pop(0)
    codec = rest.pop(0) if rest and base != "central" and rest[0] in UPLOAD_CODECS else None
    strategy = rest.pop(0) if rest and base != "central" and rest[0] in STRATEGIES else None
    if base not in METHODS or rest:
        raise ConfigError(f"method {method!r}: expected one of central, fdapt, ffdapt, "
                          f"ffdapt-<policy> with policy in {', '.join(FREEZE_POLICIES)}, "
                          f"optionally followed by -lora (LoRA adapters), the federated ones "
                          f"then by -<codec> with codec in {', '.join(UPLOAD_CODECS)} and "
                          f"-<strategy> with strategy in {', '.join(STRATEGIES)}")
    if policy:
        cfg = replace(cfg, freeze=replace(cfg.freeze, policy=policy))
    if lora:
        cfg = replace(cfg, peft=replace(cfg.peft, method="lora"))
    if codec:
        cfg = replace(cfg, fl=replace(cfg.fl, upload_codec=codec))
    if strategy:
        cfg = replace(cfg, fl=replace(cfg.fl, strategy=strategy))
    return base, cfg


def check(cfg: RunConfig, method: str) -> tuple[str, RunConfig, str]:
    """(base method, the method's config, the objective): everything a run would refuse that
    the config and the model's own config can tell, before any data is read or anything is
    built or written. `compare` and `study` call it for every method before the first trains.

    The method's name, the model and its objective (`model.check_model`), the freeze
    settings against the model's transformer blocks, and what the ZeRO engine and the Flower
    executor support."""
    base, cfg = parse_method(method, cfg)
    objective = check_model(cfg.model)
    if base == "ffdapt":
        n_blocks = block_count(cfg.model)
        if n_blocks is not None:
            check_freeze(cfg.freeze.policy, cfg.freeze, n_blocks)
    if cfg.dist.engine == "deepspeed":
        from .dist.zero import check_supported

        check_supported(cfg, base)
    if cfg.dist.executor == "flower":
        from .flower.server import check_supported as flower_supported  # flwr: optional

        flower_supported(cfg)
    return base, cfg, objective


def run_dir(cfg: RunConfig, method: str) -> Path:
    return Path(cfg.output_dir) / cfg.name / method


# ----------------------------------------------------------------------------- data

def resolve_data_path(path: str) -> Path:
    """A relative data path: as given, else under $FDAPT_DATA_DIR, else ../shared/data."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    roots = [os.environ.get("FDAPT_DATA_DIR"),
             str(Path(__file__).resolve().parents[2] / "shared" / "data")]
    for root in filter(None, roots):
        candidate = Path(root) / path
        if candidate.exists():
            return candidate
        # configs name files as "corpus/x.jsonl"; accept "../shared/data/corpus/x.jsonl" too
        for i in range(len(p.parts)):
            tail = Path(*p.parts[i:])
            if (Path(root) / tail).exists():
                return Path(root) / tail
    return p


def load_documents(cfg: RunConfig) -> list[Document]:
    d = cfg.data
    if d.source == "synthetic":
        s = d.synthetic
        docs = generate_synthetic(n_docs=s.n_docs, n_topics=s.n_topics, seed=s.seed)
    elif d.source == "text":
        docs = read_text(resolve_data_path(d.path), per=d.text_per)
    elif d.source == "jsonl":
        docs = read_jsonl(resolve_data_path(d.path), d.text_fields, d.id_field, d.key_field)
    elif d.source == "hf_disk":
        path = resolve_data_path(d.path)
        if not path.is_dir():
            raise DataError(f"data.path: {path}: no such dataset folder")
        docs = read_hf(str(path), d.split, d.text_fields, d.id_field, d.key_field)
    else:  # hf_hub
        docs = read_hf(d.path, d.split, d.text_fields, d.id_field, d.key_field)
    for doc in docs:
        if len(doc.text) > d.max_doc_chars:
            raise DataError(f"{d.path or 'corpus'}: document {doc.id} has {len(doc.text):,} "
                            f"characters, more than data.max_doc_chars={d.max_doc_chars:,} "
                            "(a file without line breaks?)")
    if d.max_docs is not None and d.max_docs < len(docs):
        # A seeded sample kept in file order: corpora stored sorted by topic (OHSUMED is)
        # would otherwise lose whole topics to a plain head cut.
        rng = np.random.default_rng(derive(cfg.seed, "subset"))
        docs = [docs[i] for i in sorted(rng.choice(len(docs), d.max_docs, replace=False))]
    return docs


def split_validation(n_docs: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) document indices; validation is a seeded sample, both sorted."""
    n_val = min(n_docs - 1, max(1, round(fraction * n_docs))) if fraction > 0 else 0
    rng = np.random.default_rng(derive(seed, "validation"))
    val = sorted(int(i) for i in rng.choice(n_docs, size=n_val, replace=False))
    val_set = set(val)
    return [i for i in range(n_docs) if i not in val_set], val


@dataclass
class Prepared:
    """Everything a run needs, built and checked before anything is written."""

    cfg: RunConfig
    method: str
    objective: str  # "mlm" or "clm"
    docs: list[Document]
    train_idx: list[int]
    val_idx: list[int]
    parts: list[list[int]]  # indices into docs
    manifest: dict
    tokenizer: object
    tokens: TokenizedCorpus
    client_blocks: list[torch.Tensor]
    heldout: ScoredHeldOut  # the held-out blocks scored and the documents they hold
    model: nn.Module  # with LoRA: the base with adapters injected
    adapters: Optional[nn.Module]  # the PeftModel around `model` (peft.method: lora), or None
    device: torch.device
    prepare_wall_s: float


def ranks_here(cfg: RunConfig) -> int:
    """This run's processes on this host: a distributed run's local ranks, else one."""
    if cfg.dist.executor != "distributed":
        return 1
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def run_threads(cfg: RunConfig) -> int:
    """The CPU threads a run trains with: `train.threads`, else the host's cores (shared among
    a distributed run's ranks on this host).

    Never a figure of the moment (it once was the cores shared among the fdapt runs alive at
    the start): the thread count changes the order of floating-point sums (1 and 2 threads
    part by 6e-7 after five rounds of the default run), so a count that followed the host's
    state made a plain rerun, or a resumed one, differ from the first. Other runs alive on the
    host slow this one instead: the record counts them (`other_fdapt_runs_at_start`) and flags
    its times as contended (`profiling.host`)."""
    return cfg.train.threads or max(1, (os.cpu_count() or 1) // ranks_here(cfg))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: {name!r} is not a device (auto, cpu, cuda, cuda:N)") \
            from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} asked for, but CUDA is not available")
    return device


def prepare(cfg: RunConfig, method: str, device: Optional[torch.device] = None) -> Prepared:
    t0 = time.perf_counter()
    method, cfg, objective = check(cfg, method)  # before any tokenizer or cache is written
    device = device or resolve_device(cfg.train.device)
    torch.set_num_threads(run_threads(cfg))
    docs = load_documents(cfg)
    train_idx, val_idx = split_validation(len(docs), cfg.data.val_fraction, cfg.seed)
    train_docs = [docs[i] for i in train_idx]
    if cfg.fl.clients > len(train_docs):
        raise DataError(f"fl.clients ({cfg.fl.clients}) is more than the {len(train_docs)} "
                        "training documents")
    local_parts = partition(train_docs, cfg.fl.clients, cfg.partition.method, cfg.seed,
                            alpha=cfg.partition.alpha, shuffle=cfg.partition.shuffle)
    parts = [[train_idx[i] for i in p] for p in local_parts]
    man = make_manifest(train_docs, local_parts, method=cfg.partition.method, seed=cfg.seed,
                        validation=[docs[i].id for i in val_idx])
    cache = Path(cfg.cache_dir)
    tokenizer = build_tokenizer(cfg.model, [d.text for d in train_docs], cache)
    if objective == "mlm" and tokenizer.mask_token_id is None:
        raise ModelError("model: the tokenizer has no mask token, which the masked-LM "
                         "objective needs; set model.objective: clm for a decoder")
    tokens = tokenize_corpus(docs, tokenizer, cache)
    L = cfg.data.max_seq_length
    client_blocks = [pack(tokens, p, L) for p in parts]
    for c, b in enumerate(client_blocks):
        if len(b) == 0:
            n_tok = int(sum(tokens.doc_lengths()[i] for i in parts[c]))
            raise DataError(f"client {c} has {n_tok} tokens, fewer than one block of "
                            f"data.max_seq_length={L}; use fewer clients or shorter blocks")
    # a seeded sample stratified by key, whatever the file order: the same for every method
    heldout = select_heldout(tokens, val_idx, [d.key for d in docs], L, cfg.eval.max_blocks,
                             np.random.default_rng(derive(cfg.seed, "heldout-sample")))
    man["heldout_scored"] = [docs[i].id for i in heldout.doc_indices]
    if len(val_idx) and len(heldout.blocks) == 0:
        raise DataError(f"the held-out documents hold fewer than data.max_seq_length={L} "
                        "tokens; raise data.val_fraction")
    model = build_model(cfg.model, tokenizer, L, cfg.seed)
    model, adapters = attach(cfg.peft, model)  # adapters seeded by the model's seed too
    model = model.to(device)
    objective = resolve_objective(cfg.model, model)
    return Prepared(cfg, method, objective, docs, train_idx, val_idx, parts, man, tokenizer,
                    tokens, client_blocks, heldout, model, adapters, device,
                    time.perf_counter() - t0)


# ----------------------------------------------------------------------------- running

def central_plan(cfg: RunConfig, client_blocks: list[torch.Tensor], n_union: int) -> list[int]:
    """Sequences of each central round: as many as fdapt's clients train that round (match:
    the same token budget) or one union epoch."""
    if cfg.central.budget == "epochs":
        return [cfg.train.local_epochs * n_union] * cfg.fl.rounds
    plan = []
    for r in range(cfg.fl.rounds):
        n = 0
        for c in sample_clients(cfg, r):
            stream = client_stream(cfg, c, len(client_blocks[c]))
            steps = steps_per_round(len(client_blocks[c]), cfg)
            start = r * cfg.train.local_epochs * stream.steps_per_epoch  # as train_client
            n += sum(len(idx) for idx in stream.take(start, steps))
        plan.append(n)
    return plan


def finished_record(cfg: RunConfig, method: str) -> Optional[dict]:
    """The record of a finished run with this exact resolved config, if there is one."""
    base, cfg = parse_method(method, cfg)
    path = run_dir(cfg, method) / "record.json"
    if not path.is_file():
        return None
    try:
        rec = read_json(path)
    except (OSError, ValueError):
        return None
    ok = rec.get("status") == "finished" and rec.get("config_hash") == cfg.hash() \
        and rec.get("method") == method
    return rec if ok else None


def run(cfg: RunConfig, method: str, resume: bool = False, callbacks=None) -> dict:
    """Train one method; return its record (also written to <run dir>/record.json).

    With `dist.executor: distributed` every rank of the torch.distributed world calls this;
    rank 0 alone evaluates and writes, and a rank that fails names itself and its client."""
    with RunRegistry():  # other runs on this host see this one when they pick threads
        if cfg.dist.executor == "distributed":
            from .dist.launch import run_distributed

            return run_distributed(cfg, method, resume, callbacks, _run)
        if cfg.dist.executor == "flower":
            from .flower.simulation import run_flower

            return run_flower(cfg, method, resume, callbacks, _run)
        return _run(cfg, method, resume, callbacks)


def _run(cfg: RunConfig, method: str, resume: bool = False, callbacks=None,
         world=None, executor=None) -> dict:
    """One run in this process (every rank of a distributed run calls it; rank 0 alone
    evaluates and writes): prepare, open the run folder, build the trainer, start the
    record, train the rounds, total up and save the model."""
    callbacks = callbacks or NoCallbacks()
    main = world is None or world.is_main
    prep = _prepare_ranks(cfg, method, world)
    out = run_dir(prep.cfg, method)
    write = write_json_atomic if main else _no_write
    if main:
        _open_run_dir(prep, method, out, resume)
    host = HostLoad(torch.get_num_threads())
    others = max(0, live_runs() - ranks_here(prep.cfg))  # this run's siblings are not others
    ctx = _context(prep, out, callbacks, world)
    trainer, freeze_plans = _trainer(prep, ctx, executor)
    dtype = amp_dtype(prep.cfg.train, prep.device)
    initial = ctx.heldout.evaluate(prep.model, prep.device, dtype) if main \
        else {"loss": None, "ppl": None}
    start = trainer.resume() if resume else 0
    record = _new_record(prep, method, world, freeze_plans, initial,
                         start if resume else None, trainer.rounds)
    record["other_fdapt_runs_at_start"] = others
    record["model"]["head"] = ctx.head.why  # where the LM head ran in training
    write(out / "record.json", record)

    def round_end(r: int, row: dict) -> None:
        if world is None:  # a rank would count its siblings as others: the run's view at the end
            row["host"] = host.sample()
        write(out / "record.json", record)  # progress survives a kill
        callbacks.round_end(r, row)

    ctx.callbacks = _Chain(callbacks, round_end)
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
    write(out / "record.json", record)
    return record


def _prepare_ranks(cfg: RunConfig, method: str, world) -> Prepared:
    """`prepare`, rank 0 first (it fills the tokenizer and token caches; the others read
    them)."""
    main = world is None or world.is_main
    if world is not None and not main:
        world.barrier()
    prep = prepare(cfg, method, world.device if world is not None else None)
    if world is not None and main:
        world.barrier()
    return prep


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


def _context(prep: Prepared, out: Path, callbacks, world) -> Context:
    """What every trainer needs: the model, the objective, the data, the held-out scorer,
    checkpoints, meters."""
    cfg, model = prep.cfg, prep.model
    objective = build_objective(prep.objective, tokenizer_info(prep.tokenizer),
                                cfg.train.mlm_probability)
    heldout = HeldOut(prep.heldout.blocks, objective, cfg.seed, cfg.eval.batch_size)
    head = run_head(cfg, model, prep.objective)
    flops = FlopCache(model, head) if cfg.profile.count_flops else None
    return Context(cfg, model, objective, prep.client_blocks, heldout, prep.device,
                   Checkpoints(out / "checkpoints"), callbacks, PeakMemory(prep.device),
                   flops, world, exchanged_names(model), head,
                   {"manifest_sha256": prep.manifest["sha256"],
                    "tokenizer_sha256": tokenizer_sha256(prep.tokenizer)})


def run_head(cfg: RunConfig, model: nn.Module, objective: str) -> ScoringHead:
    """Where the run's LM head runs (`train.sparse_head`); the ZeRO engine runs the model's
    own forward inside DeepSpeed's wrapper, so there it is the dense head."""
    if cfg.dist.engine == "deepspeed":
        return ScoringHead(None, "dense: the ZeRO engine runs the model's own forward")
    return scoring_head(model, objective, cfg.train.sparse_head, cfg.train.mlm_probability,
                        cfg.data.max_seq_length)


def _trainer(prep: Prepared, ctx: Context, executor):
    """(the trainer, the freeze schedule or None): central on the union of the clients'
    text, else federated rounds with the method's freeze policy and the strategy."""
    cfg = prep.cfg
    if prep.method == "central":
        # The union is packed as one corpus (clients' documents in client order), as a
        # central trainer would see it: with one client it is exactly that client's blocks.
        union = pack(prep.tokens, [i for p in prep.parts for i in p], cfg.data.max_seq_length)
        return CentralTrainer(ctx, union, central_plan(cfg, prep.client_blocks, len(union))), \
            None
    policy = cfg.freeze.policy if prep.method == "ffdapt" else "none"
    n_batches = [math.ceil(len(b) / cfg.train.batch_size) for b in prep.client_blocks]
    # the budget policy counts its candidates as the run counts its steps (the same head)
    flops = ctx.flops or FlopCache(prep.model, ctx.head)
    plans = freeze_schedule(prep.model, policy, cfg.freeze, n_batches, seed=cfg.seed,
                            shape=(cfg.train.batch_size, cfg.data.max_seq_length),
                            flops=flops)
    zero = None
    if cfg.dist.engine == "deepspeed":
        from .dist.zero import ZeroTrainer

        zero = ZeroTrainer(prep.model, cfg, ctx.world)
    return FederatedTrainer(ctx, plans, build_strategy(cfg.fl),
                            executor or SequentialExecutor(), zero), plans


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
        from .dist.collectives import gather_objects

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


class _Chain:
    """The user's callbacks, with the record's own round_end in front."""

    def __init__(self, inner, round_end):
        self._inner, self.round_end = inner, round_end

    def __getattr__(self, name):
        return getattr(self._inner, name)


def peft_summary(cfg: RunConfig, model: nn.Module) -> Optional[dict]:
    """The adapters of a LoRA run for the record (None without)."""
    if cfg.peft.method == "none":
        return None
    from .adapters import target_modules

    names = exchanged_names(model)
    return {"method": cfg.peft.method, "r": cfg.peft.r, "alpha": cfg.peft.alpha,
            "dropout": cfg.peft.dropout, "target_modules": target_modules(cfg.peft, model),
            "adapter_parameters": sum(p.numel() for n, p in model.named_parameters()
                                      if n in names)}


def data_summary(prep: Prepared) -> dict:
    lengths = prep.tokens.doc_lengths()
    return {
        "source": prep.cfg.data.source,
        "synthetic": prep.cfg.data.source == "synthetic",
        "documents": len(prep.docs), "train_documents": len(prep.train_idx),
        "validation_documents": len(prep.val_idx),
        "train_tokens": int(sum(lengths[i] for i in prep.train_idx)),
        "validation_blocks": len(prep.heldout.blocks),
        # what the held-out loss is computed on: documents scored, per key where there is one
        "heldout_scored": {"documents": len(prep.heldout.doc_indices),
                           "by_key": prep.heldout.key_counts([d.key for d in prep.docs])},
        "tokenized_from_cache": prep.tokens.from_cache,
        "clients": [{"client": c, "documents": len(p), "blocks": len(b)}
                    for c, (p, b) in enumerate(zip(prep.parts, prep.client_blocks))],
    }


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
