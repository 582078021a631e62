"""Determinism on CPU: the same cell run twice, in fresh processes with fresh caches, gives the
same numbers and the same weights, bit for bit; so does the preset tokenizer it trains.

Fresh processes matter: `tokenizers`' own WordPiece trainer gave a different vocabulary in
every process (a randomly seeded Rust hash map), which only a new process shows. Each pair of
processes also gets a different PYTHONHASHSEED, so nothing may depend on Python's set or dict
order of strings either.
"""
from __future__ import annotations

import pytest

import json
import os
import subprocess
import sys

from fdapt_core.wordpiece import learn_vocab
from tests.conftest import ROOT, TINY

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _env(hash_seed: int) -> dict:
    return {**os.environ, "PYTHONHASHSEED": str(hash_seed), "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _in_parallel(commands: list[list[str]], timeout: int = 300) -> list[str]:
    """Run the commands at once in fresh processes (hash seeds 1, 2, …); their stdouts."""
    procs = [subprocess.Popen(c, cwd=ROOT, env=_env(i + 1), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i, c in enumerate(commands)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]
        outs.append(out)
    return outs


# ----------------------------------------------------------------------------- tokenizer

_BUILD = """
import json, sys
from tokenizers import normalizers, pre_tokenizers
from fdapt_core.data.synthetic import generate
from fdapt_core.wordpiece import count_words, learn_vocab
texts = [d.text for d in generate(n_docs=600, n_topics=6, seed=0)]
counts = count_words(texts, normalizers.BertNormalizer(lowercase=False),
                     pre_tokenizers.BertPreTokenizer())
print(json.dumps({n: learn_vocab(counts, n, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
                  for n in (512, 1024, 4096)}))
"""


def test_preset_vocabulary_is_the_same_in_fresh_processes():
    # the default corpus; `tokenizers`' WordPieceTrainer gave three different sets here
    outs = [json.loads(o) for o in _in_parallel([[sys.executable, "-c", _BUILD]] * 3)]
    assert outs[0] == outs[1] == outs[2]
    assert [len(v) for v in outs[0].values()] == [512, 1024, 2236]  # 4096: merges run out


def test_preset_tokenizer_wraps_the_learnt_vocabulary(tmp_path):
    from tokenizers import normalizers, pre_tokenizers

    from fdapt_core.data.synthetic import generate
    from fdapt_core.model import load_tokenizer, train_tokenizer
    from fdapt_core.wordpiece import BUILDER_VERSION, count_words

    texts = [d.text for d in generate(n_docs=200, n_topics=6, seed=0)]
    tok = train_tokenizer(texts, 700, tmp_path)
    counts = count_words(texts, normalizers.BertNormalizer(lowercase=False),
                         pre_tokenizers.BertPreTokenizer())
    assert tok.convert_ids_to_tokens(list(range(len(tok)))) == learn_vocab(counts, 700, SPECIAL)
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id,
            tok.mask_token_id] == [0, 1, 2, 3, 4]
    enc = tok("heart failure [MASK] troponin")["input_ids"]
    assert enc[0] == 2 and enc[-1] == 3 and 4 in enc  # [CLS] … [SEP]; [MASK] kept whole
    (folder,) = tmp_path.glob("tokenizer-*")
    assert folder.name.startswith(f"tokenizer-dwp{BUILDER_VERSION}-700-")
    tok.save_pretrained(tmp_path / "saved")
    again = load_tokenizer(str(tmp_path / "saved"))
    assert again.get_vocab() == tok.get_vocab() and again("a ##b [SEP]") == tok("a ##b [SEP]")
    train_tokenizer(texts, 700, tmp_path)  # cached: no second folder
    assert len(list(tmp_path.glob("tokenizer-*"))) == 1


def test_learn_vocab_breaks_ties_by_the_pairs_strings():
    # every pair occurs twice: ties everywhere; the smallest (left, right) strings merge first
    counts = {"ab": 2, "cd": 2, "ba": 2}
    vocab = learn_vocab(counts, 5 + 4 + 3 + 1, SPECIAL)
    assert vocab[:5] == SPECIAL
    assert vocab[5:9] == ["a", "b", "c", "d"] and vocab[9:12] == ["##a", "##b", "##d"]
    assert vocab[12:] == ["ab"]  # ("a", "##b") < ("b", "##a") < ("c", "##d")
    assert learn_vocab(counts, 100, SPECIAL)[12:] == ["ab", "ba", "cd"]
    # a higher count wins over string order; the input's order does not matter
    assert learn_vocab({"cd": 3, "ab": 2, "ba": 2}, 14, SPECIAL)[12:] == ["cd", "ab"]
    assert learn_vocab(dict(reversed(list(counts.items()))), 100, SPECIAL) == \
        learn_vocab(counts, 100, SPECIAL)


def test_learn_vocab_builds_words_from_continuation_pieces():
    counts = {"lowest": 5, "lower": 4, "newest": 6, "widest": 3}
    full = learn_vocab(counts, 1000, SPECIAL)  # until no pair is left: every word whole
    assert len(full) == len(set(full)) and set(counts) <= set(full) and "##st" in full
    assert learn_vocab(counts, 26, SPECIAL) == full[:26]  # capped: a prefix of the same run
    # the characters are always kept, even past the cap
    assert learn_vocab({"lowest": 5, "lower": 4}, 3, SPECIAL)[5:] == \
        ["e", "l", "o", "r", "s", "t", "w", "##e", "##o", "##r", "##s", "##t", "##w"]


def _reference_vocab(counts: dict, vocab_size: int) -> list[str]:
    """The same learner, naively: recount every pair before every merge."""
    words = {w: [w[0]] + ["##" + c for c in w[1:]] for w in counts}
    vocab = list(dict.fromkeys(SPECIAL + sorted({c for w in counts for c in w})
                               + sorted({"##" + c for w in counts for c in w[1:]})))
    while len(vocab) < vocab_size:
        pairs: dict = {}
        for w, sym in words.items():
            for pair in zip(sym, sym[1:]):
                pairs[pair] = pairs.get(pair, 0) + counts[w]
        if not pairs:
            break
        left, right = min(pairs, key=lambda p: (-pairs[p], p))
        new = left + right[2:]
        vocab += [new] if new not in vocab else []
        for w, sym in words.items():
            out, i = [], 0
            while i < len(sym):
                if sym[i:i + 2] == [left, right]:
                    out.append(new)
                    i += 2
                else:
                    out.append(sym[i])
                    i += 1
            words[w] = out
    return vocab


def test_learn_vocab_matches_a_naive_learner():
    import random

    rng = random.Random(0)
    for _ in range(150):
        counts = {"".join(rng.choice("aab#c") for _ in range(rng.randint(1, 9))):
                  rng.randint(1, 4) for _ in range(rng.randint(1, 25))}
        for size in (12, 20, 60):
            assert learn_vocab(counts, size, SPECIAL) == _reference_vocab(counts, size), counts


# ----------------------------------------------------------------------------- a whole cell

@pytest.mark.slow
def test_a_cell_run_three_times_gives_the_same_numbers_and_weights(tmp_path):
    """Three reruns at once, on the default thread count: each starts beside the others, as a
    rerun does on a busy host. The default once followed the fdapt runs alive (the first
    started on 2 threads, the next on 1), and reruns parted in the last bits one time in
    three."""
    def command(i: int) -> list[str]:
        # a few steps are enough: with another vocabulary even the initial loss differs
        out = tmp_path / f"out{i}"
        sets = [*TINY, "train.max_local_steps=4", "profile.count_flops=false", "name=det",
                "train.threads=null", f"output_dir={out}", f"cache_dir={out / 'cache'}"]
        return [sys.executable, "-m", "bench", "run", "--method", "fdapt",
                *[a for s in sets for a in ("--set", s)]]

    _in_parallel([command(0), command(1), command(2)])
    runs = [tmp_path / f"out{i}" / "det" / "fdapt" for i in range(3)]
    for other in runs[1:]:
        _same_run(runs[0], other)


def _same_run(*runs):
    from safetensors.torch import load_file

    a, b = (json.loads((r / "record.json").read_text()) for r in runs)
    assert a["environment"]["torch_threads"] == b["environment"]["torch_threads"]
    assert a["status"] == b["status"] == "finished"
    assert a["seed"] == b["seed"] == a["config"]["seed"] == 0
    assert a["manifest_sha256"] == b["manifest_sha256"] is not None
    # the config hash leaves out where files go (output_dir, cache_dir), which differ here
    assert a["config_hash"] == b["config_hash"]
    assert a["initial_eval"] == b["initial_eval"]
    assert [r["eval_loss"] for r in a["rounds"]] == [r["eval_loss"] for r in b["rounds"]]
    assert [[(c["loss"], c["update_norm"]) for c in r["clients"]] for r in a["rounds"]] == \
        [[(c["loss"], c["update_norm"]) for c in r["clients"]] for r in b["rounds"]]
    assert a["final_eval"] == b["final_eval"]
    assert a["data"]["train_tokens"] == b["data"]["train_tokens"]
    wa, wb = (load_file(str(r / "model" / "model.safetensors")) for r in runs)
    assert wa.keys() == wb.keys()
    for name in wa:  # names the first tensor that differs, if one does
        assert wa[name].dtype == wb[name].dtype and wa[name].shape == wb[name].shape, name
        assert wa[name].numpy().tobytes() == wb[name].numpy().tobytes(), name
    assert (runs[0] / "model" / "model.safetensors").read_bytes() == \
        (runs[1] / "model" / "model.safetensors").read_bytes()
    assert (runs[0] / "model" / "tokenizer.json").read_bytes() == \
        (runs[1] / "model" / "tokenizer.json").read_bytes()


def test_a_resumed_run_keeps_the_thread_count_it_started_with(tiny, monkeypatch):
    """A run started on a 1-core host (or with fewer threads) and resumed where the default
    gives more: the resume trains on the count in the checkpoint, and ends bit-identical to
    the uninterrupted run."""
    from dataclasses import replace

    import torch
    from safetensors.torch import load_file

    from fdapt_core import interrupt
    from fdapt_core.interrupt import StopRequested
    from fdapt_core.runner import run

    if (os.cpu_count() or 1) < 2:
        import pytest

        pytest.skip("needs 2 cores: the resume's default must differ from the first part's")
    threads = torch.get_num_threads()

    class StopAfterFirstRound:
        def __getattr__(self, name):
            return lambda *a, **k: None

        def round_end(self, r, row):
            interrupt.request_stop()

    cfg = tiny("train.threads=null", "fl.rounds=3", "train.max_local_steps=4",
               "profile.count_flops=false")
    try:
        with monkeypatch.context() as m:  # a 1-core host
            m.setattr(os, "cpu_count", lambda: 1)
            straight = run(replace(cfg, name="straight"), "fdapt")
            assert straight["environment"]["torch_threads"] == 1
            stopped = replace(cfg, name="stopped")
            try:
                run(stopped, "fdapt", callbacks=StopAfterFirstRound())
            except StopRequested:
                pass
            finally:
                interrupt.clear()
        resumed = run(stopped, "fdapt", resume=True)  # the host's real cores from here
        assert resumed["resumed_from_round"] == 1
        assert [r["torch_threads"] for r in resumed["rounds"]] == [1, 1, 1]
    finally:
        torch.set_num_threads(threads)
    out = cfg.output_dir
    a = load_file(f"{out}/straight/fdapt/model/model.safetensors")
    b = load_file(f"{out}/stopped/fdapt/model/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
