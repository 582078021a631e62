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
from torch import nn

from ..objective import loss_sum
from .collectives import all_reduce, all_reduce_one


def share(n: int, rank: int, size: int) -> slice:
    """Rank `rank`'s contiguous share of a batch of n rows among `size` ranks (maybe empty)."""
    bounds = np.linspace(0, n, size + 1).round().astype(int)
    return slice(int(bounds[rank]), int(bounds[rank + 1]))


def share_loss(logits: torch.Tensor, labels: torch.Tensor, n_total: int) -> torch.Tensor:
    """These rows' token losses over the whole batch's masked-token count: summed over the
    ranks, the whole batch's mean loss."""
    return loss_sum(logits, labels) / n_total


class DataParallel:
    """Rows and gradient sums for one rank of a group of `size` ranks; `device` is the
    world's, where the sums are taken (None: where the tensors are)."""

    def __init__(self, group, rank: int, size: int, counter=None, purpose: str = "gradients",
                 device: Optional[torch.device] = None):
        self.group, self.rank, self.size = group, rank, size
        self.counter, self.purpose, self.device = counter, purpose, device

    def rows(self, n: int) -> slice:
        return share(n, self.rank, self.size)

    def loss_and_backward(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                          autocast, head) -> torch.Tensor:
        """Backward this rank's share; return its share of the batch's mean loss."""
        n_total = int((labels != -100).sum())
        rows = self.rows(len(inputs))
        inputs, labels = inputs[rows], labels[rows]
        if len(inputs) == 0 or n_total == 0:
            return torch.zeros((), device=inputs.device)
        with autocast():  # `head`: a heads.ScoringHead, `model` the module it targets
            loss = head.loss_sum(model, inputs, labels) / n_total
        loss.backward()
        return loss.detach()

    def all_reduce_grads(self, params: list[torch.Tensor]) -> None:
        """Sum the group's gradients in one flat buffer (a missing gradient counts as zero)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        for p, g in zip(params, all_reduce(grads, self.device, self.group, self.counter,
                                           self.purpose)):
            p.grad = g

    def all_reduce_scalar(self, value: torch.Tensor) -> torch.Tensor:
        return all_reduce_one(value, self.device, self.group)


def group_dp(world, whole_world: bool = False) -> Optional[DataParallel]:
    """The data-parallel helper of this rank's client group (or of the whole world, for the
    central baseline); None when the group is a single rank."""
    if world is None:
        return None
    if whole_world:
        return DataParallel(None, world.rank, world.size, world.count,
                            device=world.device) if world.size > 1 else None
    if world.group_size == 1:
        return None
    return DataParallel(world.group, world.group_rank, world.group_size, world.count,
                        device=world.device)
