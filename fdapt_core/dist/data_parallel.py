"""One training step spread over the G ranks of a group, equal to the step on the whole batch.

Every rank draws the masks of the whole batch (the mask generator is seeded per client and
round, so all ranks draw the same) and keeps its own rows. Its loss is the sum of its rows'
token losses divided by the masked tokens of the whole batch, so the summed gradients are the
gradient of the whole batch's mean loss, the loss the sequential executor trains on. After the
all-reduce every rank clips the same gradient and takes the same optimizer step: the replicas
stay identical without ever broadcasting weights.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class DataParallel:
    """Rows and gradient sums for one rank of a group of `size` ranks."""

    def __init__(self, group, rank: int, size: int, counter=None, purpose: str = "gradients"):
        self.group, self.rank, self.size = group, rank, size
        self.counter, self.purpose = counter, purpose

    def rows(self, n: int) -> slice:
        """This rank's contiguous share of a batch of n rows (possibly empty)."""
        bounds = np.linspace(0, n, self.size + 1).round().astype(int)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))

    def loss_and_backward(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                          autocast) -> torch.Tensor:
        """Backward this rank's share; return its share of the batch's mean loss."""
        n_total = int((labels != -100).sum())
        share = self.rows(len(inputs))
        inputs, labels = inputs[share], labels[share]
        if len(inputs) == 0 or n_total == 0:
            return torch.zeros((), device=inputs.device)
        with autocast():
            logits = model(input_ids=inputs).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                               ignore_index=-100, reduction="sum") / n_total
        loss.backward()
        return loss.detach()

    def all_reduce_grads(self, params: list[torch.Tensor]) -> None:
        """Sum the group's gradients in one flat buffer (a missing gradient counts as zero)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=self.group)
        if self.counter is not None:
            self.counter(self.purpose, flat.numel() * flat.element_size())
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p)
            offset += n

    def all_reduce_scalar(self, value: torch.Tensor) -> torch.Tensor:
        out = value.detach().clone()
        dist.all_reduce(out, group=self.group)
        return out


def group_dp(world, whole_world: bool = False) -> Optional[DataParallel]:
    """The data-parallel helper of this rank's client group (or of the whole world, for the
    central baseline); None when the group is a single rank."""
    if world is None:
        return None
    if whole_world:
        return DataParallel(None, world.rank, world.size, world.count) if world.size > 1 \
            else None
    if world.group_size == 1:
        return None
    return DataParallel(world.group, world.group_rank, world.group_size, world.count)
