"""Freeze policies: which parameters each ffdapt client leaves untouched.

`paper` is the study's allocation by data share (see `freeze_allocation.paper_allocation`):
each client freezes a different run of transformer blocks, fixed for the run. `bottom` freezes
the embeddings (and so DistilBERT's tied output projection) and the first k blocks on every
client: their whole backward pass is saved, not only their weight gradients. Only transformer
blocks and, for `bottom`, the embeddings are ever frozen; layer norms outside blocks and the MLM
head always train.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import nn

from .config import FreezeConfig
from .errors import ConfigError
from .freeze_allocation import bottom_allocation, paper_allocation
from .model import embedding_prefix, transformer_blocks


@dataclass(frozen=True)
class FreezePlan:
    """A client's frozen set: block indices, whether embeddings freeze, and parameter names."""

    blocks: tuple[int, ...]
    embeddings: bool
    names: frozenset[str]


def plan_freezing(model: nn.Module, policy: str, cfg: FreezeConfig,
                  n_batches: Sequence[int]) -> list[FreezePlan]:
    """One FreezePlan per client (`n_batches[i]`: client i's training batches per round)."""
    blocks = transformer_blocks(model)
    n = len(blocks)
    if policy == "none":
        per_client, emb = [[] for _ in n_batches], False
    elif policy == "paper":
        if cfg.max_blocks > n:
            raise ConfigError(f"freeze.max_blocks: {cfg.max_blocks} is more than the model's "
                              f"{n} transformer blocks")
        per_client = paper_allocation(list(n_batches), n, cfg.min_blocks, cfg.max_blocks)
        emb = False
    elif policy == "bottom":
        if cfg.k > n:
            raise ConfigError(f"freeze.k: {cfg.k} is more than the model's {n} blocks")
        per_client, emb = bottom_allocation(len(n_batches), cfg.k, n), cfg.embeddings
    else:
        raise ConfigError(f"freeze.policy: unknown policy {policy!r}")
    names = [n_ for n_, _ in model.named_parameters()]
    emb_prefix = embedding_prefix(model)
    plans = []
    for frozen in per_client:
        prefixes = tuple(blocks[b][0] for b in frozen) + ((emb_prefix,) if emb else ())
        plans.append(FreezePlan(blocks=tuple(frozen), embeddings=emb,
                                names=frozenset(x for x in names if x.startswith(prefixes))
                                if prefixes else frozenset()))
    return plans


def apply_freeze(model: nn.Module, plan: FreezePlan | None) -> None:
    """Set requires_grad for a client's round (None: everything trains)."""
    frozen = plan.names if plan is not None else frozenset()
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
