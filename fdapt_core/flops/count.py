"""Training FLOPs as dispatched, counted once per distinct step shape and frozen set.

`torch.utils.flop_counter.FlopCounterMode` counts the operations a step really dispatches,
forward and backward, so it sees freezing: a frozen bottom (embeddings + first blocks) drops
its whole backward, a frozen middle block drops only its weight-gradient GEMMs (activation
gradients still flow through it). The HF Trainer's `floating_point_ops` (6·N·tokens) and
DeepSpeed's profiler (backward = 2 × forward) both miss that; `analytic_flops` gives the 6·N
estimate beside the count, labelled as an estimate.

One representative step is counted outside the timed loop and scaled by the number of
sequences trained (FLOPs are linear in the batch). `FlopCache` counts it on a twin of the model
on the `meta` device, in training mode: shapes only, no arithmetic, so counting costs
milliseconds and touches neither the weights nor any RNG. Training mode matters: on a CPU,
scaled-dot-product attention in eval mode dispatches a fused kernel that FlopCounterMode has no
formula for, and the attention FLOPs silently vanish from the count; in training mode (as the
step really runs) it decomposes into matrix products that are counted.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..adapters import exchanged_names, inject_like
from ..model import output_head
from ..objective import mean_loss


def _attention(query, key, value, *args, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _attention_backward(grad_out, query, key, value, *args, **kwargs) -> int:
    return 2 * sdpa_flop_count(query, key, value)


# Attention is counted as model FLOPs, the same whichever kernel runs it: the full L×L products
# (a causal mask saves no dispatched work), backward twice forward. torch has no formula for the
# CPU flash kernel, which SDPA dispatches when no dropout applies (Llama-style models,
# `model.dropout: 0`, eval mode): every attention product would vanish from the count. And its
# formulas for the fused CUDA kernels add the scores their backward recomputes, which the
# meta-device twin (decomposed attention) would not see: MFU counts model FLOPs, not
# recomputation.
_aten = torch.ops.aten
ATTENTION_FORMULAS = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _attention,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward,
    _aten._scaled_dot_product_flash_attention_backward: _attention_backward,
    _aten._scaled_dot_product_efficient_attention_backward: _attention_backward,
    _aten._scaled_dot_product_cudnn_attention_backward: _attention_backward,
}


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one training step of `batch` sequences."""

    batch: int
    forward: int
    backward: int

    @property
    def total(self) -> int:
        return self.forward + self.backward

    def per_sequence(self) -> float:
        return self.total / self.batch


def count_step_flops(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
                     dtype: torch.dtype | None = None, scored: int | None = None) -> StepFlops:
    """Count a forward + backward on this batch; gradients and RNG are left as they were.
    `scored`: the head runs at that many positions only (the sparse MLM head), else at every
    one."""
    device = input_ids.device
    autocast = dtype is not None and device.type != "meta"  # FLOPs do not depend on dtype
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        counter = FlopCounterMode(display=False, custom_mapping=ATTENTION_FORMULAS)
        with counter:
            with torch.autocast("cpu" if device.type == "meta" else device.type,
                                dtype=dtype or torch.float32, enabled=autocast):
                loss = _loss(model, input_ids, labels, scored)
        forward = counter.get_total_flops()
        backward = 0  # nothing trains (a LoRA model with every adapted block frozen): none
        if loss.requires_grad:
            counter = FlopCounterMode(display=False, custom_mapping=ATTENTION_FORMULAS)
            with counter:
                loss.backward()
            backward = counter.get_total_flops()
    for p in model.parameters():
        p.grad = None
    return StepFlops(batch=input_ids.shape[0], forward=int(forward), backward=int(backward))


def _loss(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
          scored: int | None) -> torch.Tensor:
    if scored is None:
        return mean_loss(model(input_ids=input_ids).logits, labels)
    # the first `scored` rows stand for the masked ones: which rows does not change a FLOP,
    # and a boolean mask cannot be taken on the meta device
    hidden = model.base_model(input_ids=input_ids).last_hidden_state
    rows = hidden.reshape(-1, hidden.shape[-1])[:scored]
    return mean_loss(output_head(model)(rows), labels.reshape(-1)[:scored])


def analytic_flops(n_params: int, tokens: int) -> int:
    """The 6·N·tokens estimate (2N forward, 4N backward), blind to freezing: an estimate."""
    return 6 * n_params * tokens


class FlopCache:
    """Counts on a meta-device twin, keyed by (batch shape, frozen set): each counted once.

    `head` (a `heads.ScoringHead`): where the run's head runs, its `scored_rows` of a batch
    shape (the sparse MLM head: the masking probability's share of the tokens, the expected
    count, as a step's own count varies by a few; the chunked next-token head: all but each
    block's last); None: the head at every position."""

    def __init__(self, model: nn.Module, head=None):
        self.head = head
        config = copy.deepcopy(model.config)
        # GPT-2 looks for padding in its inputs (a value read: impossible on meta tensors);
        # packed blocks hold none, and the pad id changes no FLOP
        config.pad_token_id = None
        with torch.device("meta"):  # the same class: its head (MLM or causal) is counted too
            self.twin = inject_like(model, type(model)(config))  # and LoRA adapters, if any
        self.twin.train()
        self.trainable = exchanged_names(self.twin)
        self._cache: dict[tuple, StepFlops] = {}

    def get(self, frozen: frozenset[str], shape: tuple[int, int]) -> StepFlops:
        key = (tuple(shape), frozen)
        if key not in self._cache:
            for name, p in self.twin.named_parameters():
                p.requires_grad_(name in self.trainable and name not in frozen)
            ids = torch.zeros(shape, dtype=torch.long, device="meta")
            # the loss over every position costs the same whatever is masked
            scored = None if self.head is None else self.head.scored_rows(tuple(shape))
            self._cache[key] = count_step_flops(self.twin, ids, ids.clone(), scored=scored)
        return self._cache[key]
