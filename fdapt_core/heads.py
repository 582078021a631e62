"""The language-model head applied only where tokens are scored.

A masked-LM step scores about 15 % of the positions, yet `model(input_ids).logits` runs the
head (transform, norm and the vocabulary projection) at every one of them: for
all-MiniLM-L6-v2 at 128 tokens the 30,522-word projection is about half the forward FLOPs,
and its float32 logits are the largest tensor of the step. `ScoringHead` runs the model's body,
gathers the hidden states of the scored positions and applies the head to those rows alone;
the loss is the same mean cross-entropy over the same positions, so the loss and every
gradient equal the dense path's up to float32 rounding (the products are summed in another
blocking). The training step, the data-parallel share, the held-out scorer and the FLOP count
all go through it; the ZeRO engine keeps the dense path (`assembly.run_head`).

The head is found by structure for the families the harness knows (DistilBERT's
`vocab_transform` … `vocab_projector`; BERT and MiniLM's `cls`; `lm_head` of RoBERTa and the
decoders); anything else keeps the dense path and says why. A decoder's next-token loss
scores every position but the last, so there the head saves almost nothing; what it saves is
memory: its projection (a plain `nn.Linear`) and the loss run a chunk of rows at a time
(linear_ce.py), so the float32 logits of the whole batch never exist.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from .data.masking import IGNORE
from .linear_ce import exact_linear_cross_entropy, linear_cross_entropy
from .model import output_head
from .objective import exact_loss_sum, loss_sum, mean_loss


@dataclass(frozen=True)
class ScoringHead:
    """How a step turns a batch into (logits, labels) at the scored positions.

    `head` maps final hidden states to logits (None: the dense path, the model's own
    forward); `why` says which path and, for the dense one, why. `projection`: the decoder's
    vocabulary projection, run with its loss a chunk of rows at a time. `share`: the expected
    share of a batch's positions that is scored (the FLOP count's; None: dense)."""

    head: Optional[Callable[[torch.Tensor], torch.Tensor]]
    why: str
    projection: Optional[nn.Linear] = None
    share: Optional[float] = None

    @property
    def sparse(self) -> bool:
        return self.head is not None

    def target(self, model: nn.Module) -> nn.Module:
        """The module a step calls (and compiles): the body alone, or the whole model."""
        return model.base_model if self.sparse else model

    def logits(self, forward: Callable, input_ids: torch.Tensor, labels: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, labels) of the scored positions (dense: every position, labels -100
        where nothing is scored); `forward` is `target(model)` or its compiled wrapper."""
        out = forward(input_ids=input_ids)
        if self.head is None:
            return out.logits, labels
        chosen = labels != IGNORE
        return self.head(out.last_hidden_state[chosen]), labels[chosen]

    def _rows(self, forward, input_ids, labels):
        chosen = labels != IGNORE
        return forward(input_ids=input_ids).last_hidden_state[chosen], labels[chosen]

    def loss_sum(self, forward: Callable, input_ids: torch.Tensor, labels: torch.Tensor
                 ) -> torch.Tensor:
        """Summed float32 cross-entropy over the scored positions."""
        if self.projection is None:
            return loss_sum(*self.logits(forward, input_ids, labels))
        rows, scored = self._rows(forward, input_ids, labels)
        return linear_cross_entropy(rows, self.projection.weight, self.projection.bias, scored)

    def mean_loss(self, forward: Callable, input_ids: torch.Tensor, labels: torch.Tensor
                  ) -> torch.Tensor:
        """The loss a step minimises: the mean over the scored positions."""
        if self.projection is None:
            return mean_loss(*self.logits(forward, input_ids, labels))
        return self.loss_sum(forward, input_ids, labels) / int((labels != IGNORE).sum())

    def exact_loss_sum(self, forward: Callable, input_ids: torch.Tensor, labels: torch.Tensor
                       ) -> torch.Tensor:
        """The held-out scorer's sum (each token's float32 loss summed in float64)."""
        if self.projection is None:
            return exact_loss_sum(*self.logits(forward, input_ids, labels))
        rows, scored = self._rows(forward, input_ids, labels)
        return exact_linear_cross_entropy(rows, self.projection.weight, self.projection.bias,
                                          scored)

    def scored_rows(self, shape: tuple[int, int]) -> Optional[int]:
        """The rows the head runs at in a batch of this (batch, length) shape, as the FLOP
        count takes it (None: every position)."""
        return None if self.share is None else round(self.share * shape[0] * shape[1])


def scoring_head(model: nn.Module, objective: str, sparse: bool = True,
                 mlm_probability: float = 0.15, length: Optional[int] = None) -> ScoringHead:
    """The head for `model` trained on `objective` ("mlm" or "clm"); `sparse` false keeps
    every position (`train.sparse_head`). `mlm_probability` and `length` (the block length)
    give the scored share the FLOP count takes."""
    if not sparse:
        return ScoringHead(None, "dense: train.sparse_head is false")
    if objective != "mlm":
        head = getattr(model, "lm_head", None)
        if not isinstance(head, nn.Linear) or getattr(model, "base_model", model) is model:
            return ScoringHead(None, "dense: the next-token loss scores every position and "
                                     f"the head of {type(model).__name__} is not a plain "
                                     "linear projection")
        share = None if length is None else (length - 1) / length
        return ScoringHead(head, "chunked: the next-token head and loss a chunk of rows at a "
                                 "time (float32 logits never whole)", projection=head,
                           share=share)
    head = output_head(model)
    if head is None:
        return ScoringHead(None, f"dense: the head of {type(model).__name__} is not one the "
                                 "harness knows (DistilBERT, BERT/MiniLM, RoBERTa)")
    if not hasattr(model, "base_model") or model.base_model is model:
        return ScoringHead(None, f"dense: {type(model).__name__} has no body apart from its "
                                 "head")
    return ScoringHead(head, "sparse: the head only at the masked positions",
                       share=mlm_probability)
