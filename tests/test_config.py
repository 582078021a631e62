import subprocess
import sys

import pytest

from fdapt_core.config.run import build_config, describe, load_config
from fdapt_core.config.build import parse_override
from fdapt_core.errors import ConfigError
from tests.conftest import ROOT


@pytest.mark.parametrize("override, words", [
    (["fl.roundz=3"], ["fl.roundz", "rounds"]),
    (["bogus=1"], ["bogus", "top level"]),
    (["fl.rounds=three"], ["fl.rounds", "integer"]),
    (["train.lr=fast"], ["train.lr", "number"]),
    (["fl.rounds=0"], ["fl.rounds", "minimum"]),
    (["fl.client_fraction=1.5"], ["fl.client_fraction", "maximum"]),
    (["partition.method=random"], ["partition.method", "iid", "dirichlet"]),
    (["fl.send_frozen=maybe"], ["fl.send_frozen", "true or false"]),
    (["model.name_or_path=x"], ["model.preset", "model.name_or_path"]),
    (["data.source=jsonl"], ["data.path", "required"]),
    (["data.source=jsonl", "data.path=x.jsonl", "partition.method=by_key"],
     ["data.key_field"]),
    (["freeze.min_blocks=3", "freeze.max_blocks=2"], ["freeze.min_blocks"]),
    (["name=../x"], ["name"]),
    (["fl.clients=700"], ["fl.clients", "n_docs"]),
    (["fl=3"], ["fl", "mapping"]),
    (["noequals"], ["key=value"]),
    # a key the run would not read, given explicitly: named, never a silent no-op
    (["data.path=missing.jsonl"], ["data.path", "not read while data.source is synthetic"]),
])
def test_bad_values_name_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        build_config({}, override)
    for w in words:
        assert w in str(e.value)


def test_overrides_are_typed():
    cfg = build_config({"fl": {"rounds": 2}}, ["train.lr=1e-4", "fl.rounds=7",
                                               "data.text_fields=[title, abstract]",
                                               "model.preset=null", "model.name_or_path=m"])
    assert cfg.train.lr == 1e-4 and cfg.fl.rounds == 7
    assert cfg.data.text_fields == ["title", "abstract"]
    assert cfg.model.preset is None
    assert build_config({}, ["train.lr=5e-5"]).train.lr == 5e-5  # YAML 1.1 reads a string
    assert parse_override("a.b= x=y ") == ("a.b", "x=y")
    assert build_config({}, ["name=off"]).name == "off"  # not YAML 1.1's False
    assert build_config({}, ["fl.send_frozen=true"]).fl.send_frozen is True
    with pytest.raises(ConfigError, match="true or false"):
        build_config({}, ["fl.send_frozen=yes"])


def test_hash_changes_with_the_config():
    assert build_config({}).hash() == build_config({}).hash()
    assert build_config({}).hash() != build_config({}, ["seed=1"]).hash()


def test_yaml_errors_name_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("fl:\n  rounds: 3\n  clients: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_every_key_is_documented():
    rows = describe()
    assert len(rows) > 40
    assert all(help_ for _, _, help_ in rows)


@pytest.mark.parametrize("args, needle", [
    (["run", "--method", "fdapt", "--set", "fl.roundz=2"], "fl.roundz"),
    (["run", "--method", "fedprox"], "method 'fedprox'"),
    (["compare", "--set", "data.source=jsonl", "--set", "data.path=nowhere.jsonl"],
     "nowhere.jsonl"),
    (["run", "--method", "fdapt", "--config", "missing.yaml"], "missing.yaml"),
    (["run", "--method", "fdapt", "--set", "data.source=jsonl", "--set",
      "data.path=nowhere.jsonl"], "nowhere.jsonl"),
])
@pytest.mark.slow
def test_cli_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, needle):
    out = tmp_path / "results"
    p = subprocess.run([sys.executable, "-m", "bench", *args, "--set", f"output_dir={out}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr
    # the line itself: no blank line before it (a run's progress display, stopped on the
    # error before it had shown anything, printed one)
    assert p.stderr.startswith("error:"), repr(p.stderr[:80])
    assert "Traceback" not in p.stderr + p.stdout
    assert not out.exists()


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n  # and another\n", "---\n"])
def test_an_empty_config_file_is_an_error_naming_it(tmp_path, text):
    p = tmp_path / "empty.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=r"empty\.yaml: the file is empty"):
        load_config(p)


def test_config_keys_shows_the_allowed_values():
    from typer.testing import CliRunner

    from bench.cli import app

    result = CliRunner().invoke(app, ["config", "--keys"])
    assert result.exit_code == 0, result.output
    # "[a | b]" once read as rich markup, and vanished
    assert "corpus reader [synthetic | text | jsonl" in result.output
    assert "[iid |" in result.output


def test_missing_deepspeed_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "deepspeed", None)
    with pytest.raises(ConfigError, match=r"pip install 'fdapt-bench\[deepspeed\]'"):
        build_config({}, ["dist.engine=deepspeed"])
