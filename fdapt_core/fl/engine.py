"""The round loop both trainers share, and the central baseline.

`RoundLoop.run`: for each round, train, evaluate the held-out loss, checkpoint, append the
round to the record. The trainers differ only in what "train" means:

* `server.Server` (fdapt / ffdapt): configure the round's tasks, let the transport carry them
  to the clients and their answers back, screen and fold each one, aggregate.
* `CentralTrainer`: one trainer on the union of the clients' text, with one optimizer and one
  schedule for the whole run; its round r trains as many sequences as fdapt's round r (the
  same tokens).
"""
from __future__ import annotations

import math
import time
from typing import Iterator

import torch

from ..dist.collectives import broadcast_object
from ..dist.data_parallel import group_dp
from ..errors import FdaptError
from .context import Context
from .local import amp_dtype, make_optimizer, train_steps
from .params import load_params
from .rows import RoundRow, client_row, step_flops
from .schedule import client_stream, seed_client_round


class TrainingError(FdaptError):
    """Training cannot go on (e.g. the central loss became NaN)."""


class RoundLoop:
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

    # subclasses: train_round(r) -> RoundRow (without the evaluation), state(), load_state()
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
            row.mem_mb = ctx.memory.current_mb()
            row.eval_loss, row.eval_ppl, row.eval_wall_s = ev["loss"], ev["ppl"], ev["wall_s"]
            row.wall_s = time.perf_counter() - t0
            row.local_train_s = sum(c.wall_s for c in row.clients)
            row.torch_threads = torch.get_num_threads()  # a count changed mid-run shows
            # The checkpoint's copy of this row cannot know its own checkpoint time.
            t_ck = time.perf_counter()
            state = {"rounds": self.rounds + [row.to_dict()], "trainer": self.state(),
                     "torch_rng": torch.get_rng_state(), "torch_threads": row.torch_threads}
            if ctx.is_main:
                ctx.checkpoints.save(r, ctx.global_params(), state)
            row.checkpoint_wall_s = time.perf_counter() - t_ck
            self.rounds.append(row.to_dict())  # the record's rows: JSON as they are written
            ctx.callbacks.round_end(r, self.rounds[-1])
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


class CentralTrainer(RoundLoop):
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
        row.weight = 1.0
        ctx.callbacks.client_end(0, row.to_dict())
        return RoundRow(r, [row], train_wall_s=time.perf_counter() - t0, aggregate_wall_s=0.0)

    def state(self) -> dict:
        return {"opt": self.opt.state_dict(), "sched": self.sched.state_dict()}

    def load_state(self, state: dict) -> None:
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
