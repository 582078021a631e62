"""FedAvgM: FedAvg with server momentum (Hsu et al. 2019; Reddi et al. 2021's FedAvgM).

With Δ = average − global (see `base`):

    v ← server_momentum · v + Δ          (v starts at 0)
    w ← global + server_lr · v

server_momentum = 0 and server_lr = 1 give FedAvg (up to float rounding). Written with the
descent sign (pseudo-gradient p = global − average = −Δ) this is the usual heavy ball
v ← βv + p, w ← w − ηv.

Parameters (config key, default):
    server_lr (fl.server_lr, null → 1.0): η, the server learning rate.
    momentum (fl.server_momentum, 0.9): β.
    frozen_aggregation (fl.frozen_aggregation, "global"): as FedAvg.

State (checkpointed): `momentum` (v per parameter name), `steps` (server steps taken).
"""
from __future__ import annotations

from typing import Optional

import torch

from .base import ServerOptimizer


class FedAvgM(ServerOptimizer):
    name = "fedavgm"
    buffers = ("momentum",)
    default_server_lr = 1.0
    default_momentum = 0.9

    def __init__(self, frozen_aggregation: str = "global", server_lr: Optional[float] = None,
                 momentum: float = default_momentum):
        super().__init__(frozen_aggregation, server_lr)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"fedavgm: momentum must be in [0, 1], got {momentum}")
        self.momentum = float(momentum)

    @classmethod
    def from_config(cls, fl) -> "FedAvgM":
        return cls(fl.frozen_aggregation, server_lr=fl.server_lr, momentum=fl.server_momentum)

    def direction(self, name: str, param: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        v = self._get("momentum", name, param, 0.0).mul_(self.momentum).add_(delta)
        self._set("momentum", name, param, v)
        return v
