"""House rules on weights, code and paths, checked on the source and the validators."""
from __future__ import annotations

import re

import pytest

from fdapt_core.config.run import build_config
from fdapt_core.errors import ConfigError
from tests.conftest import ROOT

SOURCES = sorted((ROOT / "fdapt_core").rglob("*.py")) + sorted((ROOT / "bench").rglob("*.py"))


def test_no_pickle_loading_shells_or_remote_code_by_default():
    for path in SOURCES:
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in m.group(1), f"{path}: torch.load without weights_only"
        assert "shell=True" not in text and "os.system(" not in text, path
        assert "trust_remote_code=True" not in text, path
    assert build_config({}).model.trust_remote_code is False


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "", "x\\y"])
def test_run_names_stay_inside_the_results_folder(name):
    with pytest.raises(ConfigError, match="name"):
        build_config({}, [f"name={name}"])


def test_models_are_written_as_safetensors(tiny):
    from fdapt_core.runner import run
    from fdapt_core.runs import run_dir

    cfg = tiny("fl.rounds=1")
    run(cfg, "fdapt")
    folder = run_dir(cfg, "fdapt")
    weights = {p.suffix for p in folder.rglob("*") if p.suffix in (".bin", ".pt", ".pth",
                                                                      ".safetensors")}
    assert weights == {".safetensors"}
