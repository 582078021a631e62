"""What a run under the Flower executor can do, checked from the config alone (no flwr
import: `methods.check` asks it before anything is built)."""
from __future__ import annotations

from ..errors import ConfigError


def check_supported(cfg) -> None:
    """What a Flower client cannot do yet, refused before anything runs."""
    # what a client keeps between rounds lives with the harness's trainer, not yet in the
    # node's Flower state: refuse rather than silently reset it every round
    if cfg.train.optimizer_reset == "persist" or cfg.fl.upload_codec == "topk":
        raise ConfigError("dist.executor: flower keeps no client state between rounds: "
                          "train.optimizer_reset: persist and fl.upload_codec: topk (error "
                          "feedback) need the sequential or distributed executor")
    if cfg.dist.engine == "deepspeed":
        raise ConfigError("dist.executor: flower trains with dist.engine: torch")
