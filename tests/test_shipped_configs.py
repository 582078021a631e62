"""Every config the project ships passes the validator that reads it, with no exceptions.

Found by globbing the folders, so a new config is checked the day it is added; the names the
project is known to ship are asserted too, so a glob that finds nothing cannot pass.
"""
from __future__ import annotations

import pytest

from fdapt_core.config import build_config, load_config
from fdapt_core.dist.zero import load_deepspeed_config
from fdapt_core.downstream.tasks import load_task, task_path
from fdapt_core.runner import parse_method
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
    for name in study.tasks:
        load_task(task_path(name, CONFIGS / "tasks"))
