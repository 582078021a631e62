"""The MLM head only where tokens are scored: the same loss and gradients as the dense head
(within float32 rounding), on BERT and DistilBERT shapes; the FLOP count sees the smaller head;
a family the harness does not know keeps the dense path and says why. The decoders' head and
loss a chunk of rows at a time: the plain loss and its gradients, and no whole-batch logits."""
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
    assert "not a plain linear projection" in scoring_head(distilbert(), "clm").why
    assert "sparse_head is false" in scoring_head(distilbert(), "mlm", sparse=False).why


@pytest.mark.parametrize("make", [bert, distilbert])
def test_the_flop_count_sees_the_smaller_head(make):
    """Forward and backward of the head's two matrix products (transform H×H, decoder H×V),
    skipped at the B·L − n positions that are not scored: 6·(B·L − n)·(H² + H·V) FLOPs."""
    from fdapt_core.flops.count import FlopCache

    model = make()
    share = 0.15
    n = round(share * B * L)
    dense = FlopCache(model).get(frozenset(), (B, L))
    sparse = FlopCache(model, scoring_head(model, "mlm", mlm_probability=share)
                       ).get(frozenset(), (B, L))
    assert dense.total - sparse.total == 6 * (B * L - n) * (H * H + H * V)
    assert dense.forward - sparse.forward == 2 * (B * L - n) * (H * H + H * V)


@pytest.mark.slow
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


def decoder(preset):
    from fdapt_core.model import build_from_preset

    torch.manual_seed(0)
    return build_from_preset(preset, V, 64).eval()  # no dropout: two passes comparable


class Largest(torch.utils._python_dispatch.TorchDispatchMode):
    """The largest tensor any operation makes (the whole-batch logits, if anything makes
    them)."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


@pytest.mark.parametrize("preset", ["gpt2-tiny", "llama-tiny"])
@pytest.mark.parametrize("autocast", [False, True])
def test_the_chunked_decoder_loss_is_the_plain_loss(preset, autocast, monkeypatch):
    """The next-token loss through the chunked projection (8 rows of logits at a time) against
    HF's own causal loss on the whole logits: the same loss and every gradient, within float32
    rounding (bf16 autocast on CPU: within bf16 rounding, 1 %); no operation makes a tensor
    of the batch's logits (B·L·V), only chunks of them."""
    import fdapt_core.linear_ce as linear_ce
    from fdapt_core.objective import CausalLM

    monkeypatch.setattr(linear_ce, "CHUNK_ELEMENTS", 8 * V)
    model = decoder(preset)
    x = torch.randint(5, V, (B, L), generator=torch.Generator().manual_seed(1))
    inputs, labels = CausalLM().batch(x, None)
    spec = scoring_head(model, "clm", length=L)
    assert spec.projection is not None and spec.why.startswith("chunked")
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast \
        else __import__("contextlib").nullcontext
    model.zero_grad(set_to_none=True)
    with ctx():
        plain = model(input_ids=x, labels=x).loss  # HF shifts the labels itself
    plain.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    largest = Largest()
    with largest, ctx():
        loss = spec.mean_loss(spec.target(model), inputs, labels)
    with largest:
        loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert largest.numel < B * L * V  # the body's largest tensor, or a chunk of logits
    assert largest.numel <= max(8 * V, B * L * 4 * 64)
    rel = 1e-2 if autocast else 2e-6
    assert abs(float((loss - plain).detach())) <= rel * float(plain.detach())
    assert got.keys() == want.keys()
    for n in want:
        scale = float(want[n].abs().max()) or 1.0
        assert float((got[n] - want[n]).abs().max()) <= (5e-2 if autocast else 2e-5) * scale, n


def test_the_chunked_loss_skips_what_is_frozen():
    """A frozen projection gets no gradient and costs no weight product; rows that do not need
    a gradient get none (the body frozen under it)."""
    from fdapt_core.linear_ce import linear_cross_entropy

    gen = torch.Generator().manual_seed(0)
    h = torch.randn(10, H, generator=gen, requires_grad=True)
    w = torch.randn(V, H, generator=gen)
    y = torch.randint(V, (10,), generator=gen)
    linear_cross_entropy(h, w, None, y, chunk=3).backward()
    want = torch.autograd.grad(torch.nn.functional.cross_entropy(h @ w.t(), y,
                                                                 reduction="sum"), h)[0]
    assert w.grad is None and torch.allclose(h.grad, want, atol=1e-5)
    w.requires_grad_(True)
    h2 = h.detach()
    linear_cross_entropy(h2, w, None, y, chunk=4).backward()
    assert h2.grad is None and w.grad is not None


@pytest.mark.parametrize("preset", ["gpt2-tiny", "llama-tiny"])
def test_the_held_out_scorer_gives_the_same_loss_chunked(preset, monkeypatch):
    import fdapt_core.linear_ce as linear_ce
    from fdapt_core.fl.evaluate import HeldOut
    from fdapt_core.objective import CausalLM

    model = decoder(preset)
    x = torch.randint(5, V, (B, L), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = float(model(input_ids=x, labels=x).loss)
    monkeypatch.setattr(linear_ce, "CHUNK_ELEMENTS", 5 * V)
    got = HeldOut(x, CausalLM(), 0, 4).evaluate(model, torch.device("cpu"))["loss"]
    assert abs(got - want) <= 1e-6 * want


def test_the_flop_count_of_the_chunked_head_is_the_model_s_less_the_last_position():
    """The head runs at every position but each block's last: 6·B·H·V fewer FLOPs than the
    dense head (llama: untied, no bias), the body unchanged."""
    from fdapt_core.flops.count import FlopCache

    model = decoder("llama-tiny")
    hidden = model.config.hidden_size
    dense = FlopCache(model).get(frozenset(), (B, L))
    chunked = FlopCache(model, scoring_head(model, "clm", length=L)).get(frozenset(), (B, L))
    assert dense.total - chunked.total == 6 * B * hidden * V
