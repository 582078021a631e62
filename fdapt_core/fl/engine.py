"""The round engine: federated rounds (fdapt / ffdapt) and the central baseline.

Both trainers share one skeleton: for each round, train, evaluate the held-out MLM loss,
checkpoint, append the round to the record. They differ only in what "train" means:

* `FederatedTrainer`, the server half: sample clients, write each one's `RoundTask`, let the
  executor carry it to the client half (`fl/client.py`) and the `ClientUpdate` back, then
  decode, screen and fold each upload into the strategy, and take the strategy's new model.
* `CentralTrainer`: one trainer on the union of the clients' text, with one optimizer and one
  schedule for the whole run; its round r trains as many sequences as fdapt's round r (the
  same tokens).
"""
from __future__ import annotations

import math
import time
from typing import Iterator, Optional, Sequence

import torch

from ..dist.collectives import broadcast_object
from ..dist.data_parallel import group_dp
from ..errors import FdaptError
from ..interrupt import StopRequested
from ..freeze import FreezePlan, FreezeSchedule
from .client import Client, dropped_row
from .codecs import Codec
from .context import Context
from .fedavg import FedAvg
from .faults import Faults
from .local import amp_dtype, make_optimizer, train_steps
from .messages import ClientUpdate, RoundTask
from .params import load_params
from .rows import client_row, step_flops
from .schedule import (client_stream, round_plans, sample_clients, seed_client_round,
                       steps_per_round)


class TrainingError(FdaptError):
    """Training cannot go on (e.g. the central loss became NaN)."""


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
        return step_flops(self.ctx, blocks, frozen)


class FederatedTrainer(_RoundLoop):
    """FedAvg rounds over K clients; `plans.plan(i, r)` is client i's frozen set in round r."""

    def __init__(self, ctx: Context, plans: Optional[FreezeSchedule | list[FreezePlan]],
                 strategy: FedAvg, executor, zero=None):
        super().__init__(ctx)
        # plans: a FreezeSchedule (per client and round) or a static list (one per client)
        self.plans = FreezeSchedule.of(plans)
        self.strategy, self.executor = strategy, executor
        self.codec = Codec(ctx.cfg.fl.upload_codec, ctx.cfg.fl.topk_fraction)
        self.faults = Faults(ctx.cfg.faults, ctx.cfg.seed, window=2 * ctx.cfg.fl.clients)
        self.pending: Optional[dict] = None  # a partial-round checkpoint to continue from
        # the client half, for executors that train here: data-parallel over this rank's group
        # (None: one process a client), on a ZeRO engine under dist.engine: deepspeed
        self.client = Client(ctx, self.codec, group_dp(ctx.world), zero)

    def planned_counts(self, start_round):
        if not self.executor.trains_here:  # the nodes count their own
            return
        for _, c, plan in round_plans(self.ctx.cfg, self.plans, start_round):
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

    def task(self, r: int, client: int, global_params: dict[str, torch.Tensor]) -> RoundTask:
        """The server's instructions to `client` for round r: the global model, its frozen
        set, the fault drawn for it (faults.*: simulated), the strategy's proximal weight."""
        plan = self.plans.plan(client, r) if self.plans is not None else None
        return RoundTask(r, client, global_params, plan, self.faults.draw(r, client),
                         self.strategy.prox_mu)

    def train_client(self, r: int, client: int, global_params: dict[str, torch.Tensor]
                     ) -> tuple[dict, Optional[dict[str, torch.Tensor]]]:
        """One client's round in this process: (its row, its upload or None if it dropped).
        The task goes to the client half, its update comes back to `receive`, as a Flower
        federation carries them between two machines. The upload holds the model's own
        tensors until the next client loads; the row's `rejected` is final after `settle`."""
        self.ctx.callbacks.client_start(client, self.local_steps(client))
        update = self.client.train(self.task(r, client, global_params))
        upload = self.receive(update, global_params)
        self.ctx.callbacks.client_end(client, update.row)
        return update.row, upload

    def dropped_row(self, task: RoundTask, fault: str, error: Optional[str] = None) -> dict:
        """The row of a client that sent nothing back (a node of a real federation that
        died, errored or timed out: `lost`)."""
        return dropped_row(self.ctx, task, fault, error)

    def receive(self, update: ClientUpdate, global_params: dict[str, torch.Tensor]
                ) -> Optional[dict[str, torch.Tensor]]:
        """What the server does with a client's update as it arrives: decode the upload,
        (faults: corrupt it as the network or client would), and screen it on its own. The
        row gets `rejected` and `update_norm`; `settle` judges the rest."""
        if update.encoded is None:
            return None
        row = update.row
        received = self.codec.decode(update.encoded, global_params)
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

    def resume(self) -> int:
        start = super().resume()
        # a distributed run never leaves a partial round: its ranks stop together
        self.pending = self.ctx.checkpoints.load_partial(start) if self.ctx.world is None \
            else None
        return start

    def state(self) -> dict:
        return {"strategy": self.strategy.state_dict(), **self.client.state_dict(),
                "accepted_norms": list(self.faults.accepted_norms)}

    def load_state(self, state: dict) -> None:
        self.strategy.load_state_dict(state["strategy"])
        self.client.load_state_dict(state)
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
        flops = self.count_flops(self.blocks, frozenset())
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
        row = client_row(ctx, "central", st, None, flops, 0, 0)
        row["weight"] = 1.0
        ctx.callbacks.client_end(0, row)
        return {"round": r, "clients": [row], "train_wall_s": time.perf_counter() - t0,
                "aggregate_wall_s": 0.0}

    def state(self) -> dict:
        return {"opt": self.opt.state_dict(), "sched": self.sched.state_dict()}

    def load_state(self, state: dict) -> None:
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
