"""Every collective of a run, called on the world's device.

NCCL takes CUDA tensors only, yet what a run sums does not always live there: the merge's
weight totals are built on the CPU, and a tensor may be held wherever its owner keeps it. So
each tensor helper moves what it sends to `device` (the world's) for the call and gives the
result back on each tensor's own device and in its own dtype; with `device` None, or a tensor
already there, nothing moves. Gloo and NCCL both reduce float64, so the merge's float64 sums are
sent as they are.

The object collectives pickle into byte tensors that torch places on the current CUDA device
under NCCL: `init_world` sets it (torch.cuda.set_device) before the process group is made.
"""
from __future__ import annotations

from functools import reduce
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist


def all_reduce(tensors: Sequence[torch.Tensor], device: Optional[torch.device], group=None,
               count: Optional[Callable[[str, int], None]] = None,
               purpose: str = "") -> list[torch.Tensor]:
    """The sums of `tensors` over the group's ranks, through one flat all-reduce (one call
    instead of one per tensor), each back where it came from; `count(purpose, bytes)` is told
    what was sent. Mixed dtypes travel in their promoted dtype (exact for float32 in float64)."""
    if not tensors:
        return []
    dtype = reduce(torch.promote_types, (t.dtype for t in tensors))
    flat = torch.cat([t.reshape(-1).to(device or t.device, dtype) for t in tensors])
    dist.all_reduce(flat, group=group)
    if count is not None:
        count(purpose, flat.numel() * flat.element_size())
    return [part.view_as(t).to(t.device, t.dtype)
            for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def all_reduce_one(tensor: torch.Tensor, device: Optional[torch.device],
                   group=None) -> torch.Tensor:
    """The sum of one tensor over the group (a new tensor; the argument is left alone)."""
    out = tensor.detach().to(device or tensor.device, copy=True)
    dist.all_reduce(out, group=group)
    return out.to(tensor.device)


def gather_objects(world, obj) -> list:
    """Every rank's `obj` (pickled), in rank order, on every rank."""
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(world, obj):
    """Rank 0's `obj` (pickled) on every rank; no world, or a world of one: `obj` itself."""
    if world is None or world.size == 1:
        return obj
    box = [obj if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world=None) -> None:
    """Wait for every rank; under NCCL on the world's own device (not whatever is current)."""
    if world is not None and world.device.type == "cuda":
        dist.barrier(device_ids=[world.device.index])
    else:
        dist.barrier()
