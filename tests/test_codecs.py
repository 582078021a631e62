"""Upload codecs (fdapt_core/fl/codecs.py): bytes as encoded, decoding error within each
format's bound, top-k error feedback losing nothing, and runs that use them."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from fdapt_core.config.run import build_config
from fdapt_core.errors import ConfigError
from fdapt_core.fl.codecs import Codec, relative_error
from fdapt_core.methods import parse_method
from fdapt_core.runner import run
from fdapt_core.runs import run_dir


def _tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    glob = {"w": torch.randn(16, 8, generator=g), "b": torch.randn(8, generator=g)}
    sent = {k: v + 1e-3 * torch.randn(v.shape, generator=g) for k, v in glob.items()}
    return glob, sent


def test_none_sends_the_weights_bit_for_bit():
    glob, sent = _tensors()
    enc, residual = Codec("none").encode(sent, glob)
    assert residual is None and enc.nbytes == 4 * (16 * 8 + 8)
    out = Codec("none").decode(enc, glob)
    assert all(torch.equal(out[k], sent[k]) for k in sent)


@pytest.mark.parametrize("name, bits", [("bf16", 8), ("fp16", 11)])
def test_half_precision_changes_round_to_their_mantissa(name, bits):
    glob, sent = _tensors()
    codec = Codec(name)
    enc, _ = codec.encode(sent, glob)
    assert enc.nbytes == 2 * (16 * 8 + 8)
    out = codec.decode(enc, glob)
    for k in sent:
        delta = sent[k] - glob[k]
        err = (out[k] - glob[k] - delta).abs()
        # the change rounded to `bits` significant bits (+ the float32 sum's own rounding)
        assert (err <= delta.abs() * 2.0 ** -bits + 1e-6 * glob[k].abs()).all()


def test_int8_is_within_half_a_step_and_a_quarter_of_the_bytes():
    glob, sent = _tensors()
    codec = Codec("int8")
    enc, _ = codec.encode(sent, glob)
    assert enc.nbytes == (16 * 8 + 4) + (8 + 4)  # one byte a value, one fp32 scale a tensor
    out = codec.decode(enc, glob)
    for k in sent:
        delta = sent[k] - glob[k]
        step = float(delta.abs().max()) / 127
        assert float((out[k] - glob[k] - delta).abs().max()) <= step / 2 + 1e-6


def test_topk_error_feedback_delivers_every_change_eventually():
    """Σ over rounds of what was sent + what is still held back = Σ of the changes."""
    codec = Codec("topk", topk_fraction=0.1)
    g = torch.Generator().manual_seed(1)
    glob = {"w": torch.zeros(50)}
    residual, delivered, trained = None, torch.zeros(50), torch.zeros(50)
    for _ in range(6):
        change = torch.randn(50, generator=g)
        enc, residual = codec.encode({"w": glob["w"] + change}, glob, residual)
        assert enc.nbytes == 8 * 5  # 5 fp32 values + 5 int32 indices
        delivered += codec.decode(enc, glob)["w"] - glob["w"]
        trained += change
    assert torch.allclose(delivered + residual["w"], trained, atol=1e-5)


def test_relative_error_is_zero_without_loss():
    glob, sent = _tensors()
    assert relative_error(sent, sent, glob) == 0.0
    assert relative_error(glob, sent, glob) == pytest.approx(1.0)


def test_method_names_set_the_codec():
    cfg = build_config({})
    base, c = parse_method("ffdapt-paper-lora-int8-fedadam", cfg)
    assert (base, c.peft.method, c.fl.upload_codec, c.fl.strategy) == \
        ("ffdapt", "lora", "int8", "fedadam")
    assert parse_method("fdapt-diloco", cfg)[1].fl.strategy == "diloco"
    with pytest.raises(ConfigError, match="codec in bf16, fp16, int8, topk"):
        parse_method("central-int8", cfg)


@pytest.mark.slow
def test_int8_run_sends_a_quarter_and_learns_the_same(tiny):
    cfg = tiny("fl.rounds=2")
    ref, q = run(cfg, "fdapt"), run(cfg, "fdapt-int8")
    t = q["totals"]
    assert t["bytes_up"] <= 0.26 * t["bytes_up_dense"]
    assert t["bytes_up_dense"] == ref["totals"]["bytes_up"]
    assert q["final_eval"]["loss"] == pytest.approx(ref["final_eval"]["loss"], rel=0.01)
    errors = [c["codec_error"] for r in q["rounds"] for c in r["clients"]]
    assert all(0 < e < 0.01 for e in errors)


def test_topk_residuals_survive_a_resume(tiny):
    from tests.test_invariants import Stop, StopAfter

    extra = ("fl.rounds=3", "train.max_local_steps=2", "fl.topk_fraction=0.05")
    straight, broken = tiny(*extra, "name=straight"), tiny(*extra, "name=broken")
    rec = run(straight, "fdapt-topk")
    with pytest.raises(Stop):
        run(broken, "fdapt-topk", callbacks=StopAfter(0))
    run(broken, "fdapt-topk", resume=True)
    a = load_file(str(run_dir(straight, "fdapt-topk") / "model" / "model.safetensors"))
    b = load_file(str(run_dir(broken, "fdapt-topk") / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert rec["totals"]["bytes_up"] < 0.11 * rec["totals"]["bytes_up_dense"]
