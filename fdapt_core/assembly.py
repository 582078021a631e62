"""The run's parts, built from what `prepare` read: the context every trainer shares (model,
objective, data, held-out scorer, checkpoints, meters) and the trainer of the method (central
on the union of the clients' text, else federated rounds with the method's freeze policy, its
strategy and a transport). The runner, the distributed launcher and the Flower apps all build
a run through here.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .adapters import attach, exchanged_names
from .checkpoint import Checkpoints
from .config.run import RunConfig
from .data.packing import pack, tokenize_corpus
from .dist.data_parallel import group_dp
from .dist.zero import ZeroTrainer
from .errors import DataError
from .executors import executor_of
from .fl.client import Client
from .fl.codecs import Codec
from .fl.context import Context, NoCallbacks
from .fl.engine import CentralTrainer
from .fl.server import Server
from .fl.transport import SequentialTransport
from .fl.evaluate import HeldOut
from .fl.schedule import client_round_batches, sample_clients
from .fl.strategies import build_strategy
from .freeze.policies import freeze_schedule
from .heads import ScoringHead, scoring_head
from .methods import check
from .model import build_model, resolve_objective, tokenizer_info
from .objective import build_objective
from .prepare import (Prepared, document_sha256, documents_sha256, load_documents, node_share,
                      prepare, resolve_device, run_threads)
from .flops.count import FlopCache
from .profiling.memory import PeakMemory


def central_plan(cfg: RunConfig, client_blocks: list[torch.Tensor], n_union: int) -> list[int]:
    """Sequences of each central round: as many as fdapt's clients train that round (match:
    the same token budget) or one union epoch."""
    if cfg.central.budget == "epochs":
        return [cfg.train.local_epochs * n_union] * cfg.fl.rounds
    plan = []
    for r in range(cfg.fl.rounds):
        n = 0
        for c in sample_clients(cfg, r):  # the batches its client trains that round
            n += sum(len(idx) for idx in client_round_batches(cfg, c, len(client_blocks[c]), r))
        plan.append(n)
    return plan


def prepare_ranks(cfg: RunConfig, method: str, world) -> Prepared:
    """`prepare`, rank 0 first (it fills the tokenizer and token caches; the others read
    them)."""
    main = world is None or world.is_main
    if world is not None and not main:
        world.barrier()
    prep = prepare(cfg, method, world.device if world is not None else None)
    if world is not None and main:
        world.barrier()
    return prep


def build_context(prep: Prepared, out: Path, callbacks, world) -> Context:
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
                   node_share(prep) if executor_of(cfg).remote else None)


def build_node_client(cfg: RunConfig, method: str, client: int, ids: list[str],
                      documents_sha256_: str, tokenizer,
                      doc_sha256: Optional[list[str]] = None) -> tuple[Client, dict]:
    """The client half on a node that holds only its own institution's documents (a Flower
    SuperNode): its documents read from `data.path` and picked by the manifest's ids, in the
    manifest's order, tokenised with the server's tokenizer and packed as the server packs
    them; the model built from the same config and seed. No held-out set, no checkpoints, no
    strategy: those stay with the server. A node missing a document, or holding other text
    under its id, raises `NodeDataError` saying which. Also returns the seconds its parts
    took (`data_s`, `model_s`: a node's round pays them in every fresh process)."""
    t0 = time.perf_counter()
    _, cfg, _ = check(cfg, method)
    device = resolve_device(cfg.train.device)
    torch.set_num_threads(run_threads(cfg))
    # every document the node has (no max_docs sample: the server's sample chose the ids)
    docs = load_documents(replace(cfg, data=replace(cfg.data, max_docs=None)))
    position = {d.id: i for i, d in enumerate(docs)}
    missing = [i for i in ids if i not in position]
    if missing:
        raise NodeDataError(f"client {client}: this node's data.path ({cfg.data.path}) holds "
                            f"{len(ids) - len(missing)} of its {len(ids)} documents (missing "
                            f"{missing[:3]} …)")
    mine = [docs[position[i]] for i in ids]
    if documents_sha256(mine) != documents_sha256_:
        differs = next((d.id for d, h in zip(mine, doc_sha256 or [])
                        if document_sha256(d)[:16] != h), None)
        raise NodeDataError(f"client {client}: this node's data.path ({cfg.data.path}) holds "
                            "other text than the server's under the same ids"
                            + (f", first under id {differs!r}" if differs is not None else ""))
    L = cfg.data.max_seq_length
    tokens = tokenize_corpus(mine, tokenizer, Path(cfg.cache_dir))
    blocks = pack(tokens, list(range(len(mine))), L)
    t1 = time.perf_counter()
    model, _ = attach(cfg.peft, build_model(cfg.model, tokenizer, L, cfg.seed))
    model = model.to(device)
    objective_name = resolve_objective(cfg.model, model)
    objective = build_objective(objective_name, tokenizer_info(tokenizer),
                                cfg.train.mlm_probability)
    head = run_head(cfg, model, objective_name)
    ctx = Context(cfg, model, objective, {client: blocks}, None, device, None, NoCallbacks(),
                  PeakMemory(device), FlopCache(model, head) if cfg.profile.count_flops
                  else None, None, exchanged_names(model), head)
    client = Client(ctx, Codec(cfg.fl.upload_codec, cfg.fl.topk_fraction))
    return client, {"data_s": t1 - t0, "model_s": time.perf_counter() - t1}


class NodeDataError(DataError):
    """A node's documents are not the ones the server's manifest gives its client."""


def run_head(cfg: RunConfig, model: nn.Module, objective: str) -> ScoringHead:
    """Where the run's LM head runs (`train.sparse_head`); the ZeRO engine runs the model's
    own forward inside DeepSpeed's wrapper, so there it is the dense head."""
    if cfg.dist.engine == "deepspeed":
        return ScoringHead(None, "dense: the ZeRO engine runs the model's own forward")
    return scoring_head(model, objective, cfg.train.sparse_head, cfg.train.mlm_probability,
                        cfg.data.max_seq_length)


def union_blocks(prep: Prepared) -> torch.Tensor:
    """The central baseline's blocks. The union is packed as one corpus (clients' documents
    in client order), as a central trainer would see it: with one client it is exactly that
    client's blocks."""
    return pack(prep.tokens, [i for p in prep.parts for i in p], prep.cfg.data.max_seq_length)


def build_trainer(prep: Prepared, ctx: Context, transport=None):
    """(the trainer, the freeze schedule or None): central on the union of the clients'
    text, else the federated `Server` with the method's freeze policy, its strategy and a
    transport (this process's clients in turn, unless the launcher gave another)."""
    cfg = prep.cfg
    if prep.method == "central":
        union = union_blocks(prep)
        return CentralTrainer(ctx, union, central_plan(cfg, prep.client_blocks, len(union))), \
            None
    # the budget policy counts its candidates as the run counts its steps (the same head)
    plans = method_freeze_schedule(prep, ctx.flops or FlopCache(prep.model, ctx.head))
    transport = transport or SequentialTransport()
    codec = Codec(cfg.fl.upload_codec, cfg.fl.topk_fraction)
    client = None
    if transport.trains_here:
        # the client half: data-parallel over this rank's group (None: one process a client),
        # on a ZeRO engine under dist.engine: deepspeed
        zero = ZeroTrainer(prep.model, cfg, ctx.world) if cfg.dist.engine == "deepspeed" \
            else None
        client = Client(ctx, codec, group_dp(ctx.world), zero)
    transport.bind(ctx, client)
    return Server(ctx, plans, build_strategy(cfg.fl), transport, codec), plans


def method_freeze_schedule(prep: Prepared, flops: FlopCache):
    """The FreezeSchedule of a federated method (fdapt: the `none` policy): its clients'
    batches per round decide the allocation. A run and `bench flops` both take it from here.
    `flops`: the run's FlopCache (the budget policy counts its candidates with it)."""
    cfg = prep.cfg
    policy = cfg.freeze.policy if prep.method == "ffdapt" else "none"
    n_batches = [math.ceil(len(b) / cfg.train.batch_size) for b in prep.client_blocks]
    return freeze_schedule(prep.model, policy, cfg.freeze, n_batches, seed=cfg.seed,
                           shape=(cfg.train.batch_size, cfg.data.max_seq_length), flops=flops)
