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

Each builds itself from the `fl.*` config (`from_config`); the config's choices and the
defaults it states come from `STRATEGIES` and the classes (`bench config --keys`).
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
    if fl.strategy not in STRATEGIES:
        raise ConfigError(f"fl.strategy: {fl.strategy!r} is not one of {', '.join(STRATEGIES)}")
    return STRATEGIES[fl.strategy].from_config(fl)
