"""A client's round as the run record keeps it: its work, time, FLOPs, parameters and traffic."""
from __future__ import annotations

from dataclasses import asdict
from typing import Optional

import torch

from ..freeze import FreezePlan
from ..profiling.flops import StepFlops, analytic_flops
from .context import Context
from .local import LocalStats


def step_flops(ctx: Context, blocks: torch.Tensor, frozen: frozenset[str]
               ) -> Optional[StepFlops]:
    """FLOPs of one full batch of these blocks with this frozen set (counted once; None when
    the run does not count them)."""
    if ctx.flops is None:
        return None
    batch = min(ctx.cfg.train.batch_size, len(blocks))
    return ctx.flops.get(frozen, (batch, blocks.shape[1]))


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
            "train_flops": round(flops.per_sequence() * st.samples) if flops else None,
            "step_flops": asdict(flops) if flops else None,
            "analytic_flops": analytic_flops(n, st.tokens),
            "trainable_params": trainable, "frozen_params": n - trainable,
            "frozen_blocks": list(plan.blocks) if plan else [],
            "frozen_embeddings": bool(plan and plan.embeddings),
            "bytes_down": bytes_down, "bytes_up": bytes_up}
