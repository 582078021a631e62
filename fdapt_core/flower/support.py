"""What a run under the Flower executor can do, checked from the config alone (no flwr
import: `methods.check` asks it before anything is built)."""
from __future__ import annotations

from ..errors import ConfigError


def keeps_client_state(cfg) -> bool:
    """Whether clients keep something between rounds (persisted AdamW moments, the top-k
    codec's error feedback): under Flower it lives in each node's `context.state`."""
    return cfg.train.optimizer_reset == "persist" or cfg.fl.upload_codec == "topk"


def check_supported(cfg) -> None:
    """What a Flower client cannot do, refused before anything runs."""
    if cfg.dist.engine == "deepspeed":
        # a node is one process with no torch.distributed world of its own, and ZeRO on one
        # rank shards nothing: the node trains the plain loop
        raise ConfigError("dist.executor: flower trains with dist.engine: torch")


def check_resume(cfg, resume: bool) -> None:
    """A resumed Flower run starts a new Flower run, whose nodes' `context.state` is empty:
    state the clients kept between rounds would be lost, and the run would not be the one an
    uninterrupted run makes. Refused rather than silently different."""
    if resume and keeps_client_state(cfg):
        raise ConfigError("--resume: under dist.executor=flower the clients' state between "
                          "rounds (train.optimizer_reset: persist, fl.upload_codec: topk) lives "
                          "in the nodes' Flower state, which a new Flower run starts empty; "
                          "start the run again without --resume")
