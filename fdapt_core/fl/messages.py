"""What crosses between the server half and the client half of a federated round.

One message each way: the server's `RoundTask` (the global weights, and everything else the
client must be told: its frozen set, the fault the run's fault model drew for it, the
strategy's proximal weight) and the client's answer. A transport (`fl/transport.py`) carries
them: the sequential and torch.distributed ones in memory, Flower's in Flower messages
(`flower/wire.py`). The answer is one of three:

* `ClientUpdate`: the client's record row and its encoded upload (None: it dropped);
* `Lost`: nothing came back (a node died, errored or timed out); the server writes its row;
* `Relayed`: a row another process already screened, whose upload that process folds in
  (torch.distributed: another group's client; the transport's reduce merges the sums).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..freeze.policies import FreezePlan
from .codecs import Encoded
from .rows import ClientRow


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
    """A client's answer: its record row, and its upload as it travels (None: it dropped).

    The upload may hold the model's own tensors (a sequential transport trains every client
    on one model object): the server takes it before it asks the transport for the next."""

    row: ClientRow
    encoded: Optional[Encoded]

    @property
    def client(self) -> int:
        return self.row.client


@dataclass(frozen=True)
class Lost:
    """Nothing came back from a client: `why` says what the transport saw."""

    client: int
    why: str


@dataclass
class Relayed:
    """A client's row as another process screened it; its upload is folded there."""

    row: ClientRow

    @property
    def client(self) -> int:
        return self.row.client
