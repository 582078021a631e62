"""The MLM head only where tokens are scored: the same loss and gradients as the dense head
(within float32 rounding), on BERT and DistilBERT shapes; the FLOP count sees the smaller head;
a family the harness does not know keeps the dense path and says why."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fdapt_core.heads import scoring_head
from fdapt_core.model import TokenizerInfo
from fdapt_core.objective import MaskedLM, mean_loss

V, H, L, B = 512, 32, 24, 6


def bert():
    from transformers import BertConfig, BertForMaskedLM

    return BertForMaskedLM(BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=2,
                                      num_attention_heads=4, intermediate_size=64,
                                      max_position_embeddings=64, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0))


def distilbert():
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    return DistilBertForMaskedLM(DistilBertConfig(vocab_size=V, dim=H, n_layers=2, n_heads=4,
                                                  hidden_dim=64, max_position_embeddings=64,
                                                  dropout=0.0, attention_dropout=0.0))


def batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    blocks = torch.randint(5, V, (B, L), generator=gen)
    tok = TokenizerInfo(vocab_size=V, mask_id=4, pad_id=0, special_ids=(0, 1, 2, 3, 4))
    return MaskedLM(tok, 0.15).batch(blocks, gen)


def loss_and_grads(model, spec, inputs, labels):
    model.zero_grad(set_to_none=True)
    loss = mean_loss(*spec.logits(spec.target(model), inputs, labels))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                           if p.grad is not None}


@pytest.mark.parametrize("make", [bert, distilbert])
def test_sparse_head_gives_the_dense_loss_and_gradients(make):
    torch.manual_seed(0)
    model = make()
    model.train()
    inputs, labels = batch()
    sparse, dense = scoring_head(model, "mlm"), scoring_head(model, "mlm", sparse=False)
    assert sparse.sparse and not dense.sparse
    a, ga = loss_and_grads(model, sparse, inputs, labels)
    b, gb = loss_and_grads(model, dense, inputs, labels)
    # the same sums in another blocking: float32 rounding, a few ulps of the loss
    assert abs(float(a - b)) <= 1e-6 * float(b)
    # every parameter with a gradient in one path has one in the other, and they agree to
    # float32 rounding relative to the tensor's largest entry
    assert ga.keys() == gb.keys()
    for n in ga:
        scale = float(gb[n].abs().max()) or 1.0
        assert float((ga[n] - gb[n]).abs().max()) <= 2e-6 * scale, n


def test_an_unknown_head_keeps_the_dense_path_and_says_why():
    class Odd(nn.Module):
        def forward(self, input_ids):
            raise AssertionError("never called here")

    spec = scoring_head(Odd(), "mlm")
    assert not spec.sparse and "not one the harness knows" in spec.why
    assert "every position" in scoring_head(distilbert(), "clm").why
    assert "sparse_head is false" in scoring_head(distilbert(), "mlm", sparse=False).why


@pytest.mark.parametrize("make", [bert, distilbert])
def test_the_flop_count_sees_the_smaller_head(make):
    """Forward and backward of the head's two matrix products (transform H×H, decoder H×V),
    skipped at the B·L − n positions that are not scored: 6·(B·L − n)·(H² + H·V) FLOPs."""
    from fdapt_core.profiling.flops import FlopCache

    model = make()
    share = 0.15
    n = round(share * B * L)
    dense = FlopCache(model).get(frozenset(), (B, L))
    sparse = FlopCache(model, scored_share=share).get(frozenset(), (B, L))
    assert dense.total - sparse.total == 6 * (B * L - n) * (H * H + H * V)
    assert dense.forward - sparse.forward == 2 * (B * L - n) * (H * H + H * V)


def test_a_run_trains_the_same_model_with_either_head(tiny):
    """Two rounds of fdapt, sparse head (the default) against dense: the same training up to
    float32 rounding, fewer FLOPs counted, and the record says which head ran."""
    from fdapt_core.runner import run

    sparse = run(tiny("name=sparse"), "fdapt")
    dense = run(tiny("name=dense", "train.sparse_head=false"), "fdapt")
    assert sparse["model"]["head"].startswith("sparse")
    assert dense["model"]["head"].startswith("dense")
    assert abs(sparse["final_eval"]["loss"] - dense["final_eval"]["loss"]) < 1e-4
    assert sparse["totals"]["train_flops"] < dense["totals"]["train_flops"]
