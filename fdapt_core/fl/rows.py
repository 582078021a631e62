"""A client's round as the run record keeps it: its work, time, FLOPs, parameters and traffic."""
from __future__ import annotations

from dataclasses import asdict
from typing import Optional

import torch

from ..freeze import FreezePlan
from ..profiling.flops import FlopCache, StepFlops, analytic_flops
from .context import Context
from .local import LocalStats


def step_flops(ctx: Context, blocks: torch.Tensor, frozen: frozenset[str]
               ) -> Optional[StepFlops]:
    """FLOPs of one full batch of these blocks with this frozen set (counted once; None when
    the run does not count them)."""
    if ctx.flops is None:
        return None
    return batch_flops(ctx.flops, ctx.cfg.train.batch_size, blocks, frozen)


def batch_flops(cache: FlopCache, batch_size: int, blocks: torch.Tensor,
                frozen: frozenset[str]) -> StepFlops:
    """One full batch's FLOPs from `cache` (a client with fewer blocks than a batch: all)."""
    return cache.get(frozen, (min(batch_size, len(blocks)), blocks.shape[1]))


def counted_flops(flops: StepFlops, samples: int) -> int:
    """A client round's training FLOPs as its record row counts them: the step's per
    sequence, times the sequences trained (a short last batch costs its share)."""
    return round(flops.per_sequence() * samples)


def client_row(ctx: Context, client: int, st: LocalStats, plan: Optional[FreezePlan],
               flops: Optional[StepFlops], bytes_down: int, bytes_up: int) -> dict:
    """One client's round in the record: work, time, FLOPs, parameters, traffic."""
    params = dict(ctx.model.named_parameters())
    n = sum(p.numel() for p in params.values())
    trainable = sum(params[k].numel() for k in ctx.exchanged
                    if not (plan and k in plan.names))
    ctx.memory.sample()
    return {"client": client, **asdict(st),
            "tokens_per_s": st.tokens / st.wall_s if st.wall_s > 0 else None,
            "samples_per_s": st.samples / st.wall_s if st.wall_s > 0 else None,
            "train_flops": counted_flops(flops, st.samples) if flops else None,
            "step_flops": asdict(flops) if flops else None,
            "analytic_flops": analytic_flops(n, st.tokens),
            "trainable_params": trainable, "frozen_params": n - trainable,
            "frozen_blocks": list(plan.blocks) if plan else [],
            "frozen_embeddings": bool(plan and plan.embeddings),
            "bytes_down": bytes_down, "bytes_up": bytes_up}
