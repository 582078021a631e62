"""LoRA clients (peft): only the adapters train, travel and are averaged; the base stays as it
was, bit for bit; FLOPs are counted as dispatched; freezing composes; the final model is saved
merged and as an adapter folder; resume is exact."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from fdapt_core.adapters import adapter_names, attach
from fdapt_core.config.run import PeftConfig, build_config
from fdapt_core.errors import ConfigError
from fdapt_core.fl.fedavg import FedAvg
from fdapt_core.model import build_from_preset, build_model, transformer_blocks
from fdapt_core.flops.count import FlopCache, count_step_flops
from fdapt_core.methods import parse_method
from fdapt_core.prepare import prepare
from fdapt_core.runner import run
from fdapt_core.runs import run_dir

LLAMA = ("model.preset=llama-tiny", "fl.rounds=2", "train.max_local_steps=3")


def _capture(monkeypatch):
    """Every upload folded into the strategy, as (client, {name: tensor copy})."""
    seen = []
    original = FedAvg.accumulate

    def accumulate(self, client, sent, weight):
        seen.append((client, {k: v.detach().clone() for k, v in sent.items()}))
        return original(self, client, sent, weight)

    monkeypatch.setattr(FedAvg, "accumulate", accumulate)
    return seen


def _final_model(monkeypatch):
    """The run's model just before its adapters are merged into it."""
    import fdapt_core.session as session

    box = {}
    original = session.merged

    def merged(wrapper):
        box["model"] = {k: v.detach().clone()
                        for k, v in wrapper.base_model.model.named_parameters()}
        return original(wrapper)

    monkeypatch.setattr(session, "merged", merged)
    return box


def test_method_names_set_lora():
    cfg = build_config({})
    base, c = parse_method("ffdapt-paper-lora-fedadam", cfg)
    assert (base, c.freeze.policy, c.peft.method, c.fl.strategy) == \
        ("ffdapt", "paper", "lora", "fedadam")
    assert parse_method("fdapt-lora", cfg)[1].peft.method == "lora"
    assert parse_method("fdapt", cfg)[1].peft.method == "none"
    for bad in ("fdapt-fedadam-lora", "lora", "fdapt-lora-lora"):
        with pytest.raises(ConfigError, match="-lora"):
            parse_method(bad, cfg)


def test_the_base_is_untouched_and_only_adapters_travel(tiny, monkeypatch):
    cfg = tiny(*LLAMA)
    uploads, final = _capture(monkeypatch), _final_model(monkeypatch)
    rec = run(cfg, "fdapt-lora")
    start = prepare(cfg, "fdapt-lora").model
    adapters = adapter_names(start)
    assert adapters and all(".lora_A." in n or ".lora_B." in n for n in adapters)
    # every upload is exactly the adapter tensors, nothing of the base
    assert len(uploads) == cfg.fl.clients * cfg.fl.rounds
    assert all(set(sent) == adapters for _, sent in uploads)
    n_adapter = sum(start.get_parameter(n).numel() for n in adapters)
    assert rec["model"]["peft"]["adapter_parameters"] == n_adapter
    rows = [c for r in rec["rounds"] for c in r["clients"]]
    assert {c["bytes_up"] for c in rows} == {c["bytes_down"] for c in rows} == {4 * n_adapter}
    assert {c["trainable_params"] for c in rows} == {n_adapter}
    # the base, bit for bit; the adapters moved (B starts at zero)
    trained = final["model"]
    for name, p in start.named_parameters():
        if name in adapters:
            continue
        assert torch.equal(trained[name], p.detach()), name
    assert any(not torch.equal(trained[n], start.get_parameter(n)) for n in adapters
               if ".lora_B." in n)
    assert rec["final_eval"]["loss"] < rec["initial_eval"]["loss"]


def test_frozen_blocks_keep_their_adapters_home(tiny, monkeypatch):
    cfg = tiny(*LLAMA, "freeze.k=2", "freeze.embeddings=true")
    uploads = _capture(monkeypatch)
    rec = run(cfg, "ffdapt-bottom-lora")
    model = prepare(cfg, "ffdapt-bottom-lora").model
    bottom = tuple(p for p, _ in transformer_blocks(model)[:2])
    expected = {n for n in adapter_names(model) if not n.startswith(bottom)}
    assert expected and all(set(sent) == expected for _, sent in uploads)
    rows = [c for r in rec["rounds"] for c in r["clients"]]
    assert all(c["frozen_blocks"] == [0, 1] for c in rows)
    full = run(cfg, "fdapt-lora")["rounds"][0]["clients"][0]
    assert rows[0]["step_flops"]["backward"] < full["step_flops"]["backward"]


def test_saved_adapter_folder_and_merged_model_agree(tiny):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = tiny(*LLAMA)
    rec = run(cfg, "fdapt-lora")
    out = run_dir(cfg, "fdapt-lora")
    assert rec["adapter_dir"] == "adapter" and rec["model_dir"] == "model"
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    prep = prepare(cfg, "fdapt")  # the same base, no adapters
    base = build_model(cfg.model, prep.tokenizer, cfg.data.max_seq_length, cfg.seed).eval()
    with_adapter = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    plain = AutoModelForCausalLM.from_pretrained(str(out / "model")).eval()
    assert not any(".lora_" in k for k in load_file(str(out / "model" / "model.safetensors")))
    x = prep.client_blocks[0][:2]
    with torch.no_grad():
        a, b = with_adapter(input_ids=x).logits, plain(input_ids=x).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_lora_resume_is_exact(tiny):
    from tests.test_invariants import Stop, StopAfter

    extra = (*LLAMA, "fl.rounds=3")
    straight, broken = tiny(*extra, "name=straight"), tiny(*extra, "name=broken")
    run(straight, "ffdapt-paper-lora")
    with pytest.raises(Stop):
        run(broken, "ffdapt-paper-lora", callbacks=StopAfter(0))
    run(broken, "ffdapt-paper-lora", resume=True)
    for folder, file in (("model", "model.safetensors"),
                         ("adapter", "adapter_model.safetensors")):
        a = load_file(str(run_dir(straight, "ffdapt-paper-lora") / folder / file))
        b = load_file(str(run_dir(broken, "ffdapt-paper-lora") / folder / file))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# GPT-2-tiny (d 64, fused QKV Conv1D 64 → 192, MLP 256, head tied to the embeddings) with LoRA
# of rank 4 on every block's c_attn; batch 4 × 32 tokens.
V, L, B, R = 300, 32, 4, 4
T, D, FF = B * L, 64, 256
ATTENTION = 2 * 2 * B * L * L * D
LINEAR = 2 * T * (4 * D * D + 2 * D * FF)
HEAD = 2 * T * D * V


def test_lora_flops_are_counted_as_dispatched():
    torch.manual_seed(0)
    model, _ = attach(PeftConfig(method="lora", r=R), build_from_preset("gpt2-tiny", V, 64))
    x = torch.randint(5, V, (B, L))
    step = count_step_flops(model, x, x.clone())
    full_forward = 6 * (LINEAR + ATTENTION) + HEAD
    # each adapter adds x·A (d → r) and ·B (r → 3d)
    assert step.forward == full_forward + 6 * 2 * T * R * (D + 3 * D)
    # The frozen base computes no weight gradient, but still passes activation gradients down
    # to the adapters (attention too, and the tied head's input gradient), except block 0's QKV
    # input: nothing below it trains. Each adapter: B's weight and input gradients (r × 3d),
    # A's weight gradient (d × r) and, above block 0, its input gradient.
    base = 6 * LINEAR + 6 * 2 * ATTENTION + HEAD - 2 * T * D * 3 * D
    adapters = 6 * (2 * 2 * T * R * 3 * D + 2 * T * D * R) + 5 * 2 * T * D * R
    assert step.backward == base + adapters
    assert FlopCache(model).get(frozenset(), (B, L)) == step  # the meta twin has the adapters


def test_bad_lora_settings_are_refused_up_front(tiny):
    with pytest.raises(ConfigError, match="peft.target_modules"):
        prepare(tiny("model.preset=llama-tiny", "peft.target_modules=[no_such_proj]"),
                "fdapt-lora")


def test_a_budget_over_lora_clients_counts_the_all_frozen_candidate():
    """Every block frozen leaves a LoRA model nothing to train: that candidate's step is a
    forward alone (no backward), and the budget policy still chooses among the rest."""
    from fdapt_core.freeze.policies import budget_candidates

    torch.manual_seed(0)
    model, _ = attach(PeftConfig(method="lora", r=R), build_from_preset("llama-tiny", V, 64))
    candidates = budget_candidates(model, True, (B, L))
    everything = [c for c in candidates if len(c.blocks) == 6 and c.embeddings]
    step = FlopCache(model).get(frozenset(n for n, _ in model.named_parameters()), (B, L))
    assert step.backward == 0 and everything and everything[0].saving > 0.5
