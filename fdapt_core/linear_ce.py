"""The vocabulary projection and its cross-entropy, a chunk of rows at a time.

A decoder's next-token loss scores every position, so the head cannot be skipped as the MLM
head is (heads.py); what can be avoided is the float32 logits of the whole batch: N rows × V
words (batch 32 × 512 tokens × 49,152 words is 3.2 GB, twice that with the softmax kept for
the backward). `linear_cross_entropy` projects `chunk` rows, takes their log-sum-exp and
their loss, and, while those logits are at hand, the gradients of the summed loss with respect
to the rows, the weight and the bias: softmax − one-hot, times the weight or the rows. The
backward then only scales the saved gradients by the incoming one. This is the approach of
Liger-Kernel's fused linear cross-entropy (its Triton kernels need a GPU; this is plain torch
and runs wherever the model does), at the cost of computing the gradients in the forward pass.
The matrix products are the same three as the dense head's forward and backward; no FLOP is
added or saved.

Gradients are computed only for the inputs that need them (a frozen head or body skips its
product). Under autocast the products run in the autocast dtype and the softmax in float32.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

# Logits held at once: 2^24 floats (64 MiB in float32) whatever the vocabulary.
CHUNK_ELEMENTS = 1 << 24


def chunk_rows(vocab_size: int) -> int:
    """Rows projected at once for this vocabulary (at least one)."""
    return max(1, CHUNK_ELEMENTS // vocab_size)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk):
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
            if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) \
            if need_b else None
        for start in range(0, hidden.shape[0], chunk):
            h, y = hidden[start:start + chunk], labels[start:start + chunk]
            logits = F.linear(h, weight, bias).float()
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, y[:, None]).squeeze(1)
            total += (lse - picked).sum()
            if not (need_h or need_w or need_b):
                continue
            # d(sum of losses)/d(logits) = softmax - one-hot, made in place of the logits
            grad = logits.sub_(lse[:, None]).exp_()
            grad[torch.arange(len(y), device=y.device), y] -= 1.0
            if need_b:
                grad_b += grad.sum(0)
            if not torch.is_autocast_enabled(h.device.type):  # else autocast casts the products
                grad = grad.to(h.dtype)
            if need_h:
                grad_h[start:start + chunk] = grad @ weight
            if need_w:
                grad_w += grad.t() @ h
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        w_dtype, b_dtype = ctx.dtypes
        return (None if grad_h is None else grad_h * grad_out.to(grad_h.dtype),
                None if grad_w is None else (grad_w * grad_out).to(w_dtype),
                None if grad_b is None else (grad_b * grad_out).to(b_dtype),
                None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor,
                         bias: Optional[torch.Tensor], labels: torch.Tensor,
                         chunk: Optional[int] = None) -> torch.Tensor:
    """Summed cross-entropy (float32) of `hidden @ weight.T + bias` against `labels`, every
    row scored (gather the scored rows first); never more than `chunk` rows of logits at once
    (default: `chunk_rows` of the vocabulary)."""
    chunk = chunk or chunk_rows(weight.shape[0])
    return _LinearCrossEntropy.apply(hidden, weight, bias, labels, chunk)


@torch.no_grad()
def exact_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor,
                               bias: Optional[torch.Tensor], labels: torch.Tensor,
                               chunk: Optional[int] = None) -> torch.Tensor:
    """The held-out scorer's sum: each row's float32 loss summed in float64, a chunk of rows
    at a time (see objective.exact_loss_sum)."""
    chunk = chunk or chunk_rows(weight.shape[0])
    total = torch.zeros((), dtype=torch.float64, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk):
        logits = F.linear(hidden[start:start + chunk], weight, bias).float()
        total += F.cross_entropy(logits, labels[start:start + chunk],
                                 reduction="none").double().sum()
    return total
