"""The torch.distributed world of a run and its client groups.

Launched by torchrun (or `bench run --nproc N`, which calls torchrun), every process reads its
rank from the environment. The world of W ranks is cut into W/G groups of G consecutive ranks
(`dist.ranks_per_client`); a group trains one client at a time, data-parallel over its ranks.
Nothing assumes one host: ranks find each other through torchrun's rendezvous, the device is
the local rank's, and every file a rank needs but rank 0 writes is sent to it (checkpoints).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.distributed as dist

from ..config.run import RunConfig
from ..errors import ConfigError
from . import collectives


@dataclass
class World:
    rank: int
    size: int
    local_rank: int
    local_size: int
    device: torch.device
    backend: str
    group_size: int  # G
    group_index: int
    group_rank: int  # rank inside the group
    group: object = None  # this rank's client group (a ProcessGroup; None when G = 1)
    bytes_moved: dict[str, int] = field(default_factory=dict)  # by collective purpose
    where: str = "preparing"  # what this rank is doing, for a failure's message

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def n_groups(self) -> int:
        return self.size // self.group_size

    @property
    def group_leader(self) -> bool:
        return self.group_rank == 0

    def barrier(self) -> None:
        collectives.barrier(self)

    def describe(self) -> dict:
        """The layout, for the run record."""
        return {"world_size": self.size, "ranks_per_client": self.group_size,
                "groups": self.n_groups, "backend": self.backend,
                "nodes": max(1, self.size // max(1, self.local_size))}

    def count(self, purpose: str, n_bytes: int) -> None:
        """Bytes this rank put into collectives, by purpose (gradients, aggregation, …)."""
        self.bytes_moved[purpose] = self.bytes_moved.get(purpose, 0) + int(n_bytes)


def launched() -> bool:
    """Whether this process was started by torchrun (or an equivalent launcher)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init_world(cfg: RunConfig, device_name: str) -> World:
    """Join the process group (gloo on CPU, nccl on CUDA) and build the client groups."""
    if not launched():
        raise ConfigError("dist.executor: distributed needs a launcher: torchrun "
                          "--nproc_per_node N -m bench run … --executor distributed, or "
                          "bench run … --nproc N")
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", size))
    G = cfg.dist.ranks_per_client
    if size % G:
        raise ConfigError(f"dist.ranks_per_client: {G} does not divide the world of {size} "
                          "ranks")
    use_cuda = device_name.startswith("cuda") or (device_name == "auto"
                                                   and torch.cuda.is_available())
    if use_cuda:
        device = torch.device("cuda", local_rank)
        # before the group: NCCL's object collectives put their buffers on the current device
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"  # threads: the host's cores shared among its ranks (run_threads)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=cfg.dist.timeout_s),
                                device_id=device if use_cuda else None)
    world = World(rank, size, local_rank, local_size, device, backend, G, rank // G, rank % G)
    # every rank must create every group, in the same order
    for g in range(size // G):
        ranks = list(range(g * G, (g + 1) * G))
        pg = dist.new_group(ranks) if G > 1 else None
        if g == world.group_index:
            world.group = pg
    return world


def close_world(world: Optional[World] = None) -> None:
    """Leave the process group cleanly (a rank that exits without it can abort at exit)."""
    if dist.is_initialized():
        try:
            collectives.barrier(world)
        finally:
            dist.destroy_process_group()
