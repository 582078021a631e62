"""Held-out loss on fixed inputs and labels (MLM: masks drawn once; CLM: every next token of
the same blocks), so every method and round is scored alike."""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from ..data.masking import IGNORE
from ..model import output_head
from ..objective import Objective, exact_loss_sum
from ..seeding import derive


class HeldOut:
    """Held-out blocks made into inputs and labels once, from the run seed (not the method)."""

    def __init__(self, blocks: torch.Tensor, objective: Objective, seed: int, batch_size: int):
        gen = torch.Generator().manual_seed(derive(seed, "eval-masks"))
        inputs, labels = objective.batch(blocks, gen)
        self.batches = [(inputs[i:i + batch_size], labels[i:i + batch_size])
                        for i in range(0, len(blocks), batch_size)]
        self.n_blocks = len(blocks)
        self.n_masked = int((labels != IGNORE).sum())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device,
                 dtype: torch.dtype | None = None) -> dict:
        """Mean cross-entropy over all scored held-out tokens, and its perplexity."""
        was_training = model.training
        model.eval()
        t0 = time.perf_counter()
        head = output_head(model)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for inputs, labels in self.batches:
            inputs, labels = inputs.to(device), labels.to(device)
            chosen = labels != IGNORE
            count = int(chosen.sum())
            if count == 0:
                continue
            with torch.autocast(device.type, dtype=dtype or torch.float32,
                                enabled=dtype is not None):
                if head is None:  # an unknown head: every position's logits
                    total += exact_loss_sum(model(input_ids=inputs).logits, labels)
                    continue
                hidden = model.base_model(input_ids=inputs).last_hidden_state
                logits = head(hidden[chosen])  # the vocabulary only where it is scored
            total += exact_loss_sum(logits, labels[chosen])
        loss = (total / max(1, self.n_masked)).item()
        model.train(was_training)
        return {"loss": loss, "ppl": math.exp(min(loss, 700.0)),
                "wall_s": time.perf_counter() - t0}
