"""FLOPs that see freezing: each frozen set saves exactly what its structure predicts.

Predictions are written from the architecture (DistilBERT block: Q, K, V, O projections of
d×d, FFN d×d_ff and d_ff×d, attention scores and values 2·B·L²·d each), not from the counter.
"""
from __future__ import annotations

import pytest
import torch

from fdapt_core.config.run import FreezeConfig
from fdapt_core.freeze.policies import FreezePlan, apply_freeze, plan_freezing
from fdapt_core.model import build_from_preset
from fdapt_core.flops.count import FlopCache, count_step_flops
from fdapt_core.profiling.peak import Peak, datasheet_tflops, precision_of, utilisation
from fdapt_core.runner import run

V, L, B, D, DFF = 300, 32, 4, 64, 256  # the tiny preset: d=64, d_ff=256
T = B * L
LINEAR = 2 * T * (4 * D * D + 2 * D * DFF)  # a block's weight GEMMs, forward
ATTENTION = 2 * 2 * B * L * L * D  # QKᵀ and AV, forward
HEAD = 2 * T * D * D + 2 * T * D * V  # vocab transform + (tied) output projection


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_from_preset("tiny", V, 64)
    x = torch.randint(5, V, (B, L))
    return model, x, count_step_flops(model, x, x.clone())


def saving(model, x, full, plan):
    apply_freeze(model, plan)
    try:
        frozen = count_step_flops(model, x, x.clone())
    finally:
        apply_freeze(model, None)
    assert frozen.forward == full.forward  # freezing never changes the forward pass
    return full.total - frozen.total


def test_full_step_is_forward_plus_twice_forward(setup):
    model, x, full = setup
    assert full.forward == 6 * (LINEAR + ATTENTION) + HEAD
    assert full.backward == 2 * full.forward


def test_middle_block_saves_only_its_weight_gradients(setup):
    model, x, full = setup
    names = frozenset(n for n, _ in model.named_parameters()
                      if n.startswith("distilbert.transformer.layer.3."))
    assert saving(model, x, full, FreezePlan((3,), False, names)) == LINEAR


@pytest.mark.parametrize("k", [1, 2, 3])
def test_bottom_k_with_embeddings_saves_their_whole_backward(setup, k):
    model, x, full = setup
    plan = plan_freezing(model, "bottom", FreezeConfig(k=k, embeddings=True), [1])[0]
    # the frozen blocks' backward (2× forward), the first trainable block's input gradients
    # through Q, K and V, and the tied output projection's weight gradient
    predicted = k * 2 * (LINEAR + ATTENTION) + 3 * 2 * T * D * D + 2 * T * D * V
    assert saving(model, x, full, plan) == predicted


def test_bottom_without_embeddings_is_only_weight_gradients(setup):
    model, x, full = setup
    plan = plan_freezing(model, "bottom", FreezeConfig(k=2, embeddings=False), [1])[0]
    assert saving(model, x, full, plan) == 2 * LINEAR  # gradients still flow to embeddings


def test_counting_leaves_no_gradients_and_no_rng_trace(setup):
    model, x, full = setup
    state = torch.get_rng_state()
    count_step_flops(model, x, x.clone())
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.grad is None for p in model.parameters())


def test_meta_twin_counts_what_the_model_dispatches_in_training(setup):
    model, x, full = setup
    cache = FlopCache(model)
    assert cache.get(frozenset(), tuple(x.shape)) == full
    plan = plan_freezing(model, "bottom", FreezeConfig(k=2), [1])[0]
    apply_freeze(model, plan)
    try:
        real = count_step_flops(model, x, x.clone())
    finally:
        apply_freeze(model, None)
    assert cache.get(plan.names, tuple(x.shape)) == real
    assert cache.get(frozenset(), tuple(x.shape)) == full  # the twin's freezing is per call


def test_the_fused_cpu_attention_kernel_is_counted(setup):
    """Without dropout (eval mode here; Llama-style models, `model.dropout: 0` in training) CPU
    SDPA runs a fused flash kernel torch has no FLOP formula for: every block's attention would
    vanish. Ours counts it as the decomposed path's products, forward and backward."""
    model, x, full = setup
    model.eval()
    try:
        evaluated = count_step_flops(model, x, x.clone())
    finally:
        model.train()
    assert evaluated == full


def test_record_flops_scale_with_samples_and_beat_the_estimate_when_frozen(tiny):
    rec = run(tiny("fl.rounds=1", "freeze.policy=bottom"), "ffdapt")
    for c in rec["rounds"][0]["clients"]:
        step = c["step_flops"]
        assert c["train_flops"] == round((step["forward"] + step["backward"]) / step["batch"]
                                         * c["samples"])
        # the 6·N·tokens estimate, tokens from the samples and TINY's 32-token blocks
        assert c["analytic_flops"] == 6 * rec["model"]["parameters"] * c["samples"] * 32
    t = rec["totals"]
    assert t["train_flops"] == sum(c["train_flops"] for c in rec["rounds"][0]["clients"])
    assert t["tokens_per_s"] > 0 and t["peak_mem_mb"] > 0
    assert 0 < t["outside_train_share"] < 1
    assert {"data", "forward", "backward", "optimizer", "aggregation", "evaluation",
            "checkpoint"} <= set(t["phases_s"])
    assert t["bytes_sent"] == t["bytes_up"] + t["bytes_down"]


def test_mfu_divides_by_every_device_that_trained():
    """Two clients of 3 TFLOP each, trained in 2 s and 4 s, each data-parallel over a group of
    2 devices: 6 TFLOP in 12 device-seconds on a 1 TF/s device is 50 % (not 100 %)."""
    peak = Peak("bf16", datasheet=1e12, datasheet_source="profile.peak_tflops", measured=2e12)
    u = utilisation(6e12, 2.0 + 4.0, 2, peak)
    assert u["device_train_s"] == 12.0
    assert u["mfu"] == pytest.approx(0.5)
    assert u["mfu_measured_peak"] == pytest.approx(0.25)
    assert utilisation(6e12, 6.0, 1, peak)["mfu"] == pytest.approx(1.0)
    assert utilisation(None, 6.0, 1, peak)["mfu"] is None


@pytest.mark.parametrize("name, precision, tflops", [
    ("NVIDIA H200", "bf16", 989.4), ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
    ("NVIDIA H100 PCIe", "bf16", 756.5), ("NVIDIA A100-SXM4-80GB", "fp32", 19.5),
    ("NVIDIA L40S", "bf16", 362.1), ("NVIDIA L4", "bf16", 121.0),
    ("NVIDIA GeForce RTX 3060", "bf16", None)])
def test_datasheet_peaks_by_device_name_and_precision(name, precision, tflops):
    assert datasheet_tflops(name, precision) == tflops


def test_precision_is_the_one_trained_in():
    cpu = torch.device("cpu")
    assert precision_of(torch.bfloat16, cpu) == "bf16"
    assert precision_of(None, cpu) == "fp32"


@pytest.mark.slow
def test_record_mfu_is_labelled_with_its_peak(tiny):
    rec = run(tiny("fl.rounds=1", "profile.peak_tflops=0.5"), "fdapt")
    t = rec["totals"]
    assert t["devices_per_client"] == 1 and t["device_train_s"] == t["local_train_s"]
    assert t["peak"] == {"precision": "fp32", "datasheet": 0.5e12,
                         "datasheet_source": "profile.peak_tflops", "measured": None}
    assert 0 < t["mfu"] < 1 and t["mfu_measured_peak"] is None  # no matmul peak on a CPU
    off = run(tiny("fl.rounds=1", "profile.count_flops=false", "name=off"), "fdapt")
    assert off["totals"]["train_flops"] is None and off["totals"]["mfu"] is None
    none = run(tiny("fl.rounds=1", "name=nopeak"), "fdapt")  # a CPU has no datasheet row
    assert none["totals"]["mfu"] is None and none["totals"]["peak"]["datasheet"] is None


def test_times_over_parallel_ranks_are_never_a_negative_share():
    """4 clients, 2 at a time on 2 ranks: the loops' seconds summed over ranks (236 s) were set
    against a 185 s wall (share -0.28), and tok/s was one loop's rate, not the run's."""
    from fdapt_core.session import totals

    def client(c, wall):
        return {"client": c, "steps": 10, "tokens": 15_360, "samples": 120, "wall_s": wall,
                "train_flops": None, "analytic_flops": 1, "phases": {}, "bytes_up": 1,
                "bytes_down": 1, "trainable_params": 10}

    rounds = [{"clients": [client(0, 30.0), client(1, 29.0), client(2, 30.0), client(3, 29.0)],
               "ranks": [{"rank": 0, "local_train_s": 60.0}, {"rank": 1, "local_train_s": 58.0}],
               "wall_s": 64.0, "checkpoint_wall_s": 0.5, "train_wall_s": 61.0,
               "aggregate_wall_s": 0.1, "eval_wall_s": 1.0} for _ in range(2)]
    t = totals(rounds, n_params=10)
    assert t["loop_wall_s"] == 120.0  # the slowest rank each round, not 236
    assert 0 < t["outside_train_share"] < 0.1
    assert t["tokens_per_s"] == pytest.approx(4 * 2 * 15_360 / 236)  # one loop's rate
    assert t["tokens_per_train_wall_s"] == pytest.approx(4 * 2 * 15_360 / 122)  # the run's


@pytest.mark.parametrize("method", ["ffdapt", "central"])
def test_the_steps_are_counted_before_the_rounds_not_inside_them(tiny, monkeypatch, method):
    """A count walks the model on the meta device (0.2–0.5 s): inside a round it was most of
    the round's time outside training at small sizes (the GPU perf gate's 23.6 %). Every
    frozen set a run will meet (the paper policy: one per client) is counted before round 0;
    the rounds only look their counts up, and the record keeps the time as `flop_count_s`."""
    import fdapt_core.fl.engine as engine
    import fdapt_core.fl.server as server
    import fdapt_core.flops.count as flops

    events = []
    count = flops.count_step_flops
    monkeypatch.setattr(flops, "count_step_flops",
                        lambda *a, **k: events.append("count") or count(*a, **k))
    for cls in (server.Server, engine.CentralTrainer):
        train_round = cls.train_round
        monkeypatch.setattr(cls, "train_round", lambda self, r, _f=train_round:
                            events.append("round") or _f(self, r))
    rec = run(tiny("fl.rounds=2", "fl.clients=3"), method)
    assert events.count("round") == 2 and "count" in events
    assert "count" not in events[events.index("round"):]
    assert rec["totals"]["flop_count_s"] > 0
    assert all(c["step_flops"] for r in rec["rounds"] for c in r["clients"])
