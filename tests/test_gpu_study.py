"""scripts/gpu_study.py, the parts that run here: the start model rounded to float16 and widened
back, the records that come back from a call (never weights, never a run cut off part-way),
and their unpacking (nothing outside the study's folder)."""
from __future__ import annotations

import importlib.util
import io
import json
import tarfile

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import ROOT, needs_shared_data
from tests.test_downstream_e2e import task_files  # noqa: F401  (a fixture)
from tests.test_study import _study_file

spec = importlib.util.spec_from_file_location("gpu_study", ROOT / "scripts" / "gpu_study.py")
gpu_study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_study)

STUDY = ROOT / "configs" / "study-gpu.yaml"


def test_the_start_model_travels_as_float16_and_trains_as_float32(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    g = torch.Generator().manual_seed(0)
    weights = {"w": torch.randn(64, 32, generator=g) * 0.05, "b": torch.zeros(32),
               "ids": torch.arange(8)}
    save_file(weights, src / "model.safetensors")
    (src / "config.json").write_text("{}")
    (src / "tokenizer.json").write_text("{}")
    dest = tmp_path / "dest"
    info = gpu_study.pack_model(src, dest)
    assert sorted(p.name for p in dest.iterdir()) == [
        "config.json", "model.fp16.safetensors", "tokenizer.json"]
    assert 0 < info["largest_relative_l2_error"] <= 2.0 ** -11  # float16's unit roundoff
    assert info["values_flushed_to_zero"] == 0
    assert (dest / "model.fp16.safetensors").stat().st_size < \
        0.6 * (src / "model.safetensors").stat().st_size
    gpu_study.widen_model(dest)
    got = load_file(dest / "model.safetensors")
    assert got["w"].dtype == torch.float32 and got["ids"].dtype == torch.int64
    assert torch.equal(got["w"], weights["w"].half().float())  # exactly the rounded values
    assert torch.equal(got["ids"], weights["ids"])


def _run(folder, status, weights=True):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("name: x\n")
    (folder / "record.json").write_text(json.dumps({"status": status}))
    (folder / "downstream").mkdir()
    (folder / "downstream" / "ner.outcomes.json").write_text("{}")
    if weights:
        for sub in ("model", "checkpoints/round-1"):
            (folder / sub).mkdir(parents=True)
            (folder / sub / "model.safetensors").write_bytes(b"w")


def test_records_come_back_without_weights_or_runs_cut_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results" / "studies" / "s"
    cell = out / "runs" / "s-iid-s0"
    _run(cell / "fdapt", "finished")
    _run(cell / "central", "running")  # the budget stopped it: trained again next call
    _run(out / "runs" / "s-head-warmup" / "ffdapt-bottom", "finished")
    (cell / "general").mkdir()
    (cell / "general" / "record.json").write_text("{}")
    (cell / "downstream.md").write_text("|")
    (cell / "fdapt" / "model.tmp").mkdir()
    (cell / "fdapt" / "model.tmp" / "x").write_text("x")
    (out / "report").mkdir()
    (out / "report" / "report.md").write_text("#")
    dest = tmp_path / "records.tar.gz"
    n = gpu_study.pack_records(out.relative_to(tmp_path), dest)
    with tarfile.open(dest) as tar:
        names = sorted(tar.getnames())
    assert n == len(names)
    base = "results/studies/s/"
    assert names == sorted(base + p for p in [
        "report/report.md", "runs/s-head-warmup/ffdapt-bottom/config.yaml",
        "runs/s-head-warmup/ffdapt-bottom/downstream/ner.outcomes.json",
        "runs/s-head-warmup/ffdapt-bottom/record.json", "runs/s-iid-s0/downstream.md",
        "runs/s-iid-s0/fdapt/config.yaml", "runs/s-iid-s0/fdapt/downstream/ner.outcomes.json",
        "runs/s-iid-s0/fdapt/record.json", "runs/s-iid-s0/general/record.json"])


def _tarball(path, names):
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))


def test_unpack_writes_only_under_the_study_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_study, "ROOT", tmp_path)
    good = tmp_path / "good.tar.gz"
    _tarball(good, ["results/studies/ohsumed-gpu/runs/c/fdapt/record.json"])
    gpu_study.unpack(good, STUDY)
    assert (tmp_path / "results/studies/ohsumed-gpu/runs/c/fdapt/record.json").read_text() \
        == "{}"
    for bad in ("results/studies/other/record.json", "README.md",
                "results/studies/ohsumed-gpu/../../../x.json"):
        path = tmp_path / "bad.tar.gz"
        _tarball(path, ["results/studies/ohsumed-gpu/runs/ok.json", bad])
        with pytest.raises(SystemExit, match="is not a file under"):
            gpu_study.unpack(path, STUDY)
        assert not (tmp_path / "results/studies/ohsumed-gpu/runs/ok.json").exists()


def test_pack_takes_the_corpus_and_every_split_of_the_studys_tasks():
    needs_shared_data("corpus/ohsumed23.jsonl")
    names = [name for _, name in gpu_study.data_files(STUDY)]
    assert names == ["corpus/ohsumed23.jsonl", "tasks/ncbi_disease/train.tsv",
                     "tasks/ncbi_disease/devel.tsv", "tasks/ncbi_disease/test.tsv",
                     "tasks/chemprot/train.jsonl", "tasks/chemprot/dev.jsonl",
                     "tasks/chemprot/test.jsonl"]


@pytest.mark.slow
def test_a_call_runs_the_study_and_sends_back_its_records(tmp_path, cache_dir, monkeypatch,
                                                          task_files):  # noqa: F811
    """`run` on a tiny study (here on CPU, with no start model packed): the study runs
    through `bench study` within its budget, and the tarball holds its records, not its
    weights, with the study's log beside it."""
    path = _study_file(tmp_path, cache_dir, task_files["ner"][0], tasks=[],
                       methods=["fdapt"])
    pack = tmp_path / ".gpu"
    pack.mkdir()
    (tmp_path / "corpus.txt").write_text("x")
    with tarfile.open(pack / "data.tar.xz", "w:xz") as tar:
        tar.add(tmp_path / "corpus.txt", arcname="corpus/corpus.txt")
    monkeypatch.setattr(gpu_study, "PACK", pack)
    monkeypatch.setattr(gpu_study, "MODEL", pack / "absent")
    rc = gpu_study.run(path, 600, tmp_path / "out", device="cpu")
    assert rc == 0, (tmp_path / "out" / "study.log").read_text()[-2000:]
    assert (pack / "data" / "corpus" / "corpus.txt").read_text() == "x"
    assert (tmp_path / "study" / "runs" / "tiny-iid-s0" / "fdapt" / "model").is_dir()
    with tarfile.open(tmp_path / "out" / "records.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.endswith("tiny-iid-s0/fdapt/record.json") for n in names)
    assert any(n.endswith("report/report.md") for n in names)
    assert not [n for n in names if "/model/" in n or "/checkpoints/" in n]
