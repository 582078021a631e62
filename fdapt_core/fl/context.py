"""What every trainer and both halves of a round share: the run's model, data, held-out
scorer, checkpoints and meters (`Context`), and the progress hooks (`Callbacks`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import torch
from torch import nn

from ..checkpoint import Checkpoints
from ..config.run import RunConfig
from ..heads import ScoringHead
from ..objective import Objective
from ..flops.count import FlopCache
from ..profiling.memory import PeakMemory
from .evaluate import HeldOut
from .params import snapshot


class Callbacks(Protocol):
    """Progress hooks; the library calls them, the CLI draws them. All optional."""

    def round_start(self, round_index: int, n_rounds: int, clients: Sequence[int]) -> None: ...
    def client_start(self, client: int, steps: int) -> None: ...
    def step(self, step: int) -> None: ...
    def client_end(self, client: int, stats: dict) -> None: ...
    def round_end(self, round_index: int, row: dict) -> None: ...
    def run_start(self, record: dict) -> None: ...
    def run_end(self, record: dict) -> None: ...


class NoCallbacks:
    def __getattr__(self, name):
        return lambda *a, **k: None


@dataclass
class Context:
    """What every trainer needs: the model, the data, the held-out set and where to save."""

    cfg: RunConfig
    model: nn.Module
    objective: Objective  # MLM or CLM: how a batch of blocks becomes inputs and labels
    client_blocks: list[torch.Tensor]
    heldout: HeldOut
    device: torch.device
    checkpoints: Checkpoints
    callbacks: Callbacks
    memory: PeakMemory
    flops: Optional[FlopCache] = None  # None: FLOPs not counted (profile.count_flops: false)
    world: Optional[object] = None  # dist.world.World of a distributed run
    # what can train, so what is exchanged, averaged and checkpointed: every parameter, or
    # a LoRA model's adapters (the base never changes); None: every parameter
    exchanged: Optional[frozenset[str]] = None
    # where the LM head runs: at the scored positions only, or at every one (heads.py)
    head: Optional[ScoringHead] = None
    # what a client elsewhere (a Flower node holding only its own documents) needs from the
    # server to train its part: the tokenizer's files and, per client, its documents' ids in
    # the manifest's order and a hash of their text (`prepare.node_share`)
    node_share: Optional[dict] = None

    def __post_init__(self):
        if self.exchanged is None:
            self.exchanged = frozenset(n for n, _ in self.model.named_parameters())

    def global_params(self) -> dict[str, torch.Tensor]:
        """A copy of the exchanged parameters: the global model as the federation holds it."""
        return snapshot(self.model, self.exchanged)

    @property
    def is_main(self) -> bool:
        """Whether this process evaluates, checkpoints and writes (rank 0, or the only one)."""
        return self.world is None or self.world.is_main
