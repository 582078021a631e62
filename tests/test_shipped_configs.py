"""Every config the project ships passes the validator that reads it, with no exceptions.

Found by globbing the folders, so a new config is checked the day it is added; the names the
project is known to ship are asserted too, so a glob that finds nothing cannot pass.
"""
from __future__ import annotations

import pytest

from fdapt_core.config import build_config, load_config
from fdapt_core.dist.zero import load_deepspeed_config
from fdapt_core.downstream.tasks import load_task
from tests.conftest import ROOT

CONFIGS = ROOT / "configs"
RUN_CONFIGS = sorted(CONFIGS.glob("*.yaml"))
TASK_CONFIGS = sorted((CONFIGS / "tasks").glob("*.yaml"))
DEEPSPEED_CONFIGS = sorted((CONFIGS / "deepspeed").glob("*.json"))


def test_the_shipped_configs_are_all_found():
    assert {"default.yaml", "ohsumed.yaml", "paper.yaml", "quick.yaml"} <= \
        {p.name for p in RUN_CONFIGS}
    assert {"chemprot.yaml", "ncbi_disease.yaml", "pubmedqa.yaml"} <= \
        {p.name for p in TASK_CONFIGS}
    assert {"zero1.json", "zero2.json", "zero3.json"} <= {p.name for p in DEEPSPEED_CONFIGS}


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
