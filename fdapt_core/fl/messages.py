"""What crosses between the server half and the client half of a federated round.

One message each way: the server's `RoundTask` (the global weights, and everything else the
client must be told: its frozen set, the fault the run's fault model drew for it, the
strategy's proximal weight) and the client's `ClientUpdate` (its record row and the encoded
upload). The sequential and torch.distributed executors hand them over in memory; the Flower
executor carries them in Flower messages (`flower/wire.py`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..freeze import FreezePlan
from .codecs import Encoded


@dataclass(frozen=True)
class RoundTask:
    """The server's instructions to one client for one round."""

    round: int
    client: int
    global_params: dict[str, torch.Tensor]
    plan: Optional[FreezePlan]  # what the client freezes this round (None: nothing)
    fault: Optional[str]  # the fault drawn for it this round (faults.*), None: none
    prox_mu: float  # FedProx's proximal weight; 0: the plain local loss

    @property
    def frozen(self) -> frozenset[str]:
        return self.plan.names if self.plan is not None else frozenset()

    def describe(self) -> dict:
        """Everything but the weights, as JSON-ready values (the wire's `task` record)."""
        return {"round": self.round, "client": self.client, "fault": self.fault,
                "prox_mu": self.prox_mu,
                "plan": None if self.plan is None else {
                    "blocks": list(self.plan.blocks), "embeddings": self.plan.embeddings,
                    "names": sorted(self.plan.names)}}

    @classmethod
    def from_description(cls, d: dict, global_params: dict[str, torch.Tensor]) -> "RoundTask":
        plan = d.get("plan")
        return cls(int(d["round"]), int(d["client"]), global_params,
                   None if plan is None else FreezePlan(tuple(plan["blocks"]),
                                                        bool(plan["embeddings"]),
                                                        frozenset(plan["names"])),
                   d.get("fault"), float(d["prox_mu"]))


@dataclass
class ClientUpdate:
    """A client's answer: its record row, and its upload as it travels (None: it dropped)."""

    row: dict
    encoded: Optional[Encoded]
