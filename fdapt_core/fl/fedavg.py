"""FedAvg: the server's new model is the weighted mean of the clients' models.

Streaming: each client's upload is folded into a float64 running sum, weighted by its raw
weight, as it arrives, and divided by the total weight at the end; server memory does not grow
with the number of clients, and one client, or identical clients, give that model exactly.

A parameter a client did not send (a frozen block, with `send_frozen: false`) is unchanged on
that client, so under `frozen_aggregation: global` the server counts its own copy in the
client's place: the same arithmetic as the study's code, which uploaded frozen blocks, without
the traffic. `senders` instead averages over the clients that sent it.

Parameters:
    frozen_aggregation: "global" (default) or "senders", as above.

Server optimizers (fdapt_core/fl/strategies/: FedAvgM, FedAdam, FedYogi) subclass FedAvg and
keep its accumulation as it is; `finish` hands the average to `server_update`, which FedAvg
leaves alone and they override.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch


class FedAvg:
    name = "fedavg"
    prox_mu = 0.0  # the clients' proximal weight (FedProx); 0: the plain local loss

    def __init__(self, frozen_aggregation: str = "global"):
        # (the config's `fl.frozen_aggregation`; `from_config` builds any strategy from `fl`)
        if frozen_aggregation not in ("global", "senders"):
            raise ValueError(f"frozen_aggregation: {frozen_aggregation!r}")
        self.frozen_aggregation = frozen_aggregation
        self._global: dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, fl) -> "FedAvg":
        """The strategy with its `fl.*` settings (an FLConfig)."""
        return cls(fl.frozen_aggregation)

    def begin_round(self, global_params: Mapping[str, torch.Tensor]) -> None:
        """Start a round from the current global model."""
        self._global = dict(global_params)
        self._sum = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in self._global.items()}
        self._sent_w = dict.fromkeys(self._global, 0.0)
        self._total_w = 0.0
        self.accepted: list[int] = []

    def accumulate(self, client: int, sent: Mapping[str, torch.Tensor], weight: float) -> None:
        """Fold in one client's upload (only the tensors it sent) with its raw weight.

        Weights are normalised in `finish`, over the clients actually folded in, so a client
        that dropped out or was rejected simply never arrives. With integer weights (batches,
        tokens) every product is exact in float64."""
        if weight <= 0:
            raise ValueError(f"client {client}: FedAvg weight must be positive, got {weight}")
        for k, g in self._global.items():
            if k in sent:  # an upload may be held elsewhere (the CPU) than the sums
                self._sum[k].add_(sent[k].detach().to(g.device, torch.float64), alpha=weight)
                self._sent_w[k] += weight
            elif self.frozen_aggregation == "global":
                # in the client's turn, so the sum is bit-identical to having sent it
                self._sum[k].add_(g.to(torch.float64), alpha=weight)
        self._total_w += weight
        self.accepted.append(client)

    def finish(self) -> dict[str, torch.Tensor]:
        """The new global parameters (same dtypes as the old); the old ones if none arrived."""
        new = {}
        for k, g in self._global.items():
            s = self._sum[k]
            if self._sent_w[k] == 0.0:
                new[k] = g.clone()
                continue
            s.div_(self._total_w if self.frozen_aggregation == "global" else self._sent_w[k])
            new[k] = s.to(g.dtype)
        self._sum = {}
        return self.server_update(self._global, new)

    def server_update(self, global_params: dict[str, torch.Tensor],
                      averaged: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The server's step from the round's average (`_sent_w` still says who sent what);
        FedAvg takes the average as the new model."""
        return averaged

    def merge(self, reduce: Callable[[Sequence[torch.Tensor]], list[torch.Tensor]],
              gather: Callable[[list], list[list]], contribute: bool = True) -> None:
        """Add the running sums other processes built this round to this one's (the distributed
        executor: each group folds in its own clients, then every rank holds the whole round).

        `reduce` sums tensors across processes, `gather` collects a list from each. A process
        with `contribute=False` holds a copy of another's sums and adds nothing. The
        per-parameter sent weights go first; then only the parameters some client sent are
        summed: a parameter nobody sent keeps the global value."""
        keys = list(self._global)
        meta = torch.tensor([self._sent_w[k] for k in keys] + [self._total_w],
                            dtype=torch.float64)
        (meta,) = reduce([meta if contribute else torch.zeros_like(meta)])
        weights = meta.tolist()
        sent = [k for k, w in zip(keys, weights) if w > 0]
        sums = reduce([self._sum[k] if contribute else torch.zeros_like(self._sum[k])
                       for k in sent]) if sent else []
        self._sum.update(zip(sent, sums))
        self._sent_w = dict(zip(keys, weights))
        self._total_w = weights[-1]
        parts = gather(list(self.accepted) if contribute else [])
        self.accepted = sorted(c for part in parts for c in part)

    def partial_state(self) -> dict:
        """The round so far (for a partial-round checkpoint)."""
        return {"sum": self._sum, "sent_w": self._sent_w, "total_w": self._total_w,
                "accepted": list(self.accepted)}

    def load_partial_state(self, state: dict) -> None:
        """Continue a round begun with `begin_round` from its partial state."""
        self._sum = {k: v.to(self._global[k].device) for k, v in state["sum"].items()}
        self._sent_w, self._total_w = dict(state["sent_w"]), float(state["total_w"])
        self.accepted = list(state["accepted"])

    def state_dict(self) -> dict:
        return {}  # FedAvg keeps nothing between rounds

    def load_state_dict(self, state: dict) -> None:
        pass
