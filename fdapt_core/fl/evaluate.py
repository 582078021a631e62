"""Held-out MLM loss with masks fixed once, so every method and round is scored alike."""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..data.masking import IGNORE, mask_tokens
from ..model import TokenizerInfo, masked_lm_head
from ..seeding import derive


class HeldOut:
    """Masked held-out blocks, drawn once from the run seed (not from the method)."""

    def __init__(self, blocks: torch.Tensor, tok: TokenizerInfo, probability: float, seed: int,
                 batch_size: int):
        gen = torch.Generator().manual_seed(derive(seed, "eval-masks"))
        inputs, labels = mask_tokens(blocks, tok, probability, gen)
        self.batches = [(inputs[i:i + batch_size], labels[i:i + batch_size])
                        for i in range(0, len(blocks), batch_size)]
        self.n_blocks = len(blocks)
        self.n_masked = int((labels != IGNORE).sum())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device,
                 dtype: torch.dtype | None = None) -> dict:
        """Mean cross-entropy over all masked held-out tokens, and its perplexity."""
        was_training = model.training
        model.eval()
        t0 = time.perf_counter()
        head = masked_lm_head(model)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for inputs, labels in self.batches:
            inputs, labels = inputs.to(device), labels.to(device)
            chosen = labels != IGNORE
            count = int(chosen.sum())
            if count == 0:
                continue
            with torch.autocast(device.type, dtype=dtype or torch.float32,
                                enabled=dtype is not None):
                if head is None:  # an unknown head: the model's own (mean) loss
                    total += model(input_ids=inputs, labels=labels).loss.double() * count
                    continue
                hidden = model.base_model(input_ids=inputs).last_hidden_state
                logits = head(hidden[chosen])  # the vocabulary only where it is scored
            total += F.cross_entropy(logits.float(), labels[chosen], reduction="sum").double()
        loss = (total / max(1, self.n_masked)).item()
        model.train(was_training)
        return {"loss": loss, "ppl": math.exp(min(loss, 700.0)),
                "wall_s": time.perf_counter() - t0}
