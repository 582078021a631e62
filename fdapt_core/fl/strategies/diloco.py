"""DiLoCo's outer optimiser: Nesterov momentum on the round's pseudo-gradient (Douillard et al.
2023, "DiLoCo: Distributed Low-Communication Training of Language Models").

Clients run many local steps between synchronisations (`train.max_local_steps` sets how many);
the server treats the round's mean change as a gradient and takes one Nesterov step. With
Δ = average − global (see `base`):

    v ← momentum · v + Δ                (v starts at 0)
    w ← global + server_lr · (momentum · v + Δ)

which is torch's SGD with `nesterov=True` on the pseudo-gradient p = global − average = −Δ.
DiLoCo's outer settings are the defaults: server_lr 0.7, momentum 0.9. It is the
low-communication baseline freezing competes with: fewer, larger rounds instead of smaller
uploads.

Parameters (config key, default):
    server_lr (fl.server_lr, null → 0.7): the outer learning rate.
    momentum (fl.server_momentum, 0.9): the Nesterov momentum.
    frozen_aggregation (fl.frozen_aggregation, "global"): as FedAvg.

State (checkpointed): `momentum` (v per parameter name), `steps` (server steps taken).
"""
from __future__ import annotations

from typing import Optional

import torch

from .fedavgm import FedAvgM


class DiLoCo(FedAvgM):
    name = "diloco"
    default_server_lr = 0.7

    def __init__(self, frozen_aggregation: str = "global", server_lr: Optional[float] = None,
                 momentum: float = FedAvgM.default_momentum):
        super().__init__(frozen_aggregation, server_lr, momentum)

    def direction(self, name: str, param: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        v = super().direction(name, param, delta)  # v ← momentum · v + Δ, stored
        return delta + self.momentum * v  # Nesterov: the step looks ahead along v
