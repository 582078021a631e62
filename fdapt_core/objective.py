"""The pre-training objective follows the model: masked LM for encoders, next token for decoders.

An objective turns a batch of packed blocks into (inputs, labels) with labels aligned to the
input positions (-100 where nothing is scored), so that one loss serves both: the mean
cross-entropy of the logits at every scored position. For MLM the labels are the masked
tokens (BERT's 80/10/10 rule, from an explicit generator); for CLM position t is scored on token
t+1 and the last position on nothing, the shift HF's causal models do inside their own loss,
done here once so that the data-parallel row split and the held-out scorer need no special case.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from .data.masking import IGNORE, mask_tokens
from .model import TokenizerInfo

class Objective(Protocol):
    """What a training step and the held-out scorer need from the objective."""

    name: str

    def batch(self, blocks: torch.Tensor, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels aligned to the inputs' positions, -100 where not scored)."""
        ...


@dataclass(frozen=True)
class MaskedLM:
    tok: TokenizerInfo
    probability: float = 0.15
    name: str = "mlm"

    def batch(self, blocks, generator):
        return mask_tokens(blocks, self.tok, self.probability, generator)


@dataclass(frozen=True)
class CausalLM:
    name: str = "clm"

    def batch(self, blocks, generator):
        labels = torch.full_like(blocks, IGNORE)
        labels[:, :-1] = blocks[:, 1:]  # position t predicts token t+1; the last, nothing
        return blocks, labels


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, reduction: str) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE, reduction=reduction)


def loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy over the scored positions (in float32, whatever the logits)."""
    return _cross_entropy(logits, labels, "sum")


def exact_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy in float64 over each scored token's float32 loss. The held-out
    scorer's sum: one kept in float32 over a batch's thousands of tokens rounded away weight
    changes of 1e-6 (two models that far apart scored the same to 16 digits)."""
    return _cross_entropy(logits, labels, "none").double().sum()


def mean_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy over the scored positions: the loss a step minimises (for MLM,
    exactly the loss HF's masked-LM heads compute)."""
    return _cross_entropy(logits, labels, "mean")


def build_objective(name: str, tok: TokenizerInfo, mlm_probability: float) -> Objective:
    """`mlm` or `clm` (resolve `auto` with `model.objective_of` first)."""
    if name == "clm":
        return CausalLM()
    return MaskedLM(tok, mlm_probability)
