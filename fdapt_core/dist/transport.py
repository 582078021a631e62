"""The torch.distributed transport: the sampled clients of a round dealt to client groups.

Each round, every rank deals the clients the same way (longest first, to the least-loaded
group; ties by index), so no rank has to be told what to do. A group trains its clients one
after another, data-parallel over its ranks. Then every rank learns every client's row (its
update's norm and finite check among them) and applies the server's screen in client order,
exactly as the sequential executor does, so both accept the same updates; each group folds its
own accepted uploads into its copy of the strategy's running sums, in client order. The groups
merge those sums with collectives, only over the tensors some client sent (a block frozen on
every client this round never moves), and every rank finishes the round with the same new
global model.

While the screen compares norms with earlier ones (`faults.max_norm_ratio`), a group leader
keeps its clients' uploads (on the CPU) until the screen has spoken; without it an update is
judged on its own and is folded in as soon as it is trained.
"""
from __future__ import annotations

import os
import time
from typing import Iterator, Optional, Sequence, Union

from ..fl.client import Client
from ..fl.context import Context
from ..fl.messages import ClientUpdate, Relayed, RoundTask
from ..fl.schedule import steps_per_round
from .collectives import all_reduce, gather_objects
from .world import World

FAIL_ENV = "FDAPT_FAIL_AT"  # testing hook: "rank=R,round=N" (N counted from 1) raises there


def deal(clients: Sequence[int], steps: dict[int, int], n_groups: int) -> list[list[int]]:
    """Clients per group: longest first to the least-loaded group (ties: lowest index)."""
    load = [0] * n_groups
    groups: list[list[int]] = [[] for _ in range(n_groups)]
    for c in sorted(clients, key=lambda c: (-steps[c], c)):
        g = min(range(n_groups), key=lambda i: (load[i], i))
        groups[g].append(c)
        load[g] += steps[c]
    return [sorted(g) for g in groups]


class InjectedFailure(RuntimeError):
    """Raised by the FDAPT_FAIL_AT testing hook."""


def _injected(world: World, round_index: int) -> bool:
    spec = os.environ.get(FAIL_ENV)
    if not spec:
        return False
    kv = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
    return int(kv.get("rank", -1)) == world.rank and int(kv.get("round", -1)) == round_index + 1


class DistributedTransport:
    """A round's clients on this torch.distributed world's client groups.

    Every rank holds a replica of the server; this transport hands it this group's answers
    as they are trained (a group's leader only: its G ranks hold the same uploads), then,
    after one gather, every other client's row as its group's leader screened it (`Relayed`).
    `reduce` merges the groups' sums, so every rank ends the round with the same model."""

    trains_here = True

    def __init__(self, world: World):
        self.world = world
        self.ctx: Optional[Context] = None
        self.client: Optional[Client] = None
        self.summary: dict = {}
        self.round = -1

    def bind(self, ctx: Context, client: Client) -> None:
        """The run's parts (its client blocks, config and meters) and its client half."""
        self.ctx, self.client = ctx, client

    def exchange(self, tasks: Sequence[RoundTask]
                 ) -> Iterator[Union[ClientUpdate, Relayed]]:
        world, client, ctx = self.world, self.client, self.ctx
        steps = {t.client: steps_per_round(len(ctx.client_blocks[t.client]), ctx.cfg)
                 for t in tasks}
        mine = deal([t.client for t in tasks], steps, world.n_groups)[world.group_index]
        lead = world.group_leader
        moved_before = dict(world.bytes_moved)
        t0 = time.perf_counter()
        my_rows = []
        for task in tasks:
            if task.client not in mine:
                continue
            world.where = f"in round {task.round + 1} on client {task.client}"
            if _injected(world, task.round):
                raise InjectedFailure(f"injected failure ({FAIL_ENV})")
            update = client.train(task)
            update.row.rank, update.row.group = world.rank, world.group_index
            my_rows.append(update.row)
            if lead:  # the server screens it (the row gains its verdict) and folds or holds it
                yield update
        r = self.round = tasks[0].round if tasks else self.round + 1
        world.where = f"in round {r + 1} aggregating"
        train_s = time.perf_counter() - t0
        # every client's screened row and what it keeps between rounds, on every rank
        shared = gather_objects(world, {"rows": my_rows if lead else [],
                                        "states": client.states(mine if lead else [])})
        for s in shared:
            client.adopt_states(s["states"])
        for s in shared:
            for row in s["rows"]:
                if not (lead and row.client in mine):
                    yield Relayed(row)
        self.summary = {"rank": world.rank, "group": world.group_index, "clients": mine,
                        "local_train_s": sum(x.wall_s for x in my_rows),
                        "round_train_s": train_s,
                        "tokens": sum(x.tokens for x in my_rows) // world.group_size,
                        "moved_before": moved_before}

    def reduce(self, strategy) -> dict:
        """Sum the groups' running sums over the world; the round's per-rank summary."""
        world, mine = self.world, self.summary
        merge_strategy(world, strategy, lead=world.group_leader)
        moved_before = mine.pop("moved_before")
        ranks = gather_objects(world, {
            **mine, "mem_mb": self.ctx.memory.current_mb(), "bytes_collectives": {k: v - moved_before.get(k, 0)
                                          for k, v in world.bytes_moved.items()}})
        for x in ranks:
            x["tokens_per_s"] = x["tokens"] / x["local_train_s"] if x["local_train_s"] else None
        world.where = f"after round {self.round + 1}"
        return {"ranks": ranks}

    def state_dict(self) -> dict:
        return self.client.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.client.load_state_dict(state)


def merge_strategy(world: World, strategy, lead: bool) -> None:
    """Sum the groups' running sums over the world into `strategy`; only a group's leader
    contributes (its G ranks hold the same sums)."""
    strategy.merge(lambda ts: all_reduce(ts, world.device, count=world.count,
                                       purpose="aggregation"),
                 lambda obj: gather_objects(world, obj), contribute=lead)
