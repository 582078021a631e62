"""FedAdam (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2).

With Δ = average − global (Reddi et al.'s Δ_t; see `base`), per coordinate:

    m ← β1·m + (1 − β1)·Δ                (m starts at 0)
    v ← β2·v + (1 − β2)·Δ²               (v starts at τ², the paper's v_{−1} ≥ τ²)
    w ← global + η · m / (√v + τ)

As in the paper there is no bias correction: early rounds take short steps.

Parameters (config key, default):
    server_lr (fl.server_lr, null → 1e-2): η. The paper tunes η per task (its best values
        lie around 10^-2.5 … 10^0); 1e-2 with τ = 1e-3 makes the first step about as long as
        FedAvg's for changes of ~1e-3 per coordinate, typical of a DAPT round.
    beta1 (fl.server_beta1, 0.9) and beta2 (fl.server_beta2, 0.99): the values the paper
        fixes in all its experiments.
    tau (fl.server_tau, 1e-3): the adaptivity τ; the paper finds 1e-3 a robust choice
        (it is Flower's default too).
    frozen_aggregation (fl.frozen_aggregation, "global"): as FedAvg.

State (checkpointed): `m`, `v` (per parameter name), `steps` (server steps taken).
"""
from __future__ import annotations

from typing import Optional

import torch

from .base import ServerOptimizer


class FedAdam(ServerOptimizer):
    name = "fedadam"
    buffers = ("m", "v")
    default_server_lr = 1e-2
    default_beta1, default_beta2, default_tau = 0.9, 0.99, 1e-3

    def __init__(self, frozen_aggregation: str = "global", server_lr: Optional[float] = None,
                 beta1: float = default_beta1, beta2: float = default_beta2,
                 tau: float = default_tau):
        super().__init__(frozen_aggregation, server_lr)
        for key, value in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{self.name}: {key} must be in [0, 1], got {value}")
        if not tau > 0:
            raise ValueError(f"{self.name}: tau must be > 0, got {tau}")
        self.beta1, self.beta2, self.tau = float(beta1), float(beta2), float(tau)

    @classmethod
    def from_config(cls, fl) -> "FedAdam":
        return cls(fl.frozen_aggregation, server_lr=fl.server_lr, beta1=fl.server_beta1,
                   beta2=fl.server_beta2, tau=fl.server_tau)

    def direction(self, name: str, param: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        m = self._get("m", name, param, 0.0).mul_(self.beta1).add_(delta, alpha=1 - self.beta1)
        v = self.second_moment(self._get("v", name, param, self.tau ** 2), delta * delta)
        self._set("m", name, param, m)
        self._set("v", name, param, v)
        return m / (v.sqrt() + self.tau)

    def second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> torch.Tensor:
        """Adam's: v ← β2·v + (1 − β2)·Δ²."""
        return v.mul_(self.beta2).add_(delta_sq, alpha=1 - self.beta2)
