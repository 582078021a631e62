"""FedAvg (McMahan et al. 2017): the new global model is the clients' weighted mean.

The implementation lives in `fdapt_core.fl.fedavg` (imported from there by the engine and by
the distributed executor) and is re-exported here so that every strategy has its file.

Parameters (config key, default):
    frozen_aggregation (fl.frozen_aggregation, "global"): for a parameter a client did not
        send (a frozen block), count the server's copy in its place ("global", the study's
        arithmetic) or average over the clients that sent it ("senders").
"""
from __future__ import annotations

from ..fedavg import FedAvg

__all__ = ["FedAvg"]
