"""Bad input, tried systematically: one clear message naming the file, line or key, exit
code 2, no traceback, and nothing written; and property-based tests of the validators."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fdapt_core.config.run import build_config
from fdapt_core.data.corpus import read_jsonl, read_text
from fdapt_core.downstream.readers import read_conll
from fdapt_core.errors import ConfigError, DataError
from tests.conftest import ROOT, TINY


def bench(args, tmp_path):
    out = tmp_path / "results"
    p = subprocess.run([sys.executable, "-m", "bench", *args, "--set", f"output_dir={out}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    return p, out


def jsonl_corpus(tmp_path, name: str, content: bytes) -> list[str]:
    f = tmp_path / name
    f.write_bytes(content)
    return ["--set", "data.source=jsonl", "--set", f"data.path={f}",
            "--set", "data.text_fields=[title, abstract]"]


def text_corpus(tmp_path, name: str, content: bytes) -> list[str]:
    f = tmp_path / name
    f.write_bytes(content)
    return ["--set", "data.source=text", "--set", f"data.path={f}"]


def config_file(tmp_path, name: str, text: str) -> list[str]:
    f = tmp_path / name
    f.write_text(text)
    return ["--config", str(f)]


def untokenized_model(tmp_path, few_tokens: bool = False) -> list[str]:
    """A model folder as a new user saved it: config.json and model.safetensors, and no
    tokenizer (it trained on a 5-token vocabulary and said "finished"); or with a tokenizer
    of the special tokens alone."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    folder = tmp_path / "model"
    BertForMaskedLM(BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64)).save_pretrained(
        folder)
    if few_tokens:
        vocab = tmp_path / "vocab.txt"
        vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
        BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    return ["--set", "model.preset=null", "--set", f"model.name_or_path={folder}"]


GOOD = b'{"title": "a", "abstract": "b c d"}\n'
CASES = {
    "empty corpus": (lambda t: jsonl_corpus(t, "empty.jsonl", b""), ["empty.jsonl"]),
    "not UTF-8": (lambda t: jsonl_corpus(t, "latin.jsonl", GOOD + b'{"title": "caf\xe9"}\n'),
                  ["latin.jsonl:2", "UTF-8"]),
    "not JSON": (lambda t: jsonl_corpus(t, "broken.jsonl", GOOD + b"{title: x\n"),
                 ["broken.jsonl:2", "JSON"]),
    "no text field": (lambda t: jsonl_corpus(t, "fields.jsonl", GOOD + b'{"body": "x"}\n'),
                      ["fields.jsonl:2", "title"]),
    "huge line": (lambda t: jsonl_corpus(
        t, "huge.jsonl", GOOD + b'{"title": "' + b"x" * 3_000_000 + b'"}\n'),
        ["huge.jsonl", "max_doc_chars"]),
    "more clients than documents": (lambda t: jsonl_corpus(t, "few.jsonl", GOOD * 3)
                                    + ["--set", "fl.clients=8"], ["fl.clients", "8"]),
    "missing model folder": (lambda t: ["--set", "model.preset=null", "--set",
                                        "model.name_or_path=./no/such/model"],
                             ["model.name_or_path", "no such model folder"]),
    "model folder without a tokenizer": (lambda t: untokenized_model(t),
                                         ["model.name_or_path", "holds no tokenizer"]),
    "tokenizer of a few tokens": (lambda t: untokenized_model(t, few_tokens=True),
                                  ["model.name_or_path", "5 tokens"]),
    "by_key without a key": (lambda t: jsonl_corpus(t, "nokey.jsonl", GOOD * 20)
                             + ["--set", "partition.method=by_key", "--set",
                                "data.key_field=category"], ["nokey.jsonl:1", "category"]),
    "unknown key": (lambda t: ["--set", "train.learning_rate=1"], ["train.learning_rate"]),
    "wrong type": (lambda t: ["--set", "fl.clients=many"], ["fl.clients", "integer"]),
    "out of range": (lambda t: ["--set", "data.val_fraction=0.9"],
                     ["data.val_fraction", "maximum"]),
    "contradiction": (lambda t: ["--set", "faults.min_clients=9"], ["faults.min_clients"]),
    "NUL bytes in a text corpus": (lambda t: text_corpus(t, "nul.txt", b"\0" * 512),
                                   ["nul.txt:1", "NUL"]),
    "NUL characters in a JSONL corpus": (lambda t: jsonl_corpus(
        t, "esc.jsonl", GOOD + b'{"title": "\\u0000\\u0000", "abstract": "x"}\n'),
        ["esc.jsonl:2", "NUL"]),
    "empty config file": (lambda t: config_file(t, "empty.yaml", "# nothing set\n"),
                          ["empty.yaml", "empty"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line(tmp_path, case):
    make, needles = CASES[case]
    p, out = bench(["run", "--method", "fdapt", *make(tmp_path)], tmp_path)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr + p.stdout
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert lines and lines[0].startswith("error:"), p.stderr
    for n in needles:
        assert n in p.stderr, (n, p.stderr)
    assert not out.exists()  # no result, record or checkpoint


def test_bad_task_files_name_file_and_line(tmp_path):
    bad = tmp_path / "ner.tsv"
    bad.write_text("a\tO\nb O\nc\n")
    with pytest.raises(DataError, match="ner.tsv:3"):
        read_conll(bad)
    from fdapt_core.downstream.readers import TokenExample, check_labels

    test = [TokenExample(["x"], ["B-Chemical"], line=7)]
    with pytest.raises(DataError, match=r"test.tsv:7.*B-Chemical"):
        check_labels(test, ["O", "B-Disease"], tmp_path / "test.tsv")


# ----------------------------------------------------------------------------- properties

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True), st.text(max_size=12),
                    st.lists(st.text(max_size=5), max_size=3))
KEYS = st.sampled_from(["seed", "name", "fl.rounds", "fl.clients", "fl.client_fraction",
                        "fl.weighting", "train.lr", "train.batch_size", "data.max_seq_length",
                        "data.source", "data.text_fields", "partition.method", "freeze.k",
                        "model.preset", "faults.corrupt_kinds", "eval.max_blocks", "bogus",
                        "fl.bogus", "data.synthetic.n_docs"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, SCALARS, max_size=5))
def test_config_validator_accepts_or_names_a_key(tree):
    overrides = [f"{k}={json.dumps(v)}" for k, v in tree.items()]
    try:
        build_config({}, [*TINY, *overrides])
    except ConfigError as exc:
        assert str(exc)  # a message, never another exception type


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=6))
def test_jsonl_reader_reads_or_names_a_line(tmp_path_factory, lines):
    f = tmp_path_factory.mktemp("h") / "c.jsonl"
    f.write_bytes(b"\n".join(lines))
    try:
        docs = read_jsonl(f, ["text"])
        assert all(d.text.strip() for d in docs)
    except DataError as exc:
        assert "c.jsonl" in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=6))
def test_text_and_conll_readers_read_or_name_the_file(tmp_path_factory, lines):
    d = tmp_path_factory.mktemp("h")
    for name, reader in (("c.txt", read_text), ("c.tsv", read_conll)):
        f = d / name
        f.write_bytes(b"\n".join(lines))
        try:
            reader(f)
        except DataError as exc:
            assert name in str(exc)


def test_an_unknown_option_is_a_usage_line_not_a_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bench", "compare", "--no-such-flag"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    # click's wording varies by version ("No such option: --x" / "No such option '--x'")
    assert "No such option" in p.stderr and "--no-such-flag" in p.stderr
    assert "Traceback" not in p.stderr + p.stdout
