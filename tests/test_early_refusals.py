"""Refusals that must come before anything trains or is written: a model that cannot serve the
objective asked of it, a weights file the harness will not load, a method whose freeze settings
the model cannot meet (checked for every method of a compare before the first one trains), a
study file that does not name what it studies."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fdapt_core.config.run import ModelConfig
from fdapt_core.errors import ModelError
from fdapt_core.model import check_model
from tests.conftest import ROOT


def bench(args, tmp_path):
    out, cache = tmp_path / "results", tmp_path / "cache"
    p = subprocess.run([sys.executable, "-m", "bench", *args, "--set", f"output_dir={out}",
                        "--set", f"cache_dir={cache}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    return p, out, cache


def refused(p, out, cache, *needles):
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr + p.stdout
    for n in needles:
        assert n in p.stderr, (n, p.stderr)
    assert not out.exists(), "a refused run wrote results"
    assert not cache.exists(), "a refused run wrote tokenizer or token caches"


def bert_folder(tmp_path, layers=2):
    from transformers import BertConfig, BertForMaskedLM

    folder = tmp_path / "bert"
    cfg = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=layers,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    BertForMaskedLM(cfg).save_pretrained(folder)
    return folder


def llama_folder(tmp_path, layers=2):
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path / "llama"
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=1, intermediate_size=32,
                      max_position_embeddings=64)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_next_token_loss_on_an_encoder_folder_is_refused(tmp_path):
    """An encoder's attention is bidirectional: a 'causal' loss on it sees the tokens it
    predicts (transformers builds BertLMHeadModel with is_decoder=False and only warns)."""
    folder = bert_folder(tmp_path)
    with pytest.raises(ModelError, match="encoder"):
        check_model(ModelConfig(preset=None, name_or_path=str(folder), objective="clm"))
    assert check_model(ModelConfig(preset=None, name_or_path=str(folder))) == "mlm"
    with pytest.raises(ModelError, match="decoder"):
        check_model(ModelConfig(preset=None, name_or_path=str(llama_folder(tmp_path)),
                                objective="mlm"))
    p, out, cache = bench(["run", "--method", "fdapt", "--set", "model.preset=null",
                           "--set", f"model.name_or_path={folder}",
                           "--set", "model.objective=clm"], tmp_path)
    refused(p, out, cache, "model.objective", "encoder")


@pytest.mark.slow
def test_a_preset_with_the_wrong_objective_writes_no_cache(tmp_path):
    p, out, cache = bench(["run", "--method", "fdapt", "--set", "model.objective=clm"],
                          tmp_path)
    refused(p, out, cache, "model.objective", "preset tiny")


@pytest.mark.slow
def test_a_folder_without_safetensors_is_refused_before_any_cache(tmp_path):
    folder = bert_folder(tmp_path)
    for f in folder.glob("*.safetensors"):
        state = {k: v.clone() for k, v in __import__("safetensors.torch", fromlist=["x"])
                 .load_file(str(f)).items()}
        torch.save(state, folder / "pytorch_model.bin")
        f.unlink()
    p, out, cache = bench(["run", "--method", "fdapt", "--set", "model.preset=null",
                           "--set", f"model.name_or_path={folder}"], tmp_path)
    refused(p, out, cache, "safetensors", "pytorch_model.bin")


def test_compare_checks_every_method_before_the_first_trains(tmp_path):
    """fdapt would train (a 2-block model is fine for it); ffdapt's paper policy cannot meet
    freeze.max_blocks 4. Nothing may train before that is said."""
    folder = llama_folder(tmp_path)
    p, out, cache = bench(["compare", "--config", "configs/clm.yaml",
                           "--methods", "fdapt,ffdapt", "--set", "model.preset=null",
                           "--set", f"model.name_or_path={folder}"], tmp_path)
    refused(p, out, cache, "freeze.max_blocks", "2 transformer blocks")


@pytest.mark.slow
def test_a_study_file_must_name_what_it_studies(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(f"name: s\nconfig: {ROOT / 'configs/default.yaml'}\npartitions: [iid]\n"
                     f"seeds: [0]\ntasks: [ncbi_disease]\nout: {tmp_path / 'study'}\n")
    p = subprocess.run([sys.executable, "-m", "bench", "study", "--config", str(study)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "methods" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "study").exists()
    keys = subprocess.run([sys.executable, "-m", "bench", "study", "--keys"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert keys.returncode == 0
    assert "methods = (required)" in keys.stdout and "quick = true" in keys.stdout


@pytest.mark.parametrize("command", ["run", "compare"])
def test_a_stopped_command_says_how_to_go_on(monkeypatch, capsys, tmp_path, command):
    """`run` goes on with --resume; `compare` (and `study`) have no --resume: they go on
    when run again."""
    from bench import cli
    from fdapt_core.interrupt import StopRequested

    def stopped(*_a, **_k):
        raise StopRequested(15)

    monkeypatch.setattr(cli, "_train", stopped)
    monkeypatch.setattr(cli, "_how_to_continue", list(cli._how_to_continue))
    args = ["--method", "fdapt"] if command == "run" else ["--methods", "fdapt"]
    monkeypatch.setattr(sys, "argv", ["bench", command, *args, "--set",
                                      f"output_dir={tmp_path}"])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 143
    said = " ".join(capsys.readouterr().err.split())
    assert "stopped by SIGTERM" in said
    if command == "run":
        assert "continue with --resume" in said
    else:
        assert "--resume" not in said and "run the same compare again" in said


def test_bench_help_has_no_source_line_breaks():
    p = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "COLUMNS": "400"})
    # at 400 columns each command's summary fits on one line
    lines = [x for x in p.stdout.splitlines() if x.startswith("│ ")]
    names = [x.split()[1] for x in lines if x[2] != " "]
    assert {"run", "compare", "study", "perf"} <= set(names)
    assert all(x[2] != " " for x in lines), p.stdout
