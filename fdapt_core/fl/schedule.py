"""Who trains what in a round, all seeded from the run's config: the sampled clients, a
client's local steps, its weight in the average, its batch order and its round's mask
generator. Server and client halves (and every rank) compute the same answers."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..config.run import RunConfig
from ..seeding import derive
from .local import BatchStream


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


def client_round_batches(cfg: RunConfig, client: int, n_blocks: int, round_index: int):
    """The batches (block indices) a client trains in a round: its own epochs from
    round_index × local_epochs on, capped at its steps per round. The client's loop, the
    central baseline's budget and `bench flops` all take them from here."""
    stream = client_stream(cfg, client, n_blocks)
    start = round_index * cfg.train.local_epochs * stream.steps_per_epoch
    return stream.take(start, steps_per_round(n_blocks, cfg))


def round_plans(cfg: RunConfig, plans, start_round: int = 0):
    """(round, client, FreezePlan or None) of every client round from `start_round` on, in
    the order the rounds train them (`plans`: a FreezeSchedule, or None)."""
    for r in range(start_round, cfg.fl.rounds):
        for c in sample_clients(cfg, r):
            yield r, c, plans.plan(c, r) if plans is not None else None


def seed_client_round(cfg: RunConfig, client: int, round_index: int) -> torch.Generator:
    """Reseed dropout (global RNG) and return the mask generator for (client, round)."""
    torch.manual_seed(derive(cfg.seed, "dropout", client, round_index))
    return torch.Generator().manual_seed(derive(cfg.seed, "mask", client, round_index))
