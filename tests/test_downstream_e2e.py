"""Fine-tuning end to end on tiny models: hand-made task files of each type, and the real ones."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from fdapt_core.downstream.finetune import evaluate_task
from fdapt_core.downstream.tasks import load_task
from fdapt_core.errors import ConfigError
from fdapt_core.runner import run
from fdapt_core.runs import run_dir
from tests.conftest import ROOT, TINY, needs_shared_data

# Task files with a signal a tiny model learns in a few epochs: an entity is always one of three
# two-word phrases among filler words; a class is told by its own words. The cue words of the
# classes are whole tokens of the tiny tokenizer (trained on the synthetic corpus), so that a
# cue is one input id, not a run of letters shared with the other classes. Imbalanced classes
# make the majority baseline a real bar. Train, dev and test are drawn separately.
FILLER = ["patients", "showed", "increased", "risk", "after", "therapy", "with", "the",
          "study", "of"]
ENTITIES = [("cardiac", "tumour"), ("renal", "failure"), ("liver", "cancer")]
CUES = {"relation": ["significant", "compared", "matched"],
        "none": ["cohort", "months", "controls"]}
REL_LABELS = ["none"] * 6 + ["relation"] * 4  # the excluded negative class is the majority
QA_LABELS = {"yes": "relation", "no": "none"}  # the answer's cue words, in the passage
QA_SHARE = ["yes"] * 6 + ["no"] * 4
SIZES = {"train": 80, "dev": 20, "test": 40}


def _conll(n: int, seed: int) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    sents = []
    for i in range(n):
        words = [(rng.choice(FILLER), "O") for _ in range(6)]
        at, (first, second) = rng.randrange(5), ENTITIES[i % 3]
        words[at:at + 2] = [(first, "B-Disease"), (second, "I-Disease")]
        sents.append(words)
    return sents


def _rows(n: int, seed: int, split: str) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label, answer = REL_LABELS[i % 10], QA_SHARE[(i * 3) % 10]
        rows.append({"text": " ".join(rng.choices(CUES[label], k=4)), "label": label,
                     "q": "treat patients",
                     "ctx": [" ".join(rng.choices(CUES[QA_LABELS[answer]], k=4))],
                     "answer": answer, "split": split})
    return rows


def majority_baseline(task: dict) -> dict[str, float]:
    """The scores of predicting the test split's most frequent label everywhere, counted from
    the test file (no model, no metric code)."""
    if task["type"] == "token_classification":
        tags = Counter(line.split("\t")[1] for line in
                       Path(task["test"]).read_text().split("\n") if line.strip())
        top, count = tags.most_common(1)[0]
        assert top == "O"  # all O finds no entity: entity F1 0, token accuracy the O share
        return {"f1": 0.0, "accuracy": count / sum(tags.values())}
    rows = [json.loads(line) for line in Path(task["test"]).read_text().splitlines()]
    rows = [r for r in rows if all(r[k] == v for k, v in task.get("test_filter", {}).items())]
    labels = Counter(r[task.get("label_field", "label")] for r in rows)
    top, n_top = labels.most_common(1)[0]
    n = sum(labels.values())
    kept = [l for l in labels if l not in task.get("exclude_labels", [])]
    # micro-F1 over the kept labels: every example is predicted `top`
    tp = n_top if top in kept else 0
    fp = n - n_top if top in kept else 0
    fn = sum(labels[l] for l in kept if l != top)
    return {"accuracy": n_top / n, "micro_f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0}


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, cache_dir_module):
    """A comparison folder with fdapt and central runs of a tiny model."""
    from fdapt_core.config.run import build_config

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
    """Small task files of each type, with a learnable signal; name -> (yaml path, body)."""
    d = tmp_path_factory.mktemp("tasks")
    for seed, (split, n) in enumerate(SIZES.items()):
        sents = _conll(n, seed)
        (d / f"ner_{split}.tsv").write_text("\n\n".join(
            "\n".join(f"{w}\t{t}" for w, t in s) for s in sents) + "\n")
        # the qa task trains on split "a" and tests on split "b" of the test file
        rows = _rows(n, seed, "a") + (_rows(n, seed + 10, "b") if split == "test" else [])
        (d / f"cls_{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tasks = {
        "ner": {"type": "token_classification", "format": "conll", "train": d / "ner_train.tsv",
                "dev": d / "ner_dev.tsv", "test": d / "ner_test.tsv", "metric": "f1"},
        "rel": {"type": "sequence_classification", "train": d / "cls_train.jsonl",
                "dev": d / "cls_dev.jsonl", "test": d / "cls_test.jsonl",
                "metric": "micro_f1", "exclude_labels": ["none"], "test_filter": {"split": "a"}},
        "qa": {"type": "pair_classification", "train": d / "cls_train.jsonl", "dev": None,
               "train_filter": {"split": "a"}, "test": d / "cls_test.jsonl",
               "test_filter": {"split": "b"}, "text_field": "q", "pair_field": "ctx",
               "label_field": "answer", "metric": "accuracy"},
    }
    out = {}
    for name, t in tasks.items():
        body = {k: str(v) if k in ("train", "dev", "test") and v is not None else v
                for k, v in t.items()}
        # the pair task plateaus at the majority class for a few epochs on some fine-tuning
        # seeds and draws before it learns: 8 epochs (4 read the majority on 2 of 6 fits)
        body.update(name=name, epochs=8 if name == "qa" else 4, seeds=2, lr=2e-3, max_length=32,
                    quick={"train_examples": 30, "dev_examples": 20, "test_examples": 20,
                           "epochs": 1, "seeds": 1})
        (d / f"{name}.yaml").write_text(yaml.safe_dump(body))
        out[name] = (d / f"{name}.yaml", body)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ner", "rel", "qa"])
def test_each_task_type_learns_and_is_reproducible(adapted, task_files, name):
    cfg, folder = adapted
    path, body = task_files[name]
    task = load_task(path)
    model = run_dir(cfg, "fdapt") / "model"
    a = evaluate_task(model, task, torch.device("cpu"), quick=False)
    assert a["seeds"] == 2 and len(a["runs"]) == 2
    assert len(a["runs"][0]["dev_by_epoch"]) == body["epochs"]
    # every seed beats predicting the majority class, on the headline score and on accuracy,
    # by more than a few test examples' worth (one example moves accuracy by 1/40)
    baseline = majority_baseline(body)
    for key in (task.metric, "accuracy"):
        for value in a["scores"][key]["values"]:
            assert value > baseline[key] + 0.1, (key, value, baseline)
    b = evaluate_task(model, task, torch.device("cpu"), quick=False)
    for key in a["scores"]:
        assert a["scores"][key]["values"] == pytest.approx(b["scores"][key]["values"], abs=1e-6)


def test_finetuning_seeds_are_the_pretraining_seeds_own_and_recorded(adapted, task_files):
    """Every model of pretraining seed s is fine-tuned with s's seeds (paired), fresh for
    every other s (no fine-tuning seed's effect shared by a study's differences), and each
    per-example outcome names its seed, which the verdicts' intervals read."""
    from fdapt_core.downstream.finetune import finetune_seeds

    cfg, _ = adapted
    task = load_task(task_files["rel"][0])
    model = run_dir(cfg, "fdapt") / "model"
    got = {s: evaluate_task(model, task, torch.device("cpu"), quick=True, pretrain_seed=s)
           for s in (0, 1)}
    for s, res in got.items():
        assert [r["seed"] for r in res["runs"]] == finetune_seeds(s, 1)
        assert [e["seed"] for e in res["outcomes"]["seeds"]] == finetune_seeds(s, 1)
    assert not set(finetune_seeds(0, 3)) & set(finetune_seeds(1, 3))
    assert got[0]["outcomes"]["seeds"][0]["pred"] != got[1]["outcomes"]["seeds"][0]["pred"] \
        or got[0]["runs"][0]["dev_by_epoch"] != got[1]["runs"][0]["dev_by_epoch"]


def test_the_readouts_draw_follows_the_pretraining_seed(adapted, task_files):
    """A probe's training and dev examples are drawn with the pretraining seed's readout
    seed: the same for every model of that seed, fresh for another, and recorded with every
    outcome entry; the quick test subset stays one sample for all (its noise is the shared
    test noise the verdicts resample). Before, every model of every seed was probed on one
    draw, whose effect (the C it selects) no interval could see."""
    from dataclasses import replace

    from fdapt_core.downstream.finetune import load_task_data, readout_seed
    from fdapt_core.downstream.tasks import named_task

    cfg, _ = adapted
    path, _ = task_files["rel"]
    task = named_task(f"{path}:probe", path.parent)
    model = run_dir(cfg, "fdapt") / "model"
    got = {s: evaluate_task(model, task, torch.device("cpu"), quick=True, pretrain_seed=s)
           for s in (0, 1)}
    assert readout_seed(0) != readout_seed(1)
    for s, res in got.items():
        assert res["readout_seed"] == readout_seed(s)
        assert [e["readout_seed"] for e in res["outcomes"]["seeds"]] == [readout_seed(s)]
    # a dev sample of 10 of the 20 dev examples (the task's quick budget keeps all 20)
    task = replace(task, quick=replace(task.quick, dev_examples=10))
    draws = {s: load_task_data(task, True, readout_seed(s)) for s in (0, 1)}
    assert draws[0].train != draws[1].train and draws[0].dev != draws[1].dev
    assert draws[0].test == draws[1].test
    again = load_task_data(task, True, readout_seed(0))
    assert (again.train, again.dev) == (draws[0].train, draws[0].dev)


@pytest.mark.parametrize("name", ["ner", "rel"])
def test_a_linear_probe_reads_the_frozen_model(adapted, task_files, name):
    """`<task>:probe`: logistic regression on the frozen model's features beats the majority
    class, is deterministic (one fit, whatever the seeds), leaves the model's weights as they
    were, and writes the same outcomes as fine-tuning, so verdicts read it alike."""
    from safetensors.torch import load_file

    from fdapt_core.downstream.tasks import named_task

    cfg, _ = adapted
    path, body = task_files[name]
    task = named_task(f"{path}:probe", path.parent)
    assert task.probe and task.name == f"{name}_probe"
    model = run_dir(cfg, "fdapt") / "model"
    before = load_file(model / "model.safetensors")
    a = evaluate_task(model, task, torch.device("cpu"), quick=False, pretrain_seed=3)
    assert a["seeds"] == 1 and len(a["runs"]) == 1 and len(a["outcomes"]["seeds"]) == 1
    assert a["scores"][task.metric]["values"][0] > majority_baseline(body)[task.metric] + 0.1
    b = evaluate_task(model, task, torch.device("cpu"), quick=False, pretrain_seed=3)
    assert a["outcomes"]["seeds"] == b["outcomes"]["seeds"]
    after = load_file(model / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


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


@pytest.mark.slow
def test_cli_downstream_writes_scores_into_records(adapted, task_files):
    cfg, folder = adapted
    tasks = ",".join(str(task_files[n][0]) for n in ("ner", "rel", "qa"))
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
                        torch.device("cpu"), quick=True)
    # the real files read, encode, train and score end to end; whether a model learns is
    # asserted on the synthetic tasks above (64 examples teach a tiny model too little to
    # beat the majority class reliably)
    assert res["examples"] == {"train": 64, "dev": 32, "test": 64}
    token_level = task.type == "token_classification"
    assert set(res["scores"]) == ({"f1", "precision", "recall", "accuracy"} if token_level
                                  else {"accuracy", "macro_f1", "micro_f1"})
    for r in res["runs"]:
        history = r["dev_by_epoch"]
        assert len(history) == task.quick.epochs
        assert r["best_epoch"] == history.index(max(history))  # the dev-best epoch is scored


def test_ner_alignment_labels_first_piece_only(tmp_path):
    from fdapt_core.downstream.encoding import IGNORE, encode_tokens
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


def test_a_stop_asked_for_lands_between_scores(adapted, task_files, tmp_path):
    """SIGINT or SIGTERM during the downstream stage (a study's readout trains nothing, so no
    training step would see the request) stops before the next score, writing nothing half."""
    import shutil

    from rich.console import Console

    from bench.downstream import run_downstream
    from fdapt_core import interrupt
    from fdapt_core.downstream.tasks import load_task

    _, folder = adapted
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    files = [copy / m / "record.json" for m in ("central", "fdapt")] + [
        copy / "downstream.md", copy / "downstream.csv"]

    def state():  # other tests on this module's folder may have scored it already
        return {f: f.read_bytes() if f.exists() else None for f in files}

    before = state()
    quiet = Console(file=open(os.devnull, "w"))
    interrupt.request_stop()
    try:
        with pytest.raises(interrupt.StopRequested):
            run_downstream(quiet, quiet, [copy], [load_task(task_files["rel"][0])], True,
                           "cpu", True)  # force: scored again even where a score is cached
    finally:
        interrupt.clear()
    assert state() == before


@pytest.mark.parametrize("select", ["cv", "fixed"])
def test_a_probe_chooses_its_c_by_the_tasks_rule(adapted, task_files, select, tmp_path):
    """`probe_select`: cv picks C by 5-fold cross-validation on the training examples (no dev
    data read: a dev split of one label changes nothing), fixed fits the one C given; each
    says which rule chose, and is deterministic."""
    from dataclasses import replace

    from fdapt_core.downstream.finetune import load_task_data, readout_seed
    from fdapt_core.downstream.tasks import named_task

    cfg, _ = adapted
    path, body = task_files["rel"]
    task = replace(named_task(f"{path}:probe", path.parent), probe_select=select,
                   probe_c=0.1 if select == "fixed" else None)
    model = run_dir(cfg, "fdapt") / "model"
    data = load_task_data(task, False, readout_seed(3))
    a = evaluate_task(model, task, torch.device("cpu"), False, data, None, 3)
    run = a["runs"][0]
    assert run["probe_select"] == select
    if select == "fixed":
        assert run["probe_c"] == 0.1 and len(run["dev_by_epoch"]) == 1
    else:
        assert len(run["dev_by_epoch"]) == 4  # one cross-validated score per C of the grid
        blind = replace(data, dev=[replace(x, label=data.dev[0].label) for x in data.dev])
        b = evaluate_task(model, task, torch.device("cpu"), False, blind, None, 3)
        assert b["runs"][0]["probe_c"] == run["probe_c"]  # the dev split played no part
        assert b["outcomes"]["seeds"] == a["outcomes"]["seeds"]
    assert a["scores"][task.metric]["values"][0] > majority_baseline(body)[task.metric] + 0.1


def test_probe_c_goes_with_a_fixed_rule(tmp_path, task_files):
    from fdapt_core.errors import ConfigError

    path, body = task_files["rel"]
    for extra in ({"probe_select": "fixed"}, {"probe_c": 0.1}):
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({**body, **extra}))
        with pytest.raises(ConfigError, match="probe_c is needed by, and only by"):
            load_task(bad)
