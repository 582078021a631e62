"""The distributed executor: the sampled clients of a round dealt to client groups.

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
from typing import Iterator, Sequence

import torch

from ..fl.params import to_cpu
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


class DistributedExecutor:
    name = "distributed"
    trains_here = True

    def __init__(self, world: World):
        self.world = world

    def run_round(self, trainer, r: int, clients: Sequence[int],
                  global_params: dict[str, torch.Tensor]) -> Iterator[dict]:
        """This rank's group trains its share of `clients`; then every client's row is
        yielded in client order, screened as the sequential executor screens it, and the
        groups' sums are merged. Returns the round's per-rank summary."""
        world = self.world
        steps = {c: trainer.local_steps(c) for c in clients}
        mine = deal(clients, steps, world.n_groups)[world.group_index]
        lead = world.group_leader  # the G ranks of a group hold the same uploads: one sends
        held: dict[int, dict[str, torch.Tensor]] = {}  # uploads waiting for the screen
        moved_before = dict(world.bytes_moved)
        t0 = time.perf_counter()
        my_rows = []
        for c in mine:
            world.where = f"in round {r + 1} on client {c}"
            if _injected(world, r):
                raise InjectedFailure(f"injected failure ({FAIL_ENV})")
            row, upload = trainer.train_client(r, c, global_params)
            if lead and upload is not None and row["rejected"] is None \
                    and not trainer.fold_now(row, upload):
                held[c] = to_cpu(upload)  # the next client overwrites the model
            my_rows.append({**row, "rank": world.rank, "group": world.group_index})
        world.where = f"in round {r + 1} aggregating"
        train_s = time.perf_counter() - t0
        # every client's row and what it keeps between rounds, on every rank
        shared = gather_objects(world, {"rows": my_rows if lead else [],
                                        "states": trainer.client.states(mine if lead else [])})
        by_client = {x["client"]: x for s in shared for x in s["rows"]}
        for s in shared:
            trainer.client.adopt_states(s["states"])
        for c in clients:  # the sequential executor's screen, in client order, on every rank
            # an upload not held is another group's, or already folded in
            trainer.settle(by_client[c], held.pop(c, None))
            yield by_client[c]
        merge_strategy(world, trainer.strategy, lead=lead)
        ranks = gather_objects(world, {
            "rank": world.rank, "group": world.group_index, "clients": mine,
            "local_train_s": sum(x["wall_s"] for x in my_rows), "round_train_s": train_s,
            "tokens": sum(x["tokens"] for x in my_rows) // world.group_size,
            "mem_mb": trainer.ctx.memory.current_mb(),
            "bytes_collectives": {k: v - moved_before.get(k, 0)
                                  for k, v in world.bytes_moved.items()}})
        for x in ranks:
            x["tokens_per_s"] = x["tokens"] / x["local_train_s"] if x["local_train_s"] else None
        world.where = f"after round {r + 1}"
        return {"ranks": ranks}


def merge_strategy(world: World, strategy, lead: bool) -> None:
    """Sum the groups' running sums over the world into `strategy`; only a group's leader
    contributes (its G ranks hold the same sums)."""
    strategy.merge(lambda ts: all_reduce(ts, world.device, count=world.count,
                                       purpose="aggregation"),
                 lambda obj: gather_objects(world, obj), contribute=lead)
