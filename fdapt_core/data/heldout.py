"""Which held-out documents are scored: a seeded sample, stratified by key, whatever the order.

Corpora often arrive sorted (OHSUMED is stored by MeSH category). Packing the held-out
documents in file order and keeping the first `max_blocks` blocks would score only the first
few categories, and under a `by_key` split favour whichever client holds them. So the documents
are put in a seeded *stratified* order first, and blocks are packed from a prefix of it.

The order is systematic stratified sampling: within each key, the documents are shuffled and
the j-th of n gets the position (j + u)/n, u ~ U(0, 1) drawn once per key; all documents are
then sorted by position. The documents before position t hold, for a key of n documents,
within one of t·n of them: every prefix is a proportional stratified sample (a prefix of m
documents holds m·s ± 2 of a key with share s, where a uniform random order strays by far more).
Without keys it is a plain seeded permutation.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .packing import TokenizedCorpus, pack


def stratified_order(indices: Sequence[int], keys: Sequence[Optional[str]],
                     rng: np.random.Generator) -> list[int]:
    """`indices` in a seeded order whose every prefix is a proportional stratified sample of
    `keys` (`keys[j]` is the key of `indices[j]`; None is a key of its own)."""
    if not len(indices):
        return []
    groups: dict[Optional[str], list[int]] = {}
    for i, k in zip(indices, keys):
        groups.setdefault(k, []).append(int(i))
    position: list[tuple[float, float, int]] = []
    for k in sorted(groups, key=lambda k: (k is None, str(k))):
        members = [groups[k][j] for j in rng.permutation(len(groups[k]))]
        u, n = rng.random(), len(members)
        # the tie-breaker is random too: keys whose positions coincide interleave fairly
        position += [((j + u) / n, rng.random(), i) for j, i in enumerate(members)]
    return [i for *_, i in sorted(position)]


@dataclass
class ScoredHeldOut:
    """The held-out blocks to score and the documents whose tokens they hold."""

    blocks: torch.Tensor
    doc_indices: list[int]  # into the corpus, in packing order

    def key_counts(self, keys: Sequence[Optional[str]]) -> dict[str, int]:
        """Scored documents per key (`keys[i]` of corpus document i); {} without keys."""
        counts = Counter(keys[i] for i in self.doc_indices)
        return {} if set(counts) <= {None} else \
            {str(k): n for k, n in sorted(counts.items(), key=lambda kv: str(kv[0]))}


def select_heldout(tokens: TokenizedCorpus, val_indices: Sequence[int],
                   keys: Sequence[Optional[str]], block_size: int, max_blocks: int,
                   rng: np.random.Generator) -> ScoredHeldOut:
    """Up to `max_blocks` blocks packed from a stratified prefix of the held-out documents
    (`keys[i]` is corpus document i's key), just long enough to fill them."""
    order = stratified_order(val_indices, [keys[i] for i in val_indices], rng)
    lengths = tokens.doc_lengths()
    need, total, chosen = max_blocks * block_size, 0, []
    for i in order:
        if total >= need:
            break
        chosen.append(i)
        total += int(lengths[i])
    blocks = pack(tokens, chosen, block_size)[:max_blocks]
    # a document scored is one with a token inside the kept blocks (packing drops the tail)
    kept, start, scored = len(blocks) * block_size, 0, []
    for i in chosen:
        if start < kept and lengths[i] > 0:
            scored.append(i)
        start += int(lengths[i])
    return ScoredHeldOut(blocks, scored)
