"""FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks").

Each client minimises its local loss plus a proximal term that keeps it near the round's
global model w_g:

    F_i(w) + (mu/2)·||w − w_g||²      over the client's trainable parameters only

(frozen blocks do not move, so their term is 0 anyway). The local loop adds the term's
gradient mu·(w − w_g) to the MLM gradient before clipping (`train_steps(prox_mu=…,
prox_ref=…)`); the reported training loss is the MLM loss alone. The server aggregates
exactly as FedAvg (weights, frozen parameters, faults); FedProx keeps no server state.

Parameters (config key, default):
    mu (fl.prox_mu, 0.01): the proximal weight; 0 gives FedAvg bit for bit.
    frozen_aggregation (fl.frozen_aggregation, "global"): as FedAvg.
"""
from __future__ import annotations

from ..fedavg import FedAvg


class FedProx(FedAvg):
    name = "fedprox"
    default_mu = 0.01

    def __init__(self, frozen_aggregation: str = "global", mu: float = default_mu):
        super().__init__(frozen_aggregation)
        if not mu >= 0:
            raise ValueError(f"FedProx mu must be >= 0, got {mu}")
        self.prox_mu = float(mu)

    @classmethod
    def from_config(cls, fl) -> "FedProx":
        return cls(fl.frozen_aggregation, mu=fl.prox_mu)
