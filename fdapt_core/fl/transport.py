"""Transports: what carries a round's tasks to the clients and their answers back.

A transport moves messages; it never decodes, screens, folds or evaluates (the `Server`
does, in one place). Three implement the interface:

| transport | where the clients train | module |
| --- | --- | --- |
| `SequentialTransport` | in this process, one after another, on one model | here |
| `DistributedTransport` | on this torch.distributed world's client groups | `dist/transport.py` |
| `FlowerTransport` | on the nodes of a Flower federation | `flower/server.py` |

`fdapt_core/executors.py` is the one table that names them.
"""
from __future__ import annotations

from typing import Iterator, Optional, Protocol, Sequence, Union

from .client import Client
from .context import Context
from .messages import ClientUpdate, Lost, Relayed, RoundTask


class Transport(Protocol):
    """The interface: `exchange` carries tasks out and answers back; `reduce` is where a
    transport that folds uploads in several processes merges the strategy's sums (an
    all-reduce under torch.distributed) and names extra fields for the round's row."""

    trains_here: bool  # whether clients train in this process (FLOPs are counted here)

    def bind(self, ctx: Context, client: Optional[Client]) -> None:
        """The run's parts, once they are built, and the client half where clients train
        in this process (None where they train elsewhere)."""

    def exchange(self, tasks: Sequence[RoundTask]
                 ) -> Iterator[Union[ClientUpdate, Lost, Relayed]]: ...

    def reduce(self, strategy) -> Optional[dict]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class SequentialTransport:
    """All sampled clients one after another in this process, on one model object.

    Memory stays flat in the number of clients: one model, one optimizer at a time, and the
    strategy's running sum. An answer holds the model's own tensors until the next client
    loads: a generator hands each one over before the next trains."""

    trains_here = True

    def __init__(self):
        self.client: Optional[Client] = None

    def bind(self, ctx: Context, client: Client) -> None:
        self.client = client  # the client half (`fl/client.py`), with what clients keep

    def exchange(self, tasks: Sequence[RoundTask]) -> Iterator[ClientUpdate]:
        for task in tasks:
            yield self.client.train(task)

    def reduce(self, strategy) -> None:
        return None

    def state_dict(self) -> dict:
        return self.client.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.client.load_state_dict(state)
