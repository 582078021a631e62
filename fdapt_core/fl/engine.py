"""The round engine: federated rounds (fdapt / ffdapt) and the central baseline.

Both trainers share one skeleton: for each round, train, evaluate the held-out MLM loss,
checkpoint, append the round to the record. They differ only in what "train" means:

* `FederatedTrainer`: sample clients, let the executor run each client's local training from
  the global model, fold each upload into the strategy, and take the strategy's new model.
* `CentralTrainer`: one trainer on the union of the clients' text, with one optimizer and one
  schedule for the whole run; its round r trains as many sequences as fdapt's round r (the
  same tokens).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Iterator, Optional, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from ..checkpoint import Checkpoints, ResumeError
from ..config import RunConfig
from ..dist.collectives import broadcast_object
from ..dist.data_parallel import group_dp
from ..errors import FdaptError
from ..interrupt import StopRequested
from ..freeze import FreezePlan, FreezeSchedule, apply_freeze
from ..heads import ScoringHead
from ..objective import Objective
from ..profiling.flops import FlopCache, analytic_flops
from ..profiling.memory import PeakMemory
from ..seeding import derive
from .evaluate import HeldOut
from .codecs import Codec, Encoded, relative_error
from .fedavg import FedAvg
from .faults import Faults
from .local import BatchStream, LocalStats, amp_dtype, make_optimizer, train_steps


class TrainingError(FdaptError):
    """Training cannot go on (e.g. the central loss became NaN)."""


class Callbacks(Protocol):
    """Progress hooks; the library calls them, the CLI draws them. All optional."""

    def round_start(self, round_index: int, n_rounds: int, clients: Sequence[int]) -> None: ...
    def client_start(self, client: int, steps: int) -> None: ...
    def step(self, step: int) -> None: ...
    def client_end(self, client: int, stats: dict) -> None: ...
    def round_end(self, round_index: int, row: dict) -> None: ...


class NoCallbacks:
    def __getattr__(self, name):
        return lambda *a, **k: None


@dataclass
class Context:
    """What every trainer needs: the model, the data, the held-out set and where to save."""

    cfg: RunConfig
    model: nn.Module
    objective: Objective  # MLM or CLM: how a batch of blocks becomes inputs and labels
    client_blocks: list[torch.Tensor]
    heldout: HeldOut
    device: torch.device
    checkpoints: Checkpoints
    callbacks: Callbacks
    memory: PeakMemory
    flops: Optional[FlopCache] = None  # None: FLOPs not counted (profile.count_flops: false)
    world: Optional[object] = None  # dist.world.World of a distributed run
    # what can train, so what is exchanged, averaged and checkpointed: every parameter, or
    # a LoRA model's adapters (the base never changes); None: every parameter
    exchanged: Optional[frozenset[str]] = None
    # where the LM head runs: at the scored positions only, or at every one (heads.py)
    head: Optional[ScoringHead] = None
    # what a client elsewhere must share with this run to train its part of it: the
    # partition manifest's and the tokenizer's hashes (a Flower node checks them)
    fingerprint: Optional[dict[str, str]] = None

    def __post_init__(self):
        if self.exchanged is None:
            self.exchanged = frozenset(n for n, _ in self.model.named_parameters())

    def global_params(self) -> dict[str, torch.Tensor]:
        """A copy of the exchanged parameters: the global model as the federation holds it."""
        return snapshot(self.model, self.exchanged)

    @property
    def is_main(self) -> bool:
        """Whether this process evaluates, checkpoints and writes (rank 0, or the only one)."""
        return self.world is None or self.world.is_main


def load_params(model: nn.Module, params: dict[str, torch.Tensor]) -> None:
    """Copy `params` (all of the model's parameters, or some of them) into the model."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in params:
                p.copy_(params[name])


def snapshot(model: nn.Module, names: Optional[frozenset[str]] = None
             ) -> dict[str, torch.Tensor]:
    """A copy of the model's parameters (only `names`, if given)."""
    return {n: p.detach().clone() for n, p in model.named_parameters()
            if names is None or n in names}


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def to_cpu(obj):
    """A deep copy of a (nested) state with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def save_moments(opt: torch.optim.Optimizer, model: nn.Module) -> dict[str, dict]:
    """The optimizer's per-parameter state (AdamW: step, exp_avg, exp_avg_sq) by parameter
    name, on the CPU; parameters without state (no step taken) are left out."""
    return {n: to_cpu(opt.state[p]) for n, p in model.named_parameters() if p in opt.state}


def load_moments(opt: torch.optim.Optimizer, model: nn.Module,
                 moments: dict[str, dict]) -> None:
    """Give each parameter of a fresh optimizer the state saved under its name, if any.

    Through `load_state_dict`, which numbers the parameters in the groups' order and puts
    each state tensor where the optimizer wants it (device, dtype; `step` on the CPU unless
    fused); the groups' hyper-parameters stay the fresh ones."""
    position = {id(p): i for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
    sd = opt.state_dict()
    # copies: the optimizer steps its state in place, and the saved one must stay as it was
    # (a round stopped half-way is checkpointed with it)
    sd["state"] = {position[id(p)]: to_cpu(moments[n]) for n, p in model.named_parameters()
                   if id(p) in position and n in moments}
    opt.load_state_dict(sd)


def steps_per_round(n_blocks: int, cfg: RunConfig) -> int:
    """A client's local steps in one round: local epochs over its batches, capped."""
    steps = cfg.train.local_epochs * math.ceil(n_blocks / cfg.train.batch_size)
    return min(steps, cfg.train.max_local_steps or steps)


def sample_clients(cfg: RunConfig, round_index: int) -> list[int]:
    """Seeded client sampling; all clients when client_fraction is 1 (the study)."""
    k = cfg.fl.clients
    m = max(1, round(cfg.fl.client_fraction * k))
    if m >= k:
        return list(range(k))
    rng = np.random.default_rng(derive(cfg.seed, "sample", round_index))
    return sorted(int(c) for c in rng.choice(k, size=m, replace=False))


def client_weight(cfg: RunConfig, n_blocks: int) -> float:
    if cfg.fl.weighting == "batches":
        return float(math.ceil(n_blocks / cfg.train.batch_size))
    if cfg.fl.weighting == "tokens":
        return float(n_blocks)  # blocks are all max_seq_length long
    return 1.0


def client_stream(cfg: RunConfig, client: int, n_blocks: int) -> BatchStream:
    return BatchStream(n_blocks, cfg.train.batch_size,
                       lambda epoch: derive(cfg.seed, "order", client, epoch))


def seed_client_round(cfg: RunConfig, client: int, round_index: int) -> torch.Generator:
    """Reseed dropout (global RNG) and return the mask generator for (client, round)."""
    torch.manual_seed(derive(cfg.seed, "dropout", client, round_index))
    return torch.Generator().manual_seed(derive(cfg.seed, "mask", client, round_index))


class _RoundLoop:
    """The shared skeleton: rounds, evaluation, checkpoints, record rows."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.rounds: list[dict] = []
        self.flop_count_s = 0.0  # counting the steps' FLOPs before the first round

    def planned_counts(self, start_round: int) -> Iterator[tuple[torch.Tensor, frozenset]]:
        """(blocks, frozen set) of every step count the rounds from `start_round` will ask."""
        return iter(())

    def count_ahead(self, start_round: int) -> None:
        """Count every frozen set's step FLOPs before the rounds start. A count walks the
        model on the meta device (0.2–0.5 s each, whatever the model's size): done inside a
        round it was most of the round's time outside training at small sizes. It is a
        metering cost, not the federation's; the record keeps it as `flop_count_s`."""
        t0 = time.perf_counter()
        if self.ctx.flops is not None:
            for blocks, frozen in self.planned_counts(start_round):
                self.count_flops(blocks, frozen)
        self.flop_count_s = time.perf_counter() - t0

    # subclasses: train_round(r) -> dict (round row, without eval), state(), load_state()
    def run(self, start_round: int = 0) -> list[dict]:
        cfg, ctx = self.ctx.cfg, self.ctx
        dtype = amp_dtype(cfg.train, ctx.device)
        self.count_ahead(start_round)
        for r in range(start_round, cfg.fl.rounds):
            t0 = time.perf_counter()
            row = self.train_round(r)
            # one rank evaluates: the replicas are identical
            ev = ctx.heldout.evaluate(ctx.model, ctx.device, dtype) if ctx.is_main \
                else {"loss": None, "ppl": None, "wall_s": 0.0}
            ctx.memory.sample()
            row["mem_mb"] = ctx.memory.current_mb()
            row.update(eval_loss=ev["loss"], eval_ppl=ev["ppl"], eval_wall_s=ev["wall_s"],
                       wall_s=time.perf_counter() - t0, checkpoint_wall_s=None,
                       local_train_s=sum(c["wall_s"] for c in row["clients"]))
            # The checkpoint's copy of this row cannot know its own checkpoint time.
            t_ck = time.perf_counter()
            row["torch_threads"] = torch.get_num_threads()  # a count changed mid-run shows
            state = {"rounds": self.rounds + [dict(row)], "trainer": self.state(),
                     "torch_rng": torch.get_rng_state(), "torch_threads": row["torch_threads"]}
            if ctx.is_main:
                ctx.checkpoints.save(r, ctx.global_params(), state)
            row["checkpoint_wall_s"] = time.perf_counter() - t_ck
            self.rounds.append(row)
            ctx.callbacks.round_end(r, row)
        return self.rounds

    def resume(self) -> int:
        """Load the latest checkpoint; return the round to start from (0 if none)."""
        # rank 0 reads, every rank gets it: other hosts need not share the filesystem
        found = broadcast_object(self.ctx.world, self.ctx.checkpoints.load_latest()
                                 if self.ctx.is_main else None)
        if found is None:
            return 0
        r, params, state = found
        if self.ctx.cfg.train.threads is None and state.get("torch_threads"):
            # the count the run started with: another one sums in another order, and the
            # resumed run would part from the uninterrupted one in the last bits
            torch.set_num_threads(int(state["torch_threads"]))
        load_params(self.ctx.model, params)
        self.rounds = list(state["rounds"])
        self.load_state(state["trainer"])
        torch.set_rng_state(state["torch_rng"])
        return r + 1

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def count_flops(self, blocks: torch.Tensor, frozen: frozenset[str]):
        """FLOPs of one full batch of these blocks with this frozen set (counted once)."""
        ctx = self.ctx
        if ctx.flops is None:
            return None
        batch = min(ctx.cfg.train.batch_size, len(blocks))
        return ctx.flops.get(frozen, (batch, blocks.shape[1]))

    def client_row(self, client, st, plan: Optional[FreezePlan], step_flops,
                   bytes_down: int, bytes_up: int) -> dict:
        """One client's round in the record: work, time, FLOPs, parameters, traffic."""
        params = dict(self.ctx.model.named_parameters())
        n = sum(p.numel() for p in params.values())
        trainable = sum(params[k].numel() for k in self.ctx.exchanged
                        if not (plan and k in plan.names))
        self.ctx.memory.sample()
        return {"client": client, **asdict(st),
                "tokens_per_s": st.tokens / st.wall_s if st.wall_s > 0 else None,
                "samples_per_s": st.samples / st.wall_s if st.wall_s > 0 else None,
                "train_flops": round(step_flops.per_sequence() * st.samples)
                if step_flops else None,
                "step_flops": asdict(step_flops) if step_flops else None,
                "analytic_flops": analytic_flops(n, st.tokens),
                "trainable_params": trainable, "frozen_params": n - trainable,
                "frozen_blocks": list(plan.blocks) if plan else [],
                "frozen_embeddings": bool(plan and plan.embeddings),
                "bytes_down": bytes_down, "bytes_up": bytes_up}


class FederatedTrainer(_RoundLoop):
    """FedAvg rounds over K clients; `plans.plan(i, r)` is client i's frozen set in round r."""

    def __init__(self, ctx: Context, plans: Optional[FreezeSchedule | list[FreezePlan]],
                 strategy: FedAvg, executor, zero=None):
        super().__init__(ctx)
        # plans: a FreezeSchedule (per client and round) or a static list (one per client)
        self.plans = FreezeSchedule.of(plans)
        self.strategy, self.executor = strategy, executor
        self.client_opt_state: dict[int, dict] = {}  # optimizer_reset: persist
        self.codec = Codec(ctx.cfg.fl.upload_codec, ctx.cfg.fl.topk_fraction)
        self.client_residual: dict[int, dict[str, torch.Tensor]] = {}  # topk error feedback
        self.faults = Faults(ctx.cfg.faults, ctx.cfg.seed, window=2 * ctx.cfg.fl.clients)
        self.pending: Optional[dict] = None  # a partial-round checkpoint to continue from
        # a client trains data-parallel over its group's ranks (None: one process a client)
        self.dp = group_dp(ctx.world)
        self.zero = zero  # a dist.zero.ZeroTrainer when dist.engine is deepspeed

    def planned_counts(self, start_round):
        if not self.executor.trains_here:  # the nodes count their own
            return
        for r in range(start_round, self.ctx.cfg.fl.rounds):
            for c in sample_clients(self.ctx.cfg, r):
                plan = self.plans.plan(c, r) if self.plans is not None else None
                yield self.ctx.client_blocks[c], plan.names if plan else frozenset()

    def train_round(self, r: int) -> dict:
        ctx, cfg = self.ctx, self.ctx.cfg
        clients = sample_clients(cfg, r)
        ctx.callbacks.round_start(r, cfg.fl.rounds, clients)
        global_params = ctx.global_params()
        self.strategy.begin_round(global_params)
        stats: list[dict] = []
        if self.pending is not None and self.pending["round"] == r:  # resume inside a round
            stats = list(self.pending["rows"])
            self.strategy.load_partial_state(self.pending["strategy"])
            self.load_state(self.pending["trainer"])
            self.pending = None
        done = {row["client"] for row in stats}
        t0 = time.perf_counter()
        try:  # rows arrive as clients finish, in client order; then the executor's summary
            extra = drain(self.executor.run_round(self, r, [c for c in clients if c not in done],
                                                  global_params), stats.append)
        except StopRequested:
            if ctx.world is not None:  # ranks stop at different steps: no partial round
                raise
            # keep the clients this round has finished; the interrupted one starts over
            ctx.checkpoints.save_partial(r, {"round": r, "rows": stats,
                                             "strategy": self.strategy.partial_state(),
                                             "trainer": self.state()})
            raise
        t_agg = time.perf_counter()
        accepted = list(self.strategy.accepted)
        # too few valid updates: the round changes nothing rather than trusting one or two
        aggregated = len(accepted) >= cfg.faults.min_clients
        load_params(ctx.model, self.strategy.finish() if aggregated else global_params)
        agg_s = time.perf_counter() - t_agg
        return {"round": r, "clients": stats, "train_wall_s": t_agg - t0,
                "aggregate_wall_s": agg_s, "accepted": accepted, "aggregated": aggregated,
                "dropped": [s["client"] for s in stats if s.get("dropped")],
                "rejected": {str(s["client"]): s["rejected"] for s in stats
                             if s.get("rejected")}, **(extra or {})}

    def train_client(self, r: int, client: int, global_params: dict[str, torch.Tensor]
                     ) -> tuple[dict, Optional[dict[str, torch.Tensor]]]:
        """One client's round, from the global model: (its row, its upload or None if it
        dropped). The client's half (`client_round`) then the server's (`receive`), as a
        Flower federation runs them on two machines. The upload holds the model's own tensors
        until the next client loads; the row's `rejected` is final only after `settle`."""
        self.ctx.callbacks.client_start(client, self.local_steps(client))
        row, encoded = self.client_round(r, client, global_params)
        upload = self.receive(row, encoded, global_params)
        self.ctx.callbacks.client_end(client, row)
        return row, upload

    def client_round(self, r: int, client: int, global_params: dict[str, torch.Tensor]
                     ) -> tuple[dict, Optional[Encoded]]:
        """What runs at the client: load the global model, train its round, encode what it
        sends. (its row, the upload as it travels, or None if it dropped.)"""
        ctx, cfg = self.ctx, self.ctx.cfg
        model, blocks = ctx.model, ctx.client_blocks[client]
        plan = self.plans.plan(client, r) if self.plans is not None else None
        step_flops = self.count_flops(blocks, plan.names if plan else frozenset())
        weight = client_weight(cfg, len(blocks))
        fault = self.faults.draw(r, client)
        if fault == "drop":  # gone before it downloaded anything
            return self.dropped_row(r, client, "drop"), None
        load_params(model, global_params)
        apply_freeze(model, plan)
        steps = steps_per_round(len(blocks), cfg)
        mask_gen = seed_client_round(cfg, client, r)
        stream = client_stream(cfg, client, len(blocks))
        start = r * cfg.train.local_epochs * stream.steps_per_epoch  # round r = its own epochs
        if self.zero is not None:  # a DeepSpeed ZeRO engine trains; the model takes its result
            self.zero.reset(global_params)
            st = self.zero.train(plan.names if plan else frozenset(), blocks,
                                 stream.take(start, steps), steps, ctx.objective, mask_gen,
                                 ctx.callbacks.step)
            self.zero.copy_to(model)
        else:
            st = self.train_local(client, stream.take(start, steps), steps, mask_gen,
                                  global_params)
        params = dict(model.named_parameters())
        # What crosses the network: the whole global model down (a LoRA base is already
        # there: its adapters); up, only what changed (frozen blocks stay home unless
        # fl.send_frozen), in the dtype it is held in.
        sent = {n: p for n, p in params.items()
                if n in global_params and (cfg.fl.send_frozen or p.requires_grad)}
        # encoded by the client (fl.upload_codec), decoded by the server (`receive`)
        encoded, residual = self.codec.encode(sent, global_params,
                                              self.client_residual.get(client))
        if residual is not None:
            self.client_residual[client] = residual
        row = self.client_row(client, st, plan, step_flops, nbytes(global_params.values()),
                              encoded.nbytes)
        row.update(weight=weight, dropped=False, rejected=None, fault=fault,
                   bytes_up_dense=nbytes(sent.values()),
                   codec_error=None if self.codec.name == "none" else relative_error(
                       self.codec.decode(encoded, global_params), sent, global_params))
        apply_freeze(model, None)
        return row, encoded

    def dropped_row(self, r: int, client: int, fault: str, error: Optional[str] = None
                    ) -> dict:
        """The row of a client that sent nothing back this round: a drawn `drop`, or (`lost`)
        a node of a real federation that died, errored or timed out."""
        blocks = self.ctx.client_blocks[client]
        plan = self.plans.plan(client, r) if self.plans is not None else None
        step_flops = self.count_flops(blocks, plan.names if plan else frozenset())
        row = self.client_row(client, LocalStats(), plan, step_flops, 0, 0)
        row.update(weight=client_weight(self.ctx.cfg, len(blocks)), dropped=True,
                   rejected=None, fault=fault)
        if error is not None:
            row["error"] = error
        return row

    def receive(self, row: dict, encoded: Optional[Encoded],
                global_params: dict[str, torch.Tensor]) -> Optional[dict[str, torch.Tensor]]:
        """What the server does with a client's upload as it arrives: decode it, (faults:
        corrupt it as the network or client would), and screen it on its own. The row gets
        `rejected` and `update_norm`; `settle` judges the rest."""
        if encoded is None:
            return None
        received = self.codec.decode(encoded, global_params)
        fault = row.get("fault")
        upload = self.faults.corrupt(fault, received, global_params) if fault else received
        rejected, norm = self.faults.check(upload, global_params)
        row.update(rejected=rejected, update_norm=norm if math.isfinite(norm) else None)
        return upload

    def local_steps(self, client: int) -> int:
        return steps_per_round(len(self.ctx.client_blocks[client]), self.ctx.cfg)

    def fold_now(self, row: dict, upload: dict[str, torch.Tensor]) -> bool:
        """Fold a screened-so-far upload in at once if the screen judges each update on its
        own (any order then folds the same); False: the caller holds it for `settle`."""
        if self.faults.needs_history:
            return False
        self.strategy.accumulate(row["client"], upload, row["weight"])
        return True

    def client_states(self, clients: Sequence[int]) -> dict[str, dict]:
        """What these clients keep between rounds: persisted optimizer state
        (optimizer_reset: persist) and the topk codec's error feedback."""
        return {"opt": {c: self.client_opt_state[c] for c in clients
                        if c in self.client_opt_state},
                "residual": {c: self.client_residual[c] for c in clients
                             if c in self.client_residual}}

    def adopt_client_states(self, states: dict[str, dict]) -> None:
        """Take clients' states trained elsewhere (another rank's group)."""
        self.client_opt_state.update(states["opt"])
        self.client_residual.update(states["residual"])

    def settle(self, row: dict, upload: Optional[dict[str, torch.Tensor]]) -> None:
        """The server's screen of one client's finished round; call it in client order.

        Sets the row's final `rejected`, and records an accepted norm in the screen's history
        before the next client is judged. An accepted upload, where this process holds it, is
        folded into the strategy (a rank may judge clients another group trained: their uploads
        arrive with the merge)."""
        if row["dropped"] or row["rejected"]:
            return
        row["rejected"] = self.faults.judge(row["update_norm"])
        if row["rejected"] is None:
            self.faults.accept(row["update_norm"])
            if upload is not None:
                self.strategy.accumulate(row["client"], upload, row["weight"])

    def train_local(self, client: int, batches, steps: int, mask_gen: torch.Generator,
                    global_params: dict[str, torch.Tensor]) -> LocalStats:
        """The plain loop with a fresh (or the client's persisted) AdamW and schedule.

        Persisted AdamW state is kept by parameter name, so a frozen set that changes from
        round to round gives every parameter its own moments back: one frozen this round keeps
        what it left with until it trains again."""
        ctx, cfg = self.ctx, self.ctx.cfg
        persist = cfg.train.optimizer_reset == "persist"
        total = steps * cfg.fl.rounds if persist else steps
        opt, sched = make_optimizer(ctx.model, cfg.train, total, ctx.device)
        kept = self.client_opt_state.get(client) if persist else None
        if kept is not None:
            load_moments(opt, ctx.model, kept["moments"])
            sched.load_state_dict(kept["sched"])
            # the schedule's state leaves the groups' learning rate at step 0's: set it
            for group, lr in zip(opt.param_groups, sched.get_last_lr()):
                group["lr"] = lr
        st = train_steps(ctx.model, ctx.client_blocks[client], batches,
                         optimizer=opt, scheduler=sched, cfg=cfg.train,
                         objective=ctx.objective,
                         mask_gen=mask_gen, device=ctx.device, on_step=ctx.callbacks.step,
                         dp=self.dp, prox_mu=self.strategy.prox_mu, prox_ref=global_params,
                         head=ctx.head)
        if persist:
            moments = dict(kept["moments"]) if kept is not None else {}
            moments.update(save_moments(opt, ctx.model))
            self.client_opt_state[client] = {"moments": moments, "sched": sched.state_dict()}
        return st

    def resume(self) -> int:
        start = super().resume()
        # a distributed run never leaves a partial round: its ranks stop together
        self.pending = self.ctx.checkpoints.load_partial(start) if self.ctx.world is None \
            else None
        return start

    def state(self) -> dict:
        return {"strategy": self.strategy.state_dict(), "client_opt": self.client_opt_state,
                "client_residual": self.client_residual,
                "accepted_norms": list(self.faults.accepted_norms)}

    def load_state(self, state: dict) -> None:
        self.strategy.load_state_dict(state["strategy"])
        if any("moments" not in s for s in state["client_opt"].values()):
            raise ResumeError("--resume: the checkpoint holds the clients' optimizer state by "
                              "position (an older version), which cannot be matched to "
                              "parameters; start the run again without --resume")
        self.client_opt_state = dict(state["client_opt"])
        self.client_residual = dict(state.get("client_residual", {}))
        self.faults.accepted_norms = list(state.get("accepted_norms", []))


class SequentialExecutor:
    """All sampled clients one after another in this process, on one model object.

    Memory stays flat in the number of clients: one model, one optimizer at a time, and the
    strategy's running sum."""

    name = "sequential"
    trains_here = True  # the clients train in this process

    def run_round(self, trainer: FederatedTrainer, r: int, clients: Sequence[int],
                  global_params: dict[str, torch.Tensor]) -> Iterator[dict]:
        """Train `clients` in turn (client order), screening and folding in each one's upload
        and yielding its row as soon as it is done."""
        for c in clients:
            row, upload = trainer.train_client(r, c, global_params)
            trainer.settle(row, upload)
            yield row


def drain(rows: Iterator[dict], sink) -> Optional[dict]:
    """Pass every row of an executor's round to `sink`; return the round's summary (the
    generator's return value: extra fields for the round's row, or None)."""
    while True:
        try:
            sink(next(rows))
        except StopIteration as done:
            return done.value


class CentralTrainer(_RoundLoop):
    """DAPT on the union of the clients' text: the upper reference.

    `plan[r]` is the number of sequences of round r (fdapt's that round, by default: the same
    tokens), drawn from one endless stream over the union, with one optimizer and one schedule
    over all of them. Its batches are full where fdapt's clients end epochs on short ones, so
    it may take fewer steps for the same tokens."""

    def __init__(self, ctx: Context, union_blocks: torch.Tensor, plan: list[int]):
        super().__init__(ctx)
        self.blocks, self.plan = union_blocks, plan
        self.stream = client_stream(ctx.cfg, 0, len(union_blocks))
        self.opt, self.sched = make_optimizer(
            ctx.model, ctx.cfg.train, self.stream.count_batches(0, sum(plan)), ctx.device)
        self.dp = group_dp(ctx.world, whole_world=True)  # data-parallel over every rank

    def planned_counts(self, start_round):
        yield self.blocks, frozenset()

    def train_round(self, r: int) -> dict:
        ctx, cfg = self.ctx, self.ctx.cfg
        ctx.callbacks.round_start(r, cfg.fl.rounds, [0])
        if ctx.world is not None:
            ctx.world.where = f"in round {r + 1} (central, data-parallel)"
        start = sum(self.plan[:r])
        steps = self.stream.count_batches(start, self.plan[r])
        step_flops = self.count_flops(self.blocks, frozenset())
        mask_gen = seed_client_round(cfg, 0, r)
        ctx.callbacks.client_start(0, steps)
        t0 = time.perf_counter()
        st = train_steps(ctx.model, self.blocks, self.stream.take_sequences(start, self.plan[r]),
                         optimizer=self.opt, scheduler=self.sched, cfg=cfg.train,
                         objective=ctx.objective,
                         mask_gen=mask_gen, device=ctx.device, on_step=ctx.callbacks.step,
                         dp=self.dp, head=ctx.head)
        if not math.isfinite(st.loss):  # no server to reject it: the run cannot go on
            raise TrainingError(f"central training diverged in round {r + 1}: the mean "
                                f"training loss is {st.loss}; lower train.lr (now "
                                f"{cfg.train.lr:g}) or set train.max_grad_norm")
        row = self.client_row("central", st, None, step_flops, 0, 0)
        row["weight"] = 1.0
        ctx.callbacks.client_end(0, row)
        return {"round": r, "clients": [row], "train_wall_s": time.perf_counter() - t0,
                "aggregate_wall_s": 0.0}

    def state(self) -> dict:
        return {"opt": self.opt.state_dict(), "sched": self.sched.state_dict()}

    def load_state(self, state: dict) -> None:
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
