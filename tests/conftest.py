"""Shared fixtures: tiny configs that train in a second or two on a CPU."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from fdapt_core.config.run import build_config
from fdapt_core.data.synthetic import generate
from fdapt_core.prepare import prepare

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FDAPT_DATA_DIR") or ROOT.parent / "shared" / "data")

TINY = [
    "data.synthetic.n_docs=80", "data.max_seq_length=32", "data.val_fraction=0.1",
    "model.vocab_size=256", "fl.clients=2", "fl.rounds=2", "train.lr=1e-3",
    "eval.max_blocks=16", "train.threads=1",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One tokenizer / token cache for the whole session."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def tiny(tmp_path, cache_dir):
    """tiny(*overrides) -> a RunConfig writing under tmp_path."""

    def make(*overrides: str):
        return build_config({}, [*TINY, f"output_dir={tmp_path / 'results'}",
                                 f"cache_dir={cache_dir}", *overrides])

    return make


def needs_shared_data(path: str) -> Path:
    p = DATA / path
    if not p.exists():
        pytest.skip(f"{p} is absent (the shared data folder is not beside the project; "
                    "set FDAPT_DATA_DIR)")
    return p


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: skipped, with the reason, where there is none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run scripts/gpu_check.sh on a GPU)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def silo_corpus(tmp_path, tiny, sets_extra=()):
    """A JSONL corpus of 80 documents, the run's settings on it, and each client's documents
    written alone into its own file (what each institution holds)."""
    docs = generate(n_docs=80, n_topics=6, seed=0)
    whole = tmp_path / "whole.jsonl"
    whole.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in docs))
    sets = ["data.source=jsonl", f"data.path={whole}", "data.text_fields=[text]",
            "data.id_field=id", "fl.clients=2", *sets_extra]
    files = {}
    for c, ids in enumerate(prepare(tiny(*sets), "fdapt").manifest["clients"]):
        mine = set(ids)
        files[c] = tmp_path / f"client{c}.jsonl"
        # in another order than the server's, as another institution would store them
        files[c].write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n"
                                    for d in reversed(docs) if d.id in mine))
    return docs, sets, files
