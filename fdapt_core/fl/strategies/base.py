"""The shared part of the server optimizers (FedAvgM, FedAdam, FedYogi).

A round is aggregated exactly as FedAvg (the same streaming float64 sums `_sum`, `_sent_w`,
`_total_w`, `accepted`, which a distributed executor may all-reduce before `finish`); then
`server_update` treats the round's change as a pseudo-gradient and takes one optimizer step:

    Δ = average − global        (the clients' mean change: Reddi et al.'s Δ_t, the *negative*
                                 of the pseudo-gradient global − average; a step adds it)
    w = global + server_lr · direction(Δ)

with direction(Δ) = Δ for FedAvg itself. The arithmetic is float64; the per-parameter state
(momentum, first and second moments) is stored in float32 (float64 for float64 parameters),
keyed by parameter name, and checkpointed through `state_dict` / `load_state_dict` with the
number of server steps taken, so that a resumed run continues bit for bit.

Parameters no client sent this round (with `frozen_aggregation: senders`, or frozen on every
client that arrived) keep their value and their state: no step is taken for them, as a torch
optimizer skips a parameter without a gradient. A parameter some clients sent and others did
not is averaged by FedAvg's rule first; under `frozen_aggregation: global` the non-senders count
the global copy, so its Δ is the senders' mean change diluted by their weight share (Adam and
Yogi's normalisation largely undoes that dilution; momentum keeps it); under `senders` it is
the senders' mean change. A round in which no client arrived changes nothing.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..fedavg import FedAvg


class ServerOptimizer(FedAvg):
    """FedAvg's average, then one server-optimizer step on Δ = average − global."""

    buffers: tuple[str, ...] = ()  # the names of the per-parameter state tensors
    default_server_lr = 1.0

    def __init__(self, frozen_aggregation: str = "global", server_lr: Optional[float] = None):
        super().__init__(frozen_aggregation)
        self.server_lr = float(self.default_server_lr if server_lr is None else server_lr)
        if not self.server_lr >= 0:
            raise ValueError(f"{self.name}: server_lr must be >= 0, got {server_lr}")
        self.load_state_dict({})

    # --- the step ---------------------------------------------------------------------
    def server_update(self, global_params: dict[str, torch.Tensor],
                      averaged: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self._total_w == 0.0:  # nobody arrived: no step
            return averaged
        new = {}
        for k, g in global_params.items():
            if self._sent_w[k] == 0.0:  # nobody sent it: no gradient, no step
                new[k] = averaged[k]
                continue
            g64 = g.detach().to(torch.float64)
            delta = averaged[k].to(torch.float64) - g64
            new[k] = (g64 + self.server_lr * self.direction(k, g, delta)).to(g.dtype)
        self.steps += 1
        return new

    def direction(self, name: str, param: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The step direction for one parameter (float64), updating its state."""
        raise NotImplementedError

    # --- per-parameter state ----------------------------------------------------------
    def _get(self, buf: str, name: str, param: torch.Tensor, init: float) -> torch.Tensor:
        """State `buf` of parameter `name` as float64 on the parameter's device."""
        t = self.state[buf].get(name)
        if t is None:
            return torch.full_like(param, init, dtype=torch.float64)
        return t.to(param.device, torch.float64, copy=True)

    def _set(self, buf: str, name: str, param: torch.Tensor, value: torch.Tensor) -> None:
        # a new tensor, not written in place: a state_dict taken earlier stays as it was
        self.state[buf][name] = value.to(torch.promote_types(param.dtype, torch.float32))

    def state_dict(self) -> dict:
        return {"steps": self.steps, **{b: dict(self.state[b]) for b in self.buffers}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state_dict (an empty one: a fresh optimizer). Tensors move to the
        parameters' device at their first use."""
        self.steps = int(state.get("steps", 0))
        self.state = {b: dict(state.get(b, {})) for b in self.buffers}
