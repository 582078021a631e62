"""Masked-language-model corruption (BERT's 80/10/10 rule) from an explicit generator.

Written here rather than taken from `DataCollatorForLanguageModeling` because that collator
draws from torch's global RNG: with an explicit generator, the held-out masks are identical for
every method and every evaluation, and a client's masks depend only on its own seed.
"""
from __future__ import annotations

import torch

from ..model import TokenizerInfo

IGNORE = -100


def mask_tokens(input_ids: torch.Tensor, tok: TokenizerInfo, probability: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels): `probability` of the non-special tokens are chosen; of those 80 %
    become [MASK], 10 % a random token, 10 % stay; labels are -100 elsewhere."""
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    for sid in tok.special_ids:
        special |= input_ids == sid
    draw = torch.rand(input_ids.shape, generator=generator)
    chosen = (draw < probability) & ~special
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE))
    action = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(tok.vocab_size, input_ids.shape, generator=generator,
                               dtype=input_ids.dtype)
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(input_ids, tok.mask_id),
                         input_ids)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    return inputs, labels
