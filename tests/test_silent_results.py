"""Runs that learned nothing must not say "finished" (issue 35, part 1, item 1: a held-out set
that scores no tokens, a training loss that is NaN everywhere)."""
import json

import pytest
import torch

from fdapt_core.errors import DataError
from fdapt_core.fl.engine import TrainingError
from fdapt_core.fl.evaluate import HeldOut
from fdapt_core.model import TokenizerInfo
from fdapt_core.objective import build_objective
from fdapt_core.runner import run
from fdapt_core.runs import run_dir


def test_a_held_out_set_that_scores_no_tokens_is_refused():
    """A tokenizer of special tokens only turns every word into [UNK]: masking picks no token,
    and the held-out loss read 0.0000 (perplexity 1.00) before and after training."""
    tok = TokenizerInfo(vocab_size=5, mask_id=4, pad_id=0, special_ids=(0, 1, 2, 3, 4))
    blocks = torch.tensor([[2, 1, 1, 1, 3]] * 4)  # [CLS] [UNK] [UNK] [UNK] [SEP]
    with pytest.raises(DataError, match="scores no tokens"):
        HeldOut(blocks, build_objective("mlm", tok, 0.15), seed=0, batch_size=2)


def test_a_round_whose_every_client_trains_on_a_nan_loss_fails_the_run(tiny):
    cfg = tiny("fl.rounds=2", "fl.clients=2", "train.lr=1e12", "train.max_grad_norm=0",
               "name=nan")
    with pytest.raises(TrainingError, match="every client's training loss is nan"):
        run(cfg, "fdapt")
    rec = json.loads((run_dir(cfg, "fdapt") / "record.json").read_text())
    assert rec["status"] == "failed" and "training loss" in rec["error"]


@pytest.mark.parametrize("key", ["output_dir", "cache_dir"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_anything_is_built(
        tmp_path, key):
    """A read-only output_dir ended in a 1,714-line traceback, after the tokenizer and the
    token cache were written. (/proc stands for a read-only folder: root may write any other.)"""
    import subprocess
    import sys

    from tests.conftest import ROOT

    cache, out = tmp_path / "cache", tmp_path / "results"
    sets = {"output_dir": str(out), "cache_dir": str(cache), key: "/proc/fdapt-results"}
    p = subprocess.run([sys.executable, "-m", "bench", "run", "--method", "fdapt",
                        *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr and p.stderr.strip().startswith("error:"), p.stderr
    assert f"{key}: /proc/fdapt-results is not writable" in p.stderr
    assert not cache.exists() and not out.exists()  # nothing built, nothing half-written


def test_a_checkpoint_of_mixed_dtypes_says_it_is_upcast(tmp_path):
    """fp16 and fp32 tensors in one safetensors file loaded as fp32 without a word."""
    from safetensors.torch import load_file, save_file
    from transformers import BertConfig, BertForMaskedLM

    from fdapt_core.model import checkpoint_dtypes, load_pretrained

    folder = tmp_path / "model"
    BertForMaskedLM(BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64)).save_pretrained(
        folder)
    assert checkpoint_dtypes(folder) == ["float32"]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        load_pretrained(str(folder), "mlm")  # one dtype: nothing to say
    tensors = load_file(folder / "model.safetensors")
    half = {k: (v.half() if "encoder" in k else v) for k, v in tensors.items()}
    save_file(half, folder / "model.safetensors", metadata={"format": "pt"})
    assert checkpoint_dtypes(folder) == ["float16", "float32"]
    with pytest.warns(UserWarning, match="stores its weights in float16 and float32; all are "
                                         "loaded as float32"):
        load_pretrained(str(folder), "mlm")
