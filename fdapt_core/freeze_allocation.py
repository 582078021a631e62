"""Which transformer blocks each client freezes in FFDAPT (frozen federated DAPT).

Freezing saves client compute, but a block frozen on every client never adapts. The study's
"paper" policy therefore gives each client a number of frozen blocks proportional to its share
of the training batches (bigger clients save more) and lays the clients' frozen ranges end to
end around the block stack, wrapping past the top, so that across clients the frozen ranges
rotate and every block keeps being trained somewhere. `bottom_allocation` is the naive
baseline that freezes the same lowest blocks everywhere.

Pure Python on purpose: the allocation is decided (and tested) without building a model.
"""
from __future__ import annotations

from collections.abc import Sequence

from fdapt_core.errors import ConfigError


def paper_allocation(
    n_batches: Sequence[int],
    n_blocks: int = 6,
    min_blocks: int = 1,
    max_blocks: int = 4,
) -> list[list[int]]:
    """Return, per client, the frozen block indices in allocation order ("paper" policy).

    With n_i the training batches of client i, client i freezes
    k_i = clamp(round(n_blocks * n_i / sum(n)), min_blocks, max_blocks) blocks, where `round`
    is Python's (half to even, on the float share) to match the study. Client 0 starts at
    block 0; client i starts where client i-1 stopped, modulo `n_blocks`, so a range may wrap
    (e.g. [5, 0]). The clamp keeps every client frozen a little (min) and trainable a little
    (max).
    """
    _validate(n_batches, n_blocks, min_blocks, max_blocks)
    total = sum(n_batches)
    allocation: list[list[int]] = []
    start = 0
    for n_i in n_batches:
        k_i = min(max(round(n_blocks * n_i / total), min_blocks), max_blocks)
        allocation.append([(start + j) % n_blocks for j in range(k_i)])
        start = (start + k_i) % n_blocks
    return allocation


def bottom_allocation(n_clients: int, k: int, n_blocks: int) -> list[list[int]]:
    """Every client freezes the lowest `k` blocks 0..k-1 (the baseline policy)."""
    if n_clients < 1:
        raise ConfigError(f"freeze allocation needs at least one client, got n_clients={n_clients}")
    if n_blocks < 1:
        raise ConfigError(f"freeze allocation needs n_blocks >= 1, got {n_blocks}")
    if not 0 <= k <= n_blocks:
        raise ConfigError(f"frozen block count k must be in [0, {n_blocks}], got {k}")
    return [list(range(k)) for _ in range(n_clients)]


def _validate(n_batches: Sequence[int], n_blocks: int, min_blocks: int, max_blocks: int) -> None:
    """Reject inputs that make the share undefined or the clamp range impossible."""
    if len(n_batches) == 0:
        raise ConfigError("freeze allocation needs at least one client; n_batches is empty")
    bad = [(i, n) for i, n in enumerate(n_batches) if not n > 0]
    if bad:
        i, n = bad[0]
        raise ConfigError(
            f"every client needs a positive number of training batches; client {i} has {n}"
        )
    if n_blocks < 1:
        raise ConfigError(f"freeze allocation needs n_blocks >= 1, got {n_blocks}")
    if min_blocks < 0:
        raise ConfigError(f"min_blocks must be >= 0, got {min_blocks}")
    if min_blocks > max_blocks:
        raise ConfigError(f"min_blocks ({min_blocks}) must not exceed max_blocks ({max_blocks})")
    if max_blocks > n_blocks:
        raise ConfigError(f"max_blocks ({max_blocks}) must not exceed n_blocks ({n_blocks})")
