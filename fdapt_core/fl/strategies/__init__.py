"""Server strategies, one per file, Flower-style; `build_strategy(cfg)` makes the configured one.

| strategy (`fl.strategy`) | class | what the server does with the round's uploads |
| --- | --- | --- |
| `fedavg` (default) | `FedAvg` | their weighted mean |
| `fedprox` | `FedProx` | the mean; clients add (mu/2)·‖w − w_global‖² to their loss |
| `fedavgm` | `FedAvgM` | the mean's change Δ, then a server heavy-ball step |
| `fedadam` | `FedAdam` | the mean's change Δ, then a server Adam step (Reddi et al. 2021) |
| `fedyogi` | `FedYogi` | the mean's change Δ, then a server Yogi step (Reddi et al. 2021) |
| `diloco` | `DiLoCo` | the mean's change Δ, then a server Nesterov step (Douillard et al. 2023) |

Every strategy averages as FedAvg (`begin_round`, `accumulate`, `finish`, `partial_state`,
`load_partial_state`); the server optimizers then step in `server_update`. Their state
(`state_dict` / `load_state_dict`) is part of every round checkpoint.

Config keys and defaults (all under `fl.`; unused by the strategies they do not name):
    strategy: "fedavg"
    prox_mu: 0.01                (fedprox)
    server_lr: null              (fedavgm: 1.0; fedadam, fedyogi: 1e-2; diloco: 0.7)
    server_momentum: 0.9         (fedavgm, diloco)
    server_beta1: 0.9            (fedadam, fedyogi)
    server_beta2: 0.99           (fedadam, fedyogi)
    server_tau: 1e-3             (fedadam, fedyogi)
    frozen_aggregation: "global" (all)
"""
from __future__ import annotations

from ...errors import ConfigError
from .base import ServerOptimizer
from .diloco import DiLoCo
from .fedadam import FedAdam
from .fedavg import FedAvg
from .fedavgm import FedAvgM
from .fedprox import FedProx
from .fedyogi import FedYogi

STRATEGIES = {cls.name: cls for cls in (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, DiLoCo)}

__all__ = ["STRATEGIES", "DiLoCo", "FedAdam", "FedAvg", "FedAvgM", "FedProx", "FedYogi",
           "ServerOptimizer", "build_strategy"]


def build_strategy(cfg) -> FedAvg:
    """The strategy `fl.strategy` names, with its `fl.*` parameters (a RunConfig or FLConfig)."""
    fl = getattr(cfg, "fl", cfg)
    name, agg = fl.strategy, fl.frozen_aggregation
    if name == "fedavg":
        return FedAvg(agg)
    if name == "fedprox":
        return FedProx(agg, mu=fl.prox_mu)
    if name in ("fedavgm", "diloco"):
        return STRATEGIES[name](agg, server_lr=fl.server_lr, momentum=fl.server_momentum)
    if name in ("fedadam", "fedyogi"):
        return STRATEGIES[name](agg, server_lr=fl.server_lr, beta1=fl.server_beta1,
                                beta2=fl.server_beta2, tau=fl.server_tau)
    raise ConfigError(f"fl.strategy: {name!r} is not one of {', '.join(STRATEGIES)}")
