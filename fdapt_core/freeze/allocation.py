"""Which transformer blocks each client freezes in FFDAPT (frozen federated DAPT).

Freezing saves client compute, but a block frozen on every client never adapts. The study's
"paper" policy therefore gives each client a number of frozen blocks proportional to its share
of the training batches (bigger clients save more) and lays the clients' frozen ranges end to
end around the block stack, wrapping past the top, so that across clients the frozen ranges
rotate and every block keeps being trained somewhere. `bottom_allocation` is the naive
baseline that freezes the same lowest blocks everywhere.

Policies beyond the study (their frozen set may change from round to round):

* `progressive_allocation` (shallow-to-deep, after FedBFPT): in round r the trainable window
  is the `window` blocks r, r+1, …, r+window-1; every block outside it is frozen, on every
  client. Past the top the window either stays on the top `window` blocks (clamp, the default)
  or wraps round to block 0.
* `random_allocation`: `k` blocks drawn uniformly without replacement, per client and round,
  from a seed derived from (run seed, "freeze-random", client, round): the control for *which*
  blocks are frozen, independent of history, so a resumed run draws the same sets.
* `budget_targets` / `budget_allocation`: each client aims at a share of its training FLOPs
  saved, target × n_i·K/Σn (the clients' mean target is `target`; bigger clients save more),
  clamped to the most any candidate saves, and takes the candidate frozen set with the fewest
  frozen parameters that meets it. The candidates' savings are measured (FlopCounterMode, see
  `fdapt_core.freeze.budget_candidates`), not assumed: a frozen bottom saves its whole backward
  pass, a frozen middle block only its weight gradients.

Pure Python on purpose: the allocation is decided (and tested) without building a model.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fdapt_core.errors import ConfigError
from fdapt_core.seeding import derive

# the freeze policies (freeze.policy, and the `ffdapt-<policy>` method names)
POLICIES = ("paper", "bottom", "none", "progressive", "random", "budget")


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


def _validate_batches(n_batches: Sequence[int]) -> None:
    """At least one client, each with a positive number of training batches."""
    if len(n_batches) == 0:
        raise ConfigError("freeze allocation needs at least one client; n_batches is empty")
    bad = [(i, n) for i, n in enumerate(n_batches) if not n > 0]
    if bad:
        i, n = bad[0]
        raise ConfigError(
            f"every client needs a positive number of training batches; client {i} has {n}"
        )


def _validate(n_batches: Sequence[int], n_blocks: int, min_blocks: int, max_blocks: int) -> None:
    """Reject inputs that make the share undefined or the clamp range impossible."""
    _validate_batches(n_batches)
    if n_blocks < 1:
        raise ConfigError(f"freeze allocation needs n_blocks >= 1, got {n_blocks}")
    if min_blocks < 0:
        raise ConfigError(f"min_blocks must be >= 0, got {min_blocks}")
    if min_blocks > max_blocks:
        raise ConfigError(f"min_blocks ({min_blocks}) must not exceed max_blocks ({max_blocks})")
    if max_blocks > n_blocks:
        raise ConfigError(f"max_blocks ({max_blocks}) must not exceed n_blocks ({n_blocks})")


def progressive_allocation(round_index: int, n_blocks: int, window: int = 2,
                           wrap: bool = False) -> list[int]:
    """The blocks frozen in round `round_index` ("progressive" policy), sorted.

    The trainable window is blocks start … start+window-1 with start = round_index: round 0
    trains the bottom `window` blocks and the window moves up one block per round. With
    `wrap=False` it stops at the top (start = min(round_index, n_blocks - window)); with
    `wrap=True` it wraps past the top to block 0 (blocks (round_index + j) mod n_blocks).
    Every block outside the window is frozen; the same on every client.
    """
    if n_blocks < 1:
        raise ConfigError(f"freeze allocation needs n_blocks >= 1, got {n_blocks}")
    if not 1 <= window <= n_blocks:
        raise ConfigError(f"freeze.window: {window} must be in [1, {n_blocks}] (the model's "
                          "blocks)")
    if round_index < 0:
        raise ConfigError(f"round index must be >= 0, got {round_index}")
    if wrap:
        trainable = {(round_index + j) % n_blocks for j in range(window)}
    else:
        start = min(round_index, n_blocks - window)
        trainable = set(range(start, start + window))
    return [b for b in range(n_blocks) if b not in trainable]


def random_allocation(seed: int, client: int, round_index: int, n_blocks: int,
                      k: int) -> list[int]:
    """`k` distinct blocks drawn for (client, round) from the run seed ("random" policy), sorted.

    The generator is seeded with derive(seed, "freeze-random", client, round_index): the draw
    depends on nothing else, so it is the same in a resumed run and in any executor.
    """
    if n_blocks < 1:
        raise ConfigError(f"freeze allocation needs n_blocks >= 1, got {n_blocks}")
    if not 0 <= k <= n_blocks:
        raise ConfigError(f"frozen block count k must be in [0, {n_blocks}], got {k}")
    rng = np.random.default_rng(derive(seed, "freeze-random", client, round_index))
    return sorted(int(b) for b in rng.choice(n_blocks, size=k, replace=False))


def budget_targets(n_batches: Sequence[int], target: float) -> list[float]:
    """Each client's target share of FLOPs saved: target × n_i·K/Σn (mean over clients: target)."""
    _validate_batches(n_batches)
    if not 0.0 <= target <= 1.0:
        raise ConfigError(f"freeze.target_saving: {target} must be in [0, 1]")
    total, k = sum(n_batches), len(n_batches)
    return [target * n * k / total for n in n_batches]


@dataclass(frozen=True)
class Candidate:
    """A candidate frozen set for the budget policy, with its measured FLOP saving."""

    blocks: tuple[int, ...]
    embeddings: bool
    frozen_params: int
    saving: float  # share of a training step's FLOPs saved, 0..1


@dataclass(frozen=True)
class BudgetChoice:
    """A client's budget decision: its target (before and after the clamp) and the set."""

    target: float  # target × n_i·K/Σn
    clamped_target: float  # min(target, the largest saving of any candidate)
    choice: Candidate


def budget_allocation(n_batches: Sequence[int], candidates: Sequence[Candidate],
                      target: float) -> list[BudgetChoice]:
    """Per client, the candidate with the fewest frozen parameters meeting its target.

    Candidates are ranked by (frozen parameters, frozen blocks, embeddings): the first one whose
    saving is at least the client's clamped target is taken, so no candidate that freezes fewer
    parameters would have met it. A target above every candidate's saving is clamped to the
    largest saving (that candidate is taken). "At least" allows 1e-9 for float rounding
    (0.2 × 2 × 3 / 4 is 0.30000000000000004).
    """
    if not candidates:
        raise ConfigError("the budget policy needs at least one candidate frozen set")
    ranked = sorted(candidates, key=lambda c: (c.frozen_params, len(c.blocks), c.embeddings,
                                               c.blocks))
    best = max(c.saving for c in ranked)
    out = []
    for t in budget_targets(n_batches, target):
        t_clamped = min(t, best)
        choice = next(c for c in ranked if c.saving >= t_clamped - 1e-9)
        out.append(BudgetChoice(target=t, clamped_target=t_clamped, choice=choice))
    return out
