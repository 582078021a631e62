"""Fine-tuning end to end on tiny models: hand-made task files of each type, and the real ones."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fdapt_core.downstream.finetune import evaluate_task
from fdapt_core.downstream.tasks import load_task
from fdapt_core.errors import ConfigError
from fdapt_core.runner import run, run_dir
from tests.conftest import ROOT, TINY, needs_shared_data

WORDS = ["cardiac", "tumour", "patients", "showed", "increased", "risk", "after", "therapy"]


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, cache_dir_module):
    """A comparison folder with fdapt and central runs of a tiny model."""
    from fdapt_core.config import build_config

    out = tmp_path_factory.mktemp("runs")
    cfg = build_config({}, [*TINY, "fl.rounds=1", f"output_dir={out}",
                            f"cache_dir={cache_dir_module}", "name=cmp"])
    for m in ("central", "fdapt"):
        run(cfg, m)
    return cfg, out / "cmp"


@pytest.fixture(scope="module")
def cache_dir_module(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    """Small task files of each type, with a learnable signal."""
    d = tmp_path_factory.mktemp("tasks")
    conll = []
    for i in range(60):
        sent = [(WORDS[(i + j) % 8], "O") for j in range(6)]
        sent[2] = ("cardiac", "B-Disease")
        sent[3] = ("tumour", "I-Disease")
        conll.append("\n".join(f"{w}\t{t}" for w, t in sent))
    for split in ("train", "dev", "test"):
        (d / f"ner_{split}.tsv").write_text("\n\n".join(conll) + "\n")
        rows = [{"text": " ".join(WORDS[:4] if i % 2 else WORDS[4:]),
                 "q": "is it cardiac", "ctx": ["patients showed", "risk"],
                 "label": "yes" if i % 2 else "no", "split": "a" if i < 40 else "b"}
                for i in range(60)]
        (d / f"cls_{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tasks = {
        "ner": {"type": "token_classification", "format": "conll", "train": d / "ner_train.tsv",
                "dev": d / "ner_dev.tsv", "test": d / "ner_test.tsv", "metric": "f1"},
        "rel": {"type": "sequence_classification", "train": d / "cls_train.jsonl",
                "dev": d / "cls_dev.jsonl", "test": d / "cls_test.jsonl",
                "metric": "micro_f1", "exclude_labels": ["no"]},
        "qa": {"type": "pair_classification", "train": d / "cls_train.jsonl", "dev": None,
               "train_filter": {"split": "a"}, "test": d / "cls_test.jsonl",
               "test_filter": {"split": "b"}, "text_field": "q", "pair_field": "ctx",
               "metric": "accuracy"},
    }
    paths = {}
    for name, t in tasks.items():
        body = {k: str(v) if k in ("train", "dev", "test") and v is not None else v
                for k, v in t.items()}
        body.update(name=name, epochs=2, seeds=2, lr=1e-3, max_length=32,
                    quick={"train_examples": 30, "dev_examples": 20, "test_examples": 20,
                           "epochs": 1, "seeds": 1})
        import yaml
        (d / f"{name}.yaml").write_text(yaml.safe_dump(body))
        paths[name] = d / f"{name}.yaml"
    return paths


@pytest.mark.parametrize("name", ["ner", "rel", "qa"])
def test_each_task_type_fine_tunes_and_is_reproducible(adapted, task_files, name):
    cfg, folder = adapted
    task = load_task(task_files[name])
    model = run_dir(cfg, "fdapt") / "model"
    a = evaluate_task(model, task, __import__("torch").device("cpu"), quick=False)
    assert a["seeds"] == 2 and len(a["runs"]) == 2
    assert len(a["runs"][0]["dev_by_epoch"]) == 2
    for key, s in a["scores"].items():
        assert 0.0 <= s["mean"] <= 1.0 and s["std"] >= 0.0, key
    b = evaluate_task(model, task, __import__("torch").device("cpu"), quick=False)
    for key in a["scores"]:
        assert a["scores"][key]["values"] == pytest.approx(b["scores"][key]["values"], abs=1e-6)


def test_task_yaml_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("type: token_classification\nformat: jsonl\ntrain: a\ntest: b\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_task(p)
    p.write_text("type: pair_classification\ntrain: a\ntest: b\n")
    with pytest.raises(ConfigError, match="pair_field"):
        load_task(p)
    p.write_text("typo: 1\n")
    with pytest.raises(ConfigError, match="typo"):
        load_task(p)


def test_cli_downstream_writes_scores_into_records(adapted, task_files):
    cfg, folder = adapted
    tasks = ",".join(str(task_files[n]) for n in ("ner", "rel", "qa"))
    p = subprocess.run([sys.executable, "-m", "bench", "downstream", "--runs", str(folder),
                        "--tasks", tasks, "--quick"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    for m in ("general", "central", "fdapt"):
        rec = json.loads((folder / m / "record.json").read_text())
        assert set(rec["downstream"]) == {"ner", "rel", "qa"}
        assert rec["downstream"]["ner"]["quick"] is True
    md = (folder / "downstream.md").read_text()
    assert "fluctuation_vs_fdapt_pts" in md and "general" in md
    # compare now shows the downstream columns, from the reused records
    sets = [a for s in [*TINY, "fl.rounds=1", f"output_dir={folder.parent}",
                        f"cache_dir={cfg.cache_dir}", "name=cmp"] for a in ("--set", s)]
    p = subprocess.run([sys.executable, "-m", "bench", "compare", "--methods", "central,fdapt",
                        *sets], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    header = (folder / "compare.csv").read_text().splitlines()[0]
    assert "ner_f1" in header and "qa_accuracy" in header


@pytest.mark.parametrize("name", ["ncbi_disease", "chemprot", "pubmedqa"])
def test_real_task_quick_fine_tune(adapted, name):
    needs_shared_data("tasks")
    cfg, folder = adapted
    task = load_task(ROOT / "configs" / "tasks" / f"{name}.yaml")
    task.quick.train_examples, task.quick.dev_examples, task.quick.test_examples = 64, 32, 64
    res = evaluate_task(run_dir(cfg, "central") / "model", task,
                        __import__("torch").device("cpu"), quick=True)
    assert res["examples"] == {"train": 64, "dev": 32, "test": 64}
    assert 0.0 <= res["scores"][task.metric]["mean"] <= 1.0


def test_ner_alignment_labels_first_piece_only(tmp_path):
    from fdapt_core.downstream.finetune import IGNORE, encode_tokens
    from fdapt_core.downstream.readers import TokenExample
    from fdapt_core.model import train_tokenizer

    tok = train_tokenizer(["the cardiac tumour grew", "cardiac arrest"], 128, tmp_path)
    ex = TokenExample(["cardiactumour", "grew", "arrest"], ["B-Disease", "O", "O"])
    labels = ["O", "B-Disease", "I-Disease"]
    (enc,) = encode_tokens([ex], tok, labels, max_length=64)
    pieces = tok.convert_ids_to_tokens(enc["input_ids"])
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    n_first_word = len(tok.tokenize("cardiactumour"))
    assert n_first_word > 1  # the word is split, so the rule matters
    expected = [IGNORE, 1] + [IGNORE] * (n_first_word - 1)
    assert enc["labels"][: 1 + n_first_word] == expected
    assert [p for p, w in enc["first"]] == [1, 1 + n_first_word, 2 + n_first_word]
    assert enc["labels"][-1] == IGNORE
    # truncation: words cut off are absent from `first` and later predicted O
    (short,) = encode_tokens([ex], tok, labels, max_length=3)
    assert [w for _, w in short["first"]] == [0] and short["n_words"] == 3


def test_table_rows_survive_a_zero_central_score():
    from bench.downstream import downstream_rows, render
    from fdapt_core.downstream.tasks import TaskConfig

    task = TaskConfig(name="t", metric="f1")
    rec = lambda v: {"downstream": {"t": {"scores": {"f1": {"mean": v, "std": 0.0}}}}}
    rows = downstream_rows({"central": rec(0.0), "fdapt": rec(0.5), "general": {}}, [task])
    by = {r["method"]: r for r in rows}
    assert [r["method"] for r in rows] == ["general", "central", "fdapt"]
    assert by["fdapt"]["t_vs_central_pts"] == 50.0 and by["fdapt"]["t_vs_central_pct"] is None
    assert by["central"]["fluctuation_vs_fdapt_pts"] == 50.0
    assert by["general"]["t_f1"] is None
    render(rows, [task], "t")  # formats without error
