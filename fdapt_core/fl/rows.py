"""The rows of the run record, typed: a client's round (`ClientRow`: its work, time, FLOPs,
parameters and traffic) and a round (`RoundRow`). A misspelt field is an AttributeError
where it is written, not a silent zero where it is read; the record keeps the JSON it always
had (`to_dict`), and a row read back (a checkpoint, a Flower node's reply) with a key this
version does not know is refused (`from_dict`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional, Union

import torch

from ..errors import FdaptError
from ..freeze.policies import FreezePlan
from ..flops.count import FlopCache, StepFlops, analytic_flops
from .context import Context
from .local import LocalStats


def step_flops(ctx: Context, blocks: torch.Tensor, frozen: frozenset[str]
               ) -> Optional[StepFlops]:
    """FLOPs of one full batch of these blocks with this frozen set (counted once; None when
    the run does not count them)."""
    if ctx.flops is None:
        return None
    return batch_flops(ctx.flops, ctx.cfg.train.batch_size, blocks, frozen)


def batch_flops(cache: FlopCache, batch_size: int, blocks: torch.Tensor,
                frozen: frozenset[str]) -> StepFlops:
    """One full batch's FLOPs from `cache` (a client with fewer blocks than a batch: all)."""
    return cache.get(frozen, (min(batch_size, len(blocks)), blocks.shape[1]))


def counted_flops(flops: StepFlops, samples: int) -> int:
    """A client round's training FLOPs as its record row counts them: the step's per
    sequence, times the sequences trained (a short last batch costs its share)."""
    return round(flops.per_sequence() * samples)


class RowError(FdaptError):
    """A row read back holds keys this version does not know, or lacks required ones."""


def _from_dict(cls, d: dict, what: str):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise RowError(f"a {what} holds unknown field(s) {unknown} (written by another "
                       "version of the harness?)")
    try:
        return cls(**d)
    except TypeError as exc:
        raise RowError(f"a {what} is incomplete: {exc}") from None


def _to_dict(row, optional: frozenset[str]) -> dict:
    """The row as the record keeps it: every field, except the optional ones left unset."""
    return {f.name: getattr(row, f.name) for f in fields(row)
            if not (f.name in optional and getattr(row, f.name) is None)}


@dataclass(slots=True)  # slots: assigning a field it lacks raises, at the line that does
class ClientRow:
    """One client's round (or the central trainer's round: `client` is "central")."""

    client: Union[int, str]
    steps: int
    samples: int
    tokens: int
    loss: float  # the mean training loss (NaN: nothing trained)
    wall_s: float
    phases: dict[str, float]
    tokens_per_s: Optional[float]
    samples_per_s: Optional[float]
    train_flops: Optional[int]  # None: FLOPs not counted
    step_flops: Optional[dict]
    analytic_flops: int
    trainable_params: int
    frozen_params: int
    frozen_blocks: list[int]
    frozen_embeddings: bool
    bytes_down: int
    bytes_up: int  # as encoded (fl.upload_codec)
    weight: float = 0.0  # its weight in the strategy's average
    dropped: bool = False
    rejected: Optional[str] = None  # the screen's reason, None: accepted
    fault: Optional[str] = None  # the fault drawn (faults.*) or `lost`
    bytes_up_dense: int = 0  # what the upload would have cost without the codec
    codec_error: Optional[float] = None
    update_norm: Optional[float] = None  # None: dropped, or non-finite
    # set only where they apply (left out of the record otherwise)
    error: Optional[str] = None  # why a node was lost
    rank: Optional[int] = None  # torch.distributed: the rank and group that trained it
    group: Optional[int] = None
    flower_bytes_down: Optional[int] = None  # Flower: the messages' sizes
    flower_bytes_up: Optional[int] = None
    node: Optional[dict] = None  # Flower: where the node's message time went (flower.phases)

    OPTIONAL = frozenset({"error", "rank", "group", "flower_bytes_down", "flower_bytes_up",
                          "node"})

    def to_dict(self) -> dict:
        return _to_dict(self, self.OPTIONAL)

    @classmethod
    def from_dict(cls, d: dict) -> "ClientRow":
        return _from_dict(cls, d, "client row")


@dataclass(slots=True)
class RoundRow:
    """One round: its clients' rows, time by phase, what the server did, the evaluation."""

    round: int
    clients: list[ClientRow]
    train_wall_s: float
    aggregate_wall_s: float
    # the federated server's: whom it accepted, whether it aggregated, who dropped or was
    # rejected and why (left out of a central round)
    accepted: Optional[list[int]] = None
    aggregated: Optional[bool] = None
    dropped: Optional[list[int]] = None
    rejected: Optional[dict[str, str]] = None
    ranks: Optional[list[dict]] = None  # torch.distributed: each rank's share of the round
    transport: Optional[dict] = None  # Flower: the server's side of the exchange, seconds
    # filled by the round loop after training
    mem_mb: Optional[float] = None
    eval_loss: Optional[float] = None
    eval_ppl: Optional[float] = None
    eval_wall_s: float = 0.0
    wall_s: float = 0.0
    checkpoint_wall_s: Optional[float] = None
    local_train_s: float = 0.0
    torch_threads: Optional[int] = None

    OPTIONAL = frozenset({"accepted", "aggregated", "dropped", "rejected", "ranks",
                          "transport"})

    def to_dict(self) -> dict:
        d = _to_dict(self, self.OPTIONAL)
        d["clients"] = [c.to_dict() for c in self.clients]
        return d


def client_row(ctx: Context, client: Union[int, str], st: LocalStats,
               plan: Optional[FreezePlan], flops: Optional[StepFlops], bytes_down: int,
               bytes_up: int) -> ClientRow:
    """One client's round in the record: work, time, FLOPs, parameters, traffic."""
    params = dict(ctx.model.named_parameters())
    n = sum(p.numel() for p in params.values())
    trainable = sum(params[k].numel() for k in ctx.exchanged
                    if not (plan and k in plan.names))
    ctx.memory.sample()
    return ClientRow(client=client, **asdict(st),
                     tokens_per_s=st.tokens / st.wall_s if st.wall_s > 0 else None,
                     samples_per_s=st.samples / st.wall_s if st.wall_s > 0 else None,
                     train_flops=counted_flops(flops, st.samples) if flops else None,
                     step_flops=asdict(flops) if flops else None,
                     analytic_flops=analytic_flops(n, st.tokens),
                     trainable_params=trainable, frozen_params=n - trainable,
                     frozen_blocks=list(plan.blocks) if plan else [],
                     frozen_embeddings=bool(plan and plan.embeddings),
                     bytes_down=bytes_down, bytes_up=bytes_up)
