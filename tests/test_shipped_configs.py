"""Every config the project ships passes the validator that reads it, with no exceptions.

Found by globbing the folders, so a new config is checked the day it is added; the names the
project is known to ship are asserted too, so a glob that finds nothing cannot pass.
"""
from __future__ import annotations

import pytest

from fdapt_core.config.run import build_config, load_config
from fdapt_core.dist.zero import load_deepspeed_config
from fdapt_core.downstream.tasks import load_task, named_task
from fdapt_core.methods import parse_method
from fdapt_core.study import cells, load_study
from tests.conftest import ROOT

CONFIGS = ROOT / "configs"
STUDY_CONFIGS = sorted(CONFIGS.glob("study-*.yaml"))  # `bench study` files
RUN_CONFIGS = sorted(set(CONFIGS.glob("*.yaml")) - set(STUDY_CONFIGS))
TASK_CONFIGS = sorted((CONFIGS / "tasks").glob("*.yaml"))
DEEPSPEED_CONFIGS = sorted((CONFIGS / "deepspeed").glob("*.json"))


def test_the_shipped_configs_are_all_found():
    assert {"default.yaml", "ohsumed.yaml", "paper.yaml", "quick.yaml"} <= \
        {p.name for p in RUN_CONFIGS}
    assert {"chemprot.yaml", "ncbi_disease.yaml", "pubmedqa.yaml"} <= \
        {p.name for p in TASK_CONFIGS}
    assert {"zero1.json", "zero2.json", "zero3.json"} <= {p.name for p in DEEPSPEED_CONFIGS}
    assert {"study-cpu.yaml"} <= {p.name for p in STUDY_CONFIGS}


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_run_config_is_valid(path):
    cfg = load_config(path)
    load_deepspeed_config(cfg)  # the DeepSpeed JSON it names exists and is valid


@pytest.mark.parametrize("path", TASK_CONFIGS, ids=lambda p: p.name)
def test_task_config_is_valid(path):
    load_task(path)


@pytest.mark.parametrize("path", DEEPSPEED_CONFIGS, ids=lambda p: p.name)
def test_deepspeed_config_is_valid(path):
    load_deepspeed_config(build_config({}, [f"dist.deepspeed_config={path}"]))


@pytest.mark.parametrize("path", STUDY_CONFIGS, ids=lambda p: p.name)
def test_study_config_is_valid(path):
    """Its run config, with every cell's settings, validates, and its tasks exist."""
    study, base = load_study(path)
    grid = cells(study, base)
    assert len(grid) == len(study.partitions) * len(study.seeds)
    for cell in grid:
        for method in study.methods:
            parse_method(method, cell.cfg)
    for name in study.tasks:  # a preset, a path, or either read by a probe (`:probe`)
        named_task(name, CONFIGS / "tasks")


def test_the_committed_study_is_still_its_records_study():
    """Every committed record of the CPU study matches its cell's config, so `bench study`
    reuses it rather than training 4.9 hours again: a key added since (train.sparse_head)
    once changed every config's hash and the study began retraining."""
    from fdapt_core.runs import finished_record

    study, base = load_study(CONFIGS / "study-cpu.yaml")
    missing = [(cell.cfg.name, m) for cell in cells(study, base) for m in study.methods
               if finished_record(cell.cfg, m) is None]
    assert not missing


def test_a_key_added_later_leaves_the_hash_alone_only_at_its_old_behaviour():
    """A record made before train.sparse_head existed hashed a config without it: the same
    config with the key at its old behaviour (false) hashes the same; the default does not."""
    import hashlib
    import json

    old = build_config({}, ["train.sparse_head=false"])
    before = {k: v for k, v in old.to_dict().items()
              if k not in ("output_dir", "cache_dir", "network", "report", "tracking")}
    del before["train"]["sparse_head"]  # the config as it was before the key existed
    digest = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert old.hash() == digest
    assert build_config({}, []).hash() != digest  # the sparse default trains otherwise


def test_a_users_own_study_stays_out_of_git_status():
    """The project's studies are committed (records, outcomes, reports); a study a user runs
    (`./run_all.sh --quick`, a copied study file) showed up untracked in `git status`."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0

    assert ignored("results/studies/quick/runs/quick-iid-s0/fdapt/record.json")
    assert ignored("results/studies/my-own/report/report.md")
    assert not ignored("results/studies/ohsumed-probe/runs/ohsumed-probe-iid-s0/fdapt/record.json")
    assert ignored("results/studies/ohsumed-probe/runs/ohsumed-probe-iid-s0/fdapt/model/x.bin")
