"""FedYogi (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2).

FedAdam with Yogi's additive second moment, which grows or shrinks v by at most
(1 − β2)·Δ² per round instead of decaying it geometrically. With Δ = average − global:

    m ← β1·m + (1 − β1)·Δ                        (m starts at 0)
    v ← v − (1 − β2)·Δ²·sign(v − Δ²)             (v starts at τ²; stays ≥ 0)
    w ← global + η · m / (√v + τ)

No bias correction, as in the paper.

Parameters (config key, default):
    server_lr (fl.server_lr, null → 1e-2): η (see FedAdam).
    beta1 (fl.server_beta1, 0.9), beta2 (fl.server_beta2, 0.99): as the paper.
    tau (fl.server_tau, 1e-3): the adaptivity τ.
    frozen_aggregation (fl.frozen_aggregation, "global"): as FedAvg.

State (checkpointed): `m`, `v` (per parameter name), `steps` (server steps taken).
"""
from __future__ import annotations

import torch

from .fedadam import FedAdam


class FedYogi(FedAdam):
    name = "fedyogi"

    def second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> torch.Tensor:
        """Yogi's: v ← v − (1 − β2)·Δ²·sign(v − Δ²)."""
        return v - (1 - self.beta2) * delta_sq * torch.sign(v - delta_sq)
