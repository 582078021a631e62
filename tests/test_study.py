"""`bench study`: a grid trained, scored downstream and reported; run again when finished,
even from its records alone (no weights), it changes nothing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from fdapt_core.errors import ConfigError
from fdapt_core.study import cells, head_warmup, load_study
from tests.conftest import ROOT, TINY
from tests.test_downstream_e2e import task_files  # noqa: F401  (a fixture)


def _study_file(tmp_path, cache_dir, ner_yaml, **over):
    run_cfg = tmp_path / "run.yaml"
    tree: dict = {}
    for item in [*TINY, f"cache_dir={cache_dir}", "profile.count_flops=false"]:
        key, value = item.split("=", 1)
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    run_cfg.write_text(yaml.safe_dump(tree))
    study = {"name": "tiny", "config": "run.yaml", "partitions": ["iid"],
             "methods": ["central", "fdapt"], "seeds": [0], "tasks": [str(ner_yaml)],
             "quick": True, "finetune_seeds": 1, "out": str(tmp_path / "study"), **over}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _bench(*args):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.slow
def test_a_study_runs_scores_reports_and_a_rerun_changes_nothing(tmp_path, cache_dir,
                                                                  task_files):  # noqa: F811
    path = _study_file(tmp_path, cache_dir, task_files["ner"][0])
    first = _bench("study", "--config", str(path))
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp_path / "study"
    for seed in (0,):
        for m in ("central", "fdapt", "general"):
            run = out / "runs" / f"tiny-iid-s{seed}" / m
            assert (run / "record.json").is_file()
            assert (run / "downstream" / "ner.outcomes.json").is_file()
    md = (out / "report" / "report.md").read_text()
    assert md.index("## Verdicts") < md.index("## Setup")
    assert '**Claim 1**: "FDAPT can maintain competitive downstream task performance' in md
    # what a clone of the committed study holds: no weights, no checkpoints
    for folder in [*out.rglob("model"), *out.rglob("checkpoints")]:
        shutil.rmtree(folder)
    before = _snapshot(out)
    again = _bench("study", "--config", str(path))
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("finished, reused") == 2  # nothing trained again
    assert _snapshot(out) == before


@pytest.mark.slow
def test_a_study_file_is_checked_before_anything_runs(tmp_path, cache_dir,
                                                      task_files):  # noqa: F811
    path = _study_file(tmp_path, cache_dir, task_files["ner"][0], seeds=[0, 0])
    with pytest.raises(ConfigError, match="seeds"):
        load_study(path)
    path = _study_file(tmp_path, cache_dir, task_files["ner"][0], methods=["fdapt-nope"])
    res = _bench("study", "--config", str(path))
    assert res.returncode == 2 and "method 'fdapt-nope'" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "study").exists()
    study, base = load_study(_study_file(tmp_path, cache_dir, task_files["ner"][0]))
    grid = cells(study, base)
    assert [(c.partition, c.seed, c.cfg.name) for c in grid] == [("iid", 0, "tiny-iid-s0")]


@pytest.mark.slow
def test_a_study_without_tasks_trains_and_reports_the_held_out_loss(tmp_path, cache_dir,
                                                                    task_files):  # noqa: F811
    """`tasks: []` (run_all.sh --quick's study): no downstream stage, no `general` record;
    the report compares the held-out MLM loss."""
    path = _study_file(tmp_path, cache_dir, task_files["ner"][0], tasks=[])
    res = _bench("study", "--config", str(path))
    assert res.returncode == 0, res.stderr[-3000:]
    cell = tmp_path / "study" / "runs" / "tiny-iid-s0"
    assert all((cell / m / "record.json").is_file() for m in ("central", "fdapt"))
    assert not (cell / "general").exists() and not list(cell.rglob("*.outcomes.json"))
    assert "held-out" in (tmp_path / "study" / "report" / "report.md").read_text().lower()


@pytest.mark.slow
def test_a_head_warm_up_is_where_every_cell_starts(tmp_path, cache_dir,
                                                  task_files):  # noqa: F811
    """`head_warmup_steps`: the start model's head trained alone first (body and embeddings
    frozen, one client, one round); every method of every cell starts from that model, whose
    cost the report states apart."""
    import json

    path = _study_file(tmp_path, cache_dir, task_files["ner"][0], tasks=[],
                       head_warmup_steps=3, head_warmup_lr=1e-2)
    res = _bench("study", "--config", str(path))
    assert res.returncode == 0, res.stderr[-3000:]
    runs = tmp_path / "study" / "runs"
    warm = json.loads((runs / "tiny-head-warmup" / "ffdapt-bottom" / "record.json").read_text())
    assert warm["totals"]["steps"] == 3 and warm["config"]["fl"]["clients"] == 1
    assert warm["totals"]["trainable_share"] < 0.5  # the head alone
    for m in ("central", "fdapt"):
        rec = json.loads((runs / "tiny-iid-s0" / m / "record.json").read_text())
        assert rec["config"]["model"]["name_or_path"].endswith(
            "tiny-head-warmup/ffdapt-bottom/model")
        # the same held-out set: a cell starts where the warm-up ended
        assert rec["initial_eval"]["loss"] == pytest.approx(warm["final_eval"]["loss"],
                                                            abs=1e-4)
    md = (tmp_path / "study" / "report" / "report.md").read_text()
    assert "- **head warm-up** (the start of `general` and every method" in md


def test_a_start_model_named_on_the_command_line_starts_the_warm_up_not_the_cells(
        tmp_path, cache_dir, task_files):  # noqa: F811
    """`bench study --set model.name_or_path=X` with a head warm-up: X is the warm-up's start,
    and every cell still starts from the warm-up's model. The command line's overrides once
    came after the warm start, so every cell silently began at X, skipping the warm-up (the
    GPU study names its start model so)."""
    from tests.test_early_refusals import bert_folder

    start = bert_folder(tmp_path)
    path = _study_file(tmp_path, cache_dir, task_files["ner"][0], tasks=[],
                       head_warmup_steps=3)
    study, base = load_study(path)
    over = ("model.preset=null", f"model.name_or_path={start}")
    assert head_warmup(study, base, over).cfg.model.name_or_path == str(start)
    for cell in cells(study, base, over):
        assert cell.cfg.model.preset is None
        assert cell.cfg.model.name_or_path.endswith("tiny-head-warmup/ffdapt-bottom/model")


def test_run_all_is_a_study():
    """run_all.sh names the study file and hands the rest to `bench study`."""
    for name in ("study-paper.yaml", "study-quick.yaml"):
        study, base = load_study(ROOT / "configs" / name)
        assert cells(study, base)  # the grid resolves: every cell's config loads


def test_run_all_help_sets_up_nothing(tmp_path):
    """`run_all.sh --help` on a fresh clone (no .venv) prints its usage at once: it used to
    run the whole set-up first (minutes of installs; a test of it timed out on a loaded host)."""
    script = tmp_path / "run_all.sh"
    shutil.copy(ROOT / "run_all.sh", script)
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    res = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0 and "bench study" in res.stdout, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_all.sh"]  # no .venv made


def test_the_starting_model_is_fine_tuned_once_per_pretraining_seed(tmp_path):
    """A pretrained start is one model in every cell, but it is fine-tuned with each
    pretraining seed's own fine-tuning seeds (paired with that seed's adapted models): its
    scores (and per-example outcomes) are copied to the other partitions of the same seed,
    never to another seed's cells; a preset's seeded init, which differs by seed, is never
    copied."""
    import json

    from fdapt_core.downstream import outcomes as oc
    from fdapt_core.downstream.finetune import readout_seed
    from fdapt_core.downstream.runs import reuse_general, task_hash
    from fdapt_core.downstream.tasks import TaskConfig

    task = TaskConfig(name="ner", type="token_classification", format="conll", train="t",
                      test="t", metric="f1")
    digest = task_hash(task, True)
    first, second, other, seeded = (tmp_path / c / "general"
                                    for c in ("iid-s0", "by_key-s0", "iid-s1", "by_key-s2"))
    for folder, model, seed in ((first, "package:minilm", 0), (second, "package:minilm", 0),
                                (other, "package:minilm", 1), (seeded, "model", 2)):
        folder.mkdir(parents=True)
        (folder / "record.json").write_text(json.dumps({"method": "general",
                                                        "model_dir": model,
                                                        "config": {"seed": seed}}))
    rec = json.loads((first / "record.json").read_text())
    rec["downstream"] = {"ner": {"task": "ner", "metric": "f1", "task_hash": digest,
                                 "readout_seed": readout_seed(0),
                                 "scores": {"f1": {"mean": 0.5, "values": [0.5]}},
                                 "outcomes": "downstream/ner.outcomes.json"}}
    (first / "record.json").write_text(json.dumps(rec))
    oc.save(first, "ner", digest, {"kind": "entity_counts", "metric": "f1", "n": 1,
                                   "seeds": [{"counts": [[1, 0, 0]], "seed": 7}]})
    assert reuse_general(second, [first], [task], True) == ["ner"]
    got = json.loads((second / "record.json").read_text())["downstream"]["ner"]
    assert got["scores"]["f1"]["mean"] == 0.5 and got["reused_from"] == "iid-s0"
    assert oc.load(second, "ner", digest)["seeds"] == [{"counts": [[1, 0, 0]], "seed": 7}]
    assert reuse_general(second, [first], [task], True) == []  # already there
    assert reuse_general(other, [first, second], [task], True) == []  # another seed's
    assert "downstream" not in json.loads((other / "record.json").read_text())
    assert reuse_general(seeded, [first], [task], True) == []
    assert "downstream" not in json.loads((seeded / "record.json").read_text())


def test_a_head_warm_up_trained_again_is_checked_against_the_first(tmp_path):
    """Weights are not committed: a fresh checkout trains the warm-up again. Where it ends
    at another held-out loss, the record keeps the earlier one and the report's setup says
    that cells trained in different sessions started from different models."""
    import json

    from bench.warmup import check_warmup_again, warmup_setup

    run = tmp_path / "warm"
    run.mkdir()
    rec = {"totals": {"steps": 3, "tokens": 96, "wall_s": 6.0},
           "initial_eval": {"loss": 10.7, "ppl": 44470.0},
           "final_eval": {"loss": 7.0, "ppl": 1100.0}}
    (run / "record.json").write_text(json.dumps(rec))
    check_warmup_again(run, 7.0)
    assert "the same held-out loss each time" in warmup_setup(run)[0]
    check_warmup_again(run, 7.5)
    line = warmup_setup(run)[0]
    assert "**ending at another held-out loss** (7.000000, 7.500000)" in line
    assert json.loads((run / "record.json").read_text())["earlier_final_losses"] == [7.0, 7.5]


def test_a_head_warm_up_trained_again_is_checked_against_its_weights_hash(tmp_path, capsys):
    """The record keeps the sha256 of the weights the warm-up saved; a warm-up trained again
    in a fresh checkout is checked against it, and a difference is said."""
    import hashlib
    import json

    from bench.warmup import check_warmup_again

    run = tmp_path / "warm"
    (run / "model").mkdir(parents=True)
    (run / "record.json").write_text(json.dumps({"final_eval": {"loss": 7.0}}))
    (run / "model" / "model.safetensors").write_bytes(b"weights")
    first = hashlib.sha256(b"weights").hexdigest()
    check_warmup_again(run, None)  # the first training: its hash recorded
    assert json.loads((run / "record.json").read_text())["model_sha256"] == first
    check_warmup_again(run, 7.0, first)  # trained again, the same bytes
    assert "match the recorded sha256" in capsys.readouterr().err
    (run / "model" / "model.safetensors").write_bytes(b"other weights")
    check_warmup_again(run, 7.0, first)
    assert "saved other weights" in capsys.readouterr().err.replace("\n", " ")
    assert json.loads((run / "record.json").read_text())["model_sha256"] != first


def test_a_cells_methods_alternate_their_order_by_seed():
    """Timed back to back on a drifting host, the method that always ran first would gain:
    the order alternates, so the paired time saved over seeds cancels the drift."""
    from fdapt_core.study import method_order

    methods = ["fdapt", "ffdapt-paper"]
    assert method_order(methods, 0) == ["fdapt", "ffdapt-paper"]
    assert method_order(methods, 1) == ["ffdapt-paper", "fdapt"]
    firsts = [method_order(methods, s)[0] for s in range(10)]
    assert firsts.count("fdapt") == firsts.count("ffdapt-paper") == 5
