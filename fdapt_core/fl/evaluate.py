"""Held-out loss on fixed inputs and labels (MLM: masks drawn once; CLM: every next token of
the same blocks), so every method and round is scored alike."""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from ..data.masking import IGNORE
from ..errors import DataError
from ..heads import scoring_head
from ..objective import Objective
from ..seeding import derive


class HeldOut:
    """Held-out blocks made into inputs and labels once, from the run seed (not the method)."""

    def __init__(self, blocks: torch.Tensor, objective: Objective, seed: int, batch_size: int):
        gen = torch.Generator().manual_seed(derive(seed, "eval-masks"))
        inputs, labels = objective.batch(blocks, gen)
        self.batches = [(inputs[i:i + batch_size], labels[i:i + batch_size])
                        for i in range(0, len(blocks), batch_size)]
        self.n_blocks = len(blocks)
        self.objective = objective.name
        self.n_masked = int((labels != IGNORE).sum())
        if self.n_masked == 0 and len(blocks):
            # a loss over no tokens reads 0.0 (perplexity 1.00): a run scored so would look
            # perfect while it learned nothing
            raise DataError(f"the held-out set scores no tokens ({len(blocks)} blocks, "
                            f"objective {objective.name}): the tokenizer turns the text into "
                            "special tokens only, or the held-out documents are empty; check "
                            "model.tokenizer (or data.val_fraction)")

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device,
                 dtype: torch.dtype | None = None) -> dict:
        """Mean cross-entropy over all scored held-out tokens, and its perplexity."""
        was_training = model.training
        model.eval()
        t0 = time.perf_counter()
        # the vocabulary only where tokens are scored, as the training step does (heads.py)
        head = scoring_head(model, self.objective)
        body = head.target(model)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for inputs, labels in self.batches:
            inputs, labels = inputs.to(device), labels.to(device)
            chosen = labels != IGNORE
            count = int(chosen.sum())
            if count == 0:
                continue
            with torch.autocast(device.type, dtype=dtype or torch.float32,
                                enabled=dtype is not None):
                total += head.exact_loss_sum(body, inputs, labels)
        loss = (total / max(1, self.n_masked)).item()
        model.train(was_training)
        return {"loss": loss, "ppl": math.exp(min(loss, 700.0)),
                "wall_s": time.perf_counter() - t0}
