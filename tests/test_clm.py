"""Decoders: the objective follows the model, blocks are found by structure, and FLOP counts
see freezing under causal attention, grouped-query attention, tied and untied heads."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from fdapt_core.config.run import FreezeConfig
from fdapt_core.errors import ModelError
from fdapt_core.fl.evaluate import HeldOut
from fdapt_core.freeze.policies import plan_freezing
from fdapt_core.model import (build_from_preset, embedding_prefix, objective_of,
                              transformer_blocks)
from fdapt_core.objective import CausalLM
from fdapt_core.flops.count import FlopCache, count_step_flops
from fdapt_core.prepare import prepare
from fdapt_core.runner import run
from fdapt_core.runs import run_dir
from tests.test_flops import saving

V, L, B = 300, 32, 4
T = B * L
ATTENTION = lambda d: 2 * 2 * B * L * L * d  # noqa: E731  QKᵀ and AV over all query heads


def weights(cfg, method):
    return load_file(str(run_dir(cfg, method) / "model" / "model.safetensors"))


# ------------------------------------------------------------------------ objective, structure

def test_the_objective_follows_the_architecture():
    from transformers import BertConfig, DistilBertConfig, GPT2Config, LlamaConfig, Qwen2Config

    assert objective_of(BertConfig()) == "mlm"  # BERT has a causal head too: still an encoder
    assert objective_of(DistilBertConfig()) == "mlm"
    assert {objective_of(c()) for c in (GPT2Config, LlamaConfig, Qwen2Config)} == {"clm"}


def test_causal_labels_are_the_next_tokens():
    x = torch.arange(12).view(2, 6)
    inputs, labels = CausalLM().batch(x, torch.Generator())
    assert torch.equal(inputs, x)
    assert labels[:, :-1].tolist() == x[:, 1:].tolist() and (labels[:, -1] == -100).all()


def test_blocks_and_embeddings_are_found_by_structure():
    from transformers import BertConfig, BertForMaskedLM

    gpt2 = build_from_preset("gpt2-tiny", V, 64)
    llama = build_from_preset("llama-tiny", V, 64)
    bert = BertForMaskedLM(BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=3,
                                      num_attention_heads=2, intermediate_size=64))
    assert [p for p, _ in transformer_blocks(gpt2)] == [f"transformer.h.{i}." for i in range(6)]
    assert [p for p, _ in transformer_blocks(llama)] == [f"model.layers.{i}." for i in range(6)]
    assert [p for p, _ in transformer_blocks(bert)] == [f"bert.encoder.layer.{i}."
                                                        for i in range(3)]
    assert transformer_blocks(build_from_preset("tiny", V, 64))[0][0] \
        == "distilbert.transformer.layer.0."
    assert set(embedding_prefix(gpt2)) == {"transformer.wte.", "transformer.wpe."}
    assert embedding_prefix(llama) == ("model.embed_tokens.",)
    assert embedding_prefix(bert) == ("bert.embeddings.",)


def test_a_preset_refuses_another_objective(tiny):
    with pytest.raises(ModelError, match="model.objective: mlm, but preset llama-tiny is a "
                                         "decoder"):
        prepare(tiny("model.preset=llama-tiny", "model.objective=mlm"), "fdapt")
    with pytest.raises(ModelError, match="preset tiny is an encoder"):
        prepare(tiny("model.objective=clm"), "fdapt")


def test_heldout_clm_loss_is_the_models_own_causal_loss():
    torch.manual_seed(0)
    model = build_from_preset("llama-tiny", V, 64).eval()
    blocks = torch.randint(5, V, (6, 24))
    held = HeldOut(blocks, CausalLM(), seed=0, batch_size=4)
    ours = held.evaluate(model, torch.device("cpu"))["loss"]
    with torch.no_grad():  # HF shifts the labels itself
        ref = model(input_ids=blocks, labels=blocks).loss.item()
    assert ours == pytest.approx(ref, rel=1e-5)


# ------------------------------------------------------------------------ runs

@pytest.mark.slow
@pytest.mark.parametrize("preset", ["gpt2-tiny", "llama-tiny"])
def test_one_client_one_round_fdapt_is_central(tiny, preset):
    cfg = tiny("fl.clients=1", "fl.rounds=1", f"model.preset={preset}")
    rc, rf = run(cfg, "central"), run(cfg, "fdapt")
    assert rc["objective"] == rf["objective"] == "clm"
    assert rc["totals"]["steps"] == rf["totals"]["steps"] > 0
    a, b = weights(cfg, "central"), weights(cfg, "fdapt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert rf["final_eval"]["loss"] == rc["final_eval"]["loss"] < rf["initial_eval"]["loss"]


def test_clm_resume_is_exact(tiny):
    from tests.test_invariants import Stop, StopAfter

    extra = ("model.preset=llama-tiny", "fl.rounds=3", "train.max_local_steps=2")
    straight, broken = tiny(*extra, "name=straight"), tiny(*extra, "name=broken")
    run(straight, "ffdapt")
    with pytest.raises(Stop):
        run(broken, "ffdapt", callbacks=StopAfter(0))
    run(broken, "ffdapt", resume=True)
    a, b = weights(straight, "ffdapt"), weights(broken, "ffdapt")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_saved_decoder_folder_is_a_starting_point(tiny, tmp_path):
    """A local folder (as a hub download lands): the objective is read from its config."""
    first = tiny("model.preset=llama-tiny", "fl.rounds=1", "name=first")
    run(first, "fdapt")
    folder = run_dir(first, "fdapt") / "model"
    rec = run(tiny("model.preset=null", f"model.name_or_path={folder}", "fl.rounds=1",
                   "name=second"), "fdapt")
    assert rec["objective"] == "clm" and rec["model"]["class"] == "LlamaForCausalLM"
    # it starts where the first run ended
    assert rec["initial_eval"]["loss"] == pytest.approx(
        run(first, "fdapt")["final_eval"]["loss"], rel=1e-6)


# ------------------------------------------------------------------------ FLOPs vs arithmetic

def _saving(model, x, plan):
    full = count_step_flops(model, x, x.clone())
    return full, saving(model, x, full, plan)


def _names(model, prefix):
    return frozenset(n for n, _ in model.named_parameters() if n.startswith(prefix))


# Llama-tiny: d 64, 4 query heads, 2 key/value heads of 16 (K and V project to 32), SwiGLU 176,
# untied head. GPT-2-tiny: d 64, fused QKV (64 → 192), MLP 256, head tied to the embeddings.
D, KV, FF_L, FF_G = 64, 32, 176, 256
LINEAR_L = 2 * T * (2 * D * D + 2 * D * KV + 3 * D * FF_L)
LINEAR_G = 2 * T * (4 * D * D + 2 * D * FF_G)
HEAD = 2 * T * D * V


@pytest.fixture(scope="module")
def decoders():
    torch.manual_seed(0)
    x = torch.randint(5, V, (B, L))
    return {p: build_from_preset(p, V, 64) for p in ("llama-tiny", "gpt2-tiny")}, x


# GPT-2 trains with attention dropout, so SDPA runs the decomposed math path; Llama has none and
# runs the fused CPU flash kernel: both counted as model FLOPs (backward twice forward).
@pytest.mark.parametrize("preset, linear", [("llama-tiny", LINEAR_L), ("gpt2-tiny", LINEAR_G)])
def test_decoder_full_step_and_a_frozen_middle_block(decoders, preset, linear):
    models, x = decoders
    model = models[preset]
    full, saved = _saving(model, x, _plan_block(model, 3))
    # causal attention is counted as the full L×L products the kernel runs
    assert full.forward == 6 * (linear + ATTENTION(D)) + HEAD
    assert full.backward == 2 * full.forward
    assert saved == linear  # a middle block: only its weight gradients


def _plan_block(model, b):
    from fdapt_core.freeze.policies import FreezePlan

    return FreezePlan((b,), False, _names(model, transformer_blocks(model)[b][0]))


@pytest.mark.parametrize("k", [1, 2])
def test_llama_bottom_with_embeddings_keeps_its_untied_head(decoders, k):
    models, x = decoders
    model = models["llama-tiny"]
    plan = plan_freezing(model, "bottom", FreezeConfig(k=k, embeddings=True), [1])[0]
    _, saved = _saving(model, x, plan)
    # the frozen blocks' whole backward; no more: the first trainable block normalises its
    # input with a trainable RMSNorm before Q, K, V (pre-norm), so their input gradients are
    # still needed (unlike post-norm DistilBERT), and the untied head still trains
    assert saved == k * 2 * (LINEAR_L + ATTENTION(D))


def test_gpt2_bottom_with_embeddings_saves_the_tied_head_gradient(decoders):
    models, x = decoders
    model = models["gpt2-tiny"]
    plan = plan_freezing(model, "bottom", FreezeConfig(k=2, embeddings=True), [1])[0]
    assert {"transformer.wte.weight", "transformer.wpe.weight"} <= plan.names
    _, saved = _saving(model, x, plan)
    # the frozen blocks' whole backward (pre-norm: block 2 still needs its QKV's input
    # gradient, for its trainable ln_1) + the tied head's weight gradient
    assert saved == 2 * 2 * (LINEAR_G + ATTENTION(D)) + HEAD


def test_the_meta_twin_counts_decoders_too(decoders):
    models, x = decoders
    for model in models.values():
        assert FlopCache(model).get(frozenset(), tuple(x.shape)) \
            == count_step_flops(model, x, x.clone())
