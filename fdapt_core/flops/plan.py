"""A run's training FLOPs predicted without training it (`bench flops`).

The prediction walks the code a run walks, not a model of it: `prepare` reads, partitions,
tokenizes and packs the corpus, so each client's blocks are the real ones; the freeze schedule
comes from `assembly.method_freeze_schedule` (the allocation a run records); the client rounds
come from `schedule.round_plans` (client sampling, the engine's `planned_counts`); each round's
batches from `schedule.client_round_batches` (local epochs, `max_local_steps`, the short last
batch); a drawn `drop` fault trains nothing, as in the run. Each distinct (frozen set, step
shape) is counted once by the run's own `FlopCache` on the meta device, and a client round
counts `rows.counted_flops` of it, the figure its record row carries. The sum is therefore
the record's `totals.train_flops`, to the FLOP (`tests/test_flops_plan.py`). No optimizer is
built and nothing trains.

Scope: the sequential path, as `bench compare` runs it. A Flower deployment's nodes that die
(`lost`) cannot be foreseen.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Optional, Sequence

import torch

from ..adapters import exchanged_names
from ..assembly import central_plan, method_freeze_schedule, run_head, union_blocks
from ..config.run import FreezeConfig, RunConfig
from ..fl.faults import Faults
from ..fl.rows import batch_flops, counted_flops
from ..fl.schedule import client_round_batches, client_stream, round_plans
from ..methods import check
from ..model import parameter_count, transformer_blocks
from ..prepare import Prepared, prepare
from .count import FlopCache, StepFlops

# The reference study's claim: FFDAPT saved 12.1 % (of local-training wall time) against FDAPT.
PAPER_SAVING_PCT = 12.1


@dataclass
class MethodFlops:
    """One method's training FLOPs over the whole run, as its record would total them."""

    method: str
    base: str  # central, fdapt or ffdapt
    partition: str
    policy: Optional[dict]  # the record's freeze_policy (None: central)
    frozen: list[dict]  # per client (a static policy): blocks, embeddings, frozen_params
    frozen_blocks_mean: float  # frozen blocks per client round, on average
    client_rounds: int
    steps: int
    samples: int
    train_flops: int  # what the record's totals.train_flops will read
    forward_flops: int  # its forward and backward parts (each rounded per client round)
    backward_flops: int
    counted_sets: int  # distinct (frozen set, step shape) traced on the meta device
    reference_flops: Optional[int] = None  # fdapt's train_flops on the same config
    saved_pct: Optional[float] = None  # % of fdapt's FLOPs saved (negative: more)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Tally:
    """Client rounds added up as the record's totals add up their rows."""

    flops: int = 0
    forward: int = 0
    backward: int = 0
    steps: int = 0
    samples: int = 0
    client_rounds: int = 0
    frozen_blocks: int = 0
    sets: set = field(default_factory=set)

    def add(self, step: StepFlops, frozen: frozenset, samples: int, steps: int,
            n_frozen_blocks: int = 0) -> None:
        self.flops += counted_flops(step, samples)
        self.forward += round(step.forward / step.batch * samples)
        self.backward += round(step.backward / step.batch * samples)
        self.steps += steps
        self.samples += samples
        self.client_rounds += 1
        self.frozen_blocks += n_frozen_blocks
        self.sets.add((frozen, step.batch))


class FlopsPlanner:
    """Predicts methods' FLOPs; what several methods share is built once: the prepared data
    and model of a config (methods that change only the freeze policy, codec or strategy
    reuse them) and the FLOP counts of a model shape (every partition of one corpus)."""

    def __init__(self, device: Optional[torch.device] = None):
        self.device = device or torch.device("cpu")  # counts run on the meta device anyway
        self._prepared: dict[str, Prepared] = {}
        self._caches: dict[tuple, FlopCache] = {}

    def prepared(self, cfg: RunConfig, base: str) -> Prepared:
        """`prepare` of this method's config, reused across methods that read the same data
        into the same model."""
        key = _data_key(cfg)
        if key not in self._prepared:
            self._prepared[key] = prepare(cfg, base, self.device)
        prep = self._prepared[key]
        return replace(prep, cfg=cfg, method=base)

    def flop_cache(self, prep: Prepared) -> FlopCache:
        """The run's FlopCache (its head: sparse or dense as the run trains), one per model
        shape and head."""
        head = run_head(prep.cfg, prep.model, prep.objective)
        key = (type(prep.model).__name__, prep.model.config.to_json_string(), head.share,
               head.why, tuple(sorted(exchanged_names(prep.model))))
        if key not in self._caches:
            self._caches[key] = FlopCache(prep.model, head)
        return self._caches[key]

    def predict(self, cfg: RunConfig, method: str,
                freeze: Optional[FreezeConfig] = None) -> MethodFlops:
        """`method`'s FLOPs on `cfg` (`freeze`: the freeze settings to use instead of the
        config's, for an ffdapt method)."""
        if freeze is not None:
            cfg = replace(cfg, freeze=freeze)
        base, mcfg, _ = check(cfg, method)
        prep = self.prepared(mcfg, base)
        cache = self.flop_cache(prep)
        tally = _Tally()
        if base == "central":
            policy, frozen = None, []
            _central(prep, cache, tally)
        else:
            schedule = method_freeze_schedule(prep, cache)
            policy, frozen = schedule.describe(), schedule.record(prep.model)
            _federated(prep, cache, schedule, tally)
        return MethodFlops(
            method=method, base=base, partition=mcfg.partition.method, policy=policy,
            frozen=frozen, frozen_blocks_mean=tally.frozen_blocks / max(1, tally.client_rounds),
            client_rounds=tally.client_rounds, steps=tally.steps, samples=tally.samples,
            train_flops=tally.flops, forward_flops=tally.forward,
            backward_flops=tally.backward, counted_sets=len(tally.sets))

    def methods(self, cfg: RunConfig, methods: Sequence[str]) -> list[MethodFlops]:
        """Each method's FLOPs and its saving against fdapt on the same config (fdapt is
        counted as the reference whether it is asked for or not). Every method is checked
        before any data is read."""
        for m in methods:
            check(cfg, m)
        reference = self.predict(cfg, "fdapt").train_flops
        out = []
        for m in methods:
            row = self.predict(cfg, m)
            row.reference_flops = reference
            row.saved_pct = saved_pct(row.train_flops, reference)
            out.append(row)
        return out

    def setup(self, cfg: RunConfig) -> dict:
        """What the FLOPs are of: the model, the step, the schedule and each client's data."""
        prep = self.prepared(check(cfg, "fdapt")[1], "fdapt")
        bs = cfg.train.batch_size
        return {"name": cfg.name, "partition": cfg.partition.method,
                "model": type(prep.model).__name__,
                "parameters": parameter_count(prep.model),
                "transformer_blocks": len(transformer_blocks(prep.model)),
                "vocab": len(prep.tokenizer), "seq_len": cfg.data.max_seq_length,
                "batch_size": bs, "clients": cfg.fl.clients, "rounds": cfg.fl.rounds,
                "client_fraction": cfg.fl.client_fraction,
                "local_epochs": cfg.train.local_epochs,
                "max_local_steps": cfg.train.max_local_steps,
                "head": "sparse" if (head := run_head(cfg, prep.model,
                                                      prep.objective)).sparse else "dense",
                "sparse_head": head.why,
                "documents": len(prep.docs), "train_documents": len(prep.train_idx),
                "client_blocks": [len(b) for b in prep.client_blocks],
                "client_batches": [-(-len(b) // bs) for b in prep.client_blocks]}


def _federated(prep: Prepared, cache: FlopCache, schedule, tally: _Tally) -> None:
    """Every client round as the engine runs it: sampled clients, their frozen sets, their
    batches; a client whose round draws a `drop` fault trains nothing."""
    cfg = prep.cfg
    faults = Faults(cfg.faults, cfg.seed, window=2 * cfg.fl.clients)  # as FederatedTrainer
    for r, c, plan in round_plans(cfg, schedule):
        blocks = prep.client_blocks[c]
        frozen = plan.names if plan is not None else frozenset()
        step = batch_flops(cache, cfg.train.batch_size, blocks, frozen)
        if faults.draw(r, c) == "drop":
            samples, steps = 0, 0
        else:
            batches = list(client_round_batches(cfg, c, len(blocks), r))
            samples, steps = sum(len(b) for b in batches), len(batches)
        tally.add(step, frozen, samples, steps, len(plan.blocks) if plan is not None else 0)


def _central(prep: Prepared, cache: FlopCache, tally: _Tally) -> None:
    """The central baseline: the union's blocks, each round as many sequences as its plan."""
    cfg = prep.cfg
    union = union_blocks(prep)
    plan = central_plan(cfg, prep.client_blocks, len(union))
    stream = client_stream(cfg, 0, len(union))  # as CentralTrainer's
    step = batch_flops(cache, cfg.train.batch_size, union, frozenset())
    for r, n in enumerate(plan):
        tally.add(step, frozenset(), n, stream.count_batches(sum(plan[:r]), n))


def saved_pct(value: Optional[float], reference: Optional[float]) -> Optional[float]:
    """How much less than the reference, in % of it (negative: more); as `compare` has it."""
    if value is None or not reference:
        return None
    return 100.0 * (1.0 - value / reference)


def _data_key(cfg: RunConfig) -> str:
    """What `prepare` reads and builds depends on: the config less what a method name sets
    beside the model (freeze policy, upload codec, server strategy)."""
    d = cfg.to_dict()
    d.pop("freeze", None)
    for key in ("strategy", "upload_codec"):
        d["fl"].pop(key, None)
    return json.dumps(d, sort_keys=True, default=str)
