"""FedAvg: the server's new model is the weighted mean of the clients' models.

Streaming: each client's upload is folded into a float64 running sum as it arrives, so server
memory does not grow with the number of clients, and the sum of a single client (weight 1) or of
identical clients is that model exactly after the cast back.

A parameter a client did not send (a frozen block, with `send_frozen: false`) is unchanged on
that client, so under `frozen_aggregation: global` the server counts its own copy in the
client's place: the same arithmetic as the study's code, which uploaded frozen blocks, without
the traffic. `senders` instead averages over the clients that sent it.

Parameters:
    frozen_aggregation: "global" (default) or "senders", as above.
"""
from __future__ import annotations

from typing import Mapping

import torch


class FedAvg:
    name = "fedavg"

    def __init__(self, frozen_aggregation: str = "global"):
        if frozen_aggregation not in ("global", "senders"):
            raise ValueError(f"frozen_aggregation: {frozen_aggregation!r}")
        self.frozen_aggregation = frozen_aggregation
        self._global: dict[str, torch.Tensor] = {}

    def begin_round(self, global_params: Mapping[str, torch.Tensor],
                    weights: Mapping[int, float]) -> None:
        """Start a round with the current global model and the raw client weights."""
        total = float(sum(weights.values()))
        if total <= 0:
            raise ValueError("FedAvg needs a positive total client weight")
        self._p = {c: float(w) / total for c, w in weights.items()}
        self._global = dict(global_params)
        self._sum = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in self._global.items()}
        self._sent_w = dict.fromkeys(self._global, 0.0)

    def accumulate(self, client: int, sent: Mapping[str, torch.Tensor]) -> None:
        """Fold in one client's upload (only the tensors it sent)."""
        p = self._p[client]
        for k, g in self._global.items():
            if k in sent:
                self._sum[k].add_(sent[k].detach().to(torch.float64), alpha=p)
                self._sent_w[k] += p
            elif self.frozen_aggregation == "global":
                # in the client's turn, so the sum is bit-identical to having sent it
                self._sum[k].add_(g.to(torch.float64), alpha=p)

    def finish(self) -> dict[str, torch.Tensor]:
        """The new global parameters (same dtypes as the old)."""
        new = {}
        for k, g in self._global.items():
            s = self._sum[k]
            if self._sent_w[k] == 0.0:
                new[k] = g.clone()
                continue
            if self.frozen_aggregation == "senders":
                s.div_(self._sent_w[k])
            new[k] = s.to(g.dtype)
        self._sum = {}
        return new

    def state_dict(self) -> dict:
        return {}  # FedAvg keeps nothing between rounds

    def load_state_dict(self, state: dict) -> None:
        pass
