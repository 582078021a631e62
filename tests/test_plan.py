"""The power plan: variance components recovered from a synthetic study with known ones, the
seeds a half-width needs, and `bench study --plan` on a study's records."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import ROOT
from fdapt_core.downstream import outcomes as oc
from fdapt_core.downstream.finetune import readout_seed
from fdapt_core.stats import (Components, components, decision_power, half_width,
                              seeds_for_power, seeds_needed)
from tests.test_report import make_record, scores, write

TOLERANCE = 0.20  # the plan's components within 20 % of the truth at 200 seeds × 3


def test_components_of_a_synthetic_study_are_recovered():
    """d[s, f] = δ + u_s + v_sf: u between pretraining seeds (σ² = 2.0 points²), v between
    fine-tuning seeds (σ² = 1.2); the shared test part passes through as given."""
    rng = np.random.default_rng(0)
    seeds, ft = 200, 3
    d = 0.4 + rng.normal(0, math.sqrt(2.0), (seeds, 1)) + rng.normal(0, math.sqrt(1.2),
                                                                       (seeds, ft))
    c = components(d, 0.05)
    assert c.pretraining == pytest.approx(2.0, rel=TOLERANCE)
    assert c.finetuning == pytest.approx(1.2, rel=TOLERANCE)
    assert c.test == 0.05


def test_seeds_needed_is_the_first_count_whose_half_width_fits():
    c = Components(pretraining=2.0, finetuning=1.2, test=0.02)
    n = seeds_needed(c, 3, 1.0)
    assert half_width(c, n, 3) <= 1.0 < half_width(c, n - 1, 3)
    # more fine-tuning seeds shrink only the fine-tuning part: never more seeds needed
    assert seeds_needed(c, 10, 1.0) <= n
    # the shared test noise alone past the margin: no seed count decides it
    assert seeds_needed(Components(0.1, 0.0, 0.5), 3, 1.0) is None


def test_a_half_width_that_fits_the_margin_is_an_even_chance_of_a_decision():
    """The old plan's seed count (the expected 90 % half-width within the margin) reads
    "equivalent" less than an even chance when the true Δ is 0 (the estimate's own noise
    pushes one end of a just-fitting interval out); the power plan's count for 80 %
    reaches 80 %, is more, and a difference beyond the margin is priced too."""
    c = Components(pretraining=2.0, finetuning=0.0, test=0.02)
    n = seeds_needed(c, 1, 1.0)
    at_half_width = decision_power(c, n, 1, 0.0, 1.0, "equivalent")
    assert 0.1 < at_half_width < 0.6, at_half_width
    m = seeds_for_power(lambda k: decision_power(c, k, 1, 0.0, 1.0, "equivalent"))
    assert m > n and decision_power(c, m, 1, 0.0, 1.0, "equivalent") >= 0.80 \
        > decision_power(c, m - 1, 1, 0.0, 1.0, "equivalent")
    # a true Δ of 2 against a margin of 1: "beyond" grows with seeds, "equivalent" stays rare
    beyond = [decision_power(c, k, 1, 2.0, 1.0, "beyond", 0.05 / 4) for k in (3, 10, 40)]
    assert beyond[0] < beyond[1] < beyond[2] and beyond[2] > 0.8
    assert decision_power(c, 40, 1, 2.0, 1.0, "equivalent") < 0.01
    # the shared test noise alone past the margin: no seed count decides it
    assert seeds_for_power(lambda k: decision_power(Components(0.1, 0.0, 0.5), k, 1, 0.0, 1.0,
                                                    "equivalent")) is None


def test_the_simulated_power_is_the_verdicts_own():
    """The power a plan prints is how often the verdicts' own interval (PairedDifference
    over simulated per-seed differences) reads as hoped."""
    from fdapt_core.stats import equivalent, paired_difference

    c, seeds, rng = Components(1.0, 0.0, 0.05), 6, np.random.default_rng(3)
    hits = 0
    for _ in range(3000):
        per_seed = rng.normal(0.2, 1.0, seeds) + rng.normal(0, math.sqrt(0.05))
        hits += equivalent(paired_difference(per_seed, 0.05).interval(0.90), 1.0)
    assert decision_power(c, seeds, 1, 0.2, 1.0, "equivalent") == pytest.approx(
        hits / 3000, abs=0.04)


def _study_records(tmp_path, n_test: int) -> tuple:
    """A study in the layout `bench study` writes: 3 seeds of central, fdapt, ffdapt-paper on
    one classification task, each model fine-tuned twice, with per-example outcomes."""
    rng = np.random.default_rng(2)
    true = rng.integers(0, 2, n_test)
    desc = {"kind": "labels", "metric": "accuracy", "n": n_test, "labels": ["no", "yes"],
            "exclude": [], "true": [int(t) for t in true]}
    runs = tmp_path / "out" / "runs"
    for seed in range(3):
        for m, skill in (("central", 0.80), ("fdapt", 0.79), ("ffdapt-paper", 0.785)):
            preds, accs = [], []
            for _ in range(2):  # fine-tuning seeds
                q = skill + rng.normal(0, 0.01)
                pred = np.where(rng.random(n_test) < q, true, 1 - true)
                preds.append({"pred": [int(p) for p in pred], "readout_seed": readout_seed(seed)})
                accs.append(float((pred == true).mean()))
            rec = make_record(m, "iid", seed, downstream=scores("qa", "accuracy", accs),
                              synthetic=False, name="planned")
            rec["config"]["freeze"] = {"policy": "paper"}
            rec["totals"]["wall_s"] = 600.0
            rec["downstream"]["qa"]["outcomes"] = "downstream/qa.outcomes.json"
            rec["downstream"]["qa"]["runs"] = [{"wall_s": 60.0}, {"wall_s": 60.0}]
            path = write(runs / f"planned-iid-s{seed}", rec)
            oc.save(path.parent, "qa", "hash-qa", {**desc, "seeds": preds})
    return runs, true


@pytest.mark.slow
def test_bench_study_plan_prints_seeds_and_hours_per_claim_row(tmp_path):
    n_test = 300
    runs, true = _study_records(tmp_path, n_test)
    data = tmp_path / "task"
    data.mkdir()
    for split, n in (("train", 40), ("dev", 20), ("test", n_test)):
        labels = true if split == "test" else np.arange(n) % 2
        (data / f"{split}.jsonl").write_text("".join(
            json.dumps({"text": f"example {i}", "label": ["no", "yes"][int(y)]}) + "\n"
            for i, y in enumerate(labels)))
    task = tmp_path / "qa.yaml"
    task.write_text(yaml.safe_dump({
        "name": "qa", "type": "sequence_classification", "format": "jsonl",
        "train": str(data / "train.jsonl"), "dev": str(data / "dev.jsonl"),
        "test": str(data / "test.jsonl"), "metric": "accuracy",
        "quick": {"train_examples": 20, "dev_examples": 10, "test_examples": 100}}))
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "planned", "config": str(ROOT / "configs" / "default.yaml"),
        "partitions": ["iid"], "methods": ["central", "fdapt", "ffdapt-paper"],
        "seeds": [0, 1, 2], "tasks": [str(task)], "quick": True, "finetune_seeds": 2,
        "margin_pts": 1.0, "out": str(tmp_path / "out")}))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    res = subprocess.run([sys.executable, "-m", "bench", "study", "--config", str(study),
                          "--plan"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "## Plan for this study file's design: 2 fine-tuning seed(s), whole test sets" in out
    assert "rescaled to test sets of qa 300 examples" in out
    for row in ("| 1 | iid | fdapt − central | qa |", "| 2 | iid | ffdapt-paper − fdapt | qa |"):
        assert row in out, out
    # per row and per claim: the power at the study file's 3 seeds, and the seeds 80 % needs
    assert "P(equivalent | Δ = 0), 3 seeds" in out and "P(beyond | Δ as seen), 3 seeds" in out
    # per claim: the seeds and the hours they cost at the records' times (two methods, each
    # 600 s of training and 2 × 60 s of fine-tuning a seed: 0.40 h)
    assert "- **Claim 1**: P(every row equivalent if every Δ is 0) " in out, out
    assert "80 % power needs" in out and "(0.40 h a seed)" in out, out
    assert "## Plan for the default design: 3 fine-tuning seeds, whole test sets" in out
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no writes
