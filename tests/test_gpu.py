"""The CUDA path: skipped cleanly without a GPU (the `gpu` marker, see conftest.py).

`scripts/gpu_check.sh` runs these on one GPU and gathers the figures they leave in
$FDAPT_GPU_CHECK_DIR (MFU of the harness loop, the perf suite's record) into one JSON.
Figures are measured here and recorded, never asserted against a speed target: targets live in
`bench perf` and its recorded baselines.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fdapt_core.config.run import load_config
from fdapt_core.runner import run

from conftest import ROOT, TINY

pytestmark = pytest.mark.gpu

GPU = [*[s for s in TINY if not s.startswith("train.threads")], "train.device=cuda",
       "train.precision=bf16", "fl.clients=4", "data.synthetic.n_docs=120",
       "train.max_local_steps=3", "model.dropout=0"]


def _out() -> Path | None:
    d = os.environ.get("FDAPT_GPU_CHECK_DIR")
    return Path(d) if d else None


def _save(name: str, obj: dict) -> None:
    if _out() is not None:
        _out().mkdir(parents=True, exist_ok=True)
        (_out() / f"{name}.json").write_text(json.dumps(obj, indent=2))


def _cfg(tmp_path, cache_dir, name, extra=()):
    return load_config(ROOT / "configs" / "default.yaml",
                       [*GPU, f"output_dir={tmp_path}", f"cache_dir={cache_dir}", f"name={name}",
                        *extra])


def _weights(tmp_path, name, method):
    return load_file(str(tmp_path / name / method / "model" / "model.safetensors"))


def _max_diff(a, b):
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_sequential_bf16_run_end_to_end(tmp_path, cache_dir):
    rec = run(_cfg(tmp_path, cache_dir, "seq", ["fl.rounds=3"]), "ffdapt")
    t = rec["totals"]
    assert rec["status"] == "finished" and rec["environment"]["device"].startswith("cuda")
    assert t["peak"]["precision"] == "bf16" and t["peak"]["measured"] > 1e12
    assert t["peak_cuda_allocated_mb"] > 0 and t["peak_mem_mb"] == t["peak_cuda_allocated_mb"]
    losses = [r["eval_loss"] for r in rec["rounds"]]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < rec["initial_eval"]["loss"]
    # CUDA events split the loop into its phases
    assert {"data", "forward", "backward", "optimizer"} <= set(t["phases_s"])
    assert t["mfu_measured_peak"] is not None and 0 < t["mfu_measured_peak"] < 1


def test_mfu_of_the_harness_loop_against_the_datasheet_peak():
    """distilbert-base shape, 512 tokens, batch 8, bf16: the study's step, one GPU."""
    from fdapt_core.perf.mfu import harness_mfu
    from fdapt_core.profiling.peak import datasheet_tflops

    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    results = {"device": name, "shape": "distilbert-base", "seq_len": 512, "batch": 8}
    for compiled in (False, True):
        row = harness_mfu(device, "distilbert-base", batch=8, compiled=compiled)
        results["compiled" if compiled else "eager"] = row
        assert 0 < row["mfu_measured_peak"] < 1.05  # no loop beats the chip's own matmul
        if datasheet_tflops(name, "bf16") is not None:
            assert row["measured_peak_tflops"] < 1.05 * row["datasheet_tflops"]  # a ceiling
    _save("mfu", results)


def test_compiled_forward_trains_as_eager(tmp_path, cache_dir):
    fp32 = ["train.precision=fp32", "fl.rounds=1"]
    run(_cfg(tmp_path, cache_dir, "eager", fp32), "fdapt")
    run(_cfg(tmp_path, cache_dir, "compiled", [*fp32, "train.compile=true"]), "fdapt")
    assert _max_diff(_weights(tmp_path, "eager", "fdapt"),
                     _weights(tmp_path, "compiled", "fdapt")) < 1e-4


def _launch(sets, method, tmp_path, cache_dir, name):
    args = [sys.executable, "-m", "bench", "run", "--method", method, "--nproc", "1",
            "--config", str(ROOT / "configs" / "default.yaml")]
    for s in [*GPU, f"output_dir={tmp_path}", f"cache_dir={cache_dir}", f"name={name}", *sets]:
        args += ["--set", s]
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return json.loads((tmp_path / name / method / "record.json").read_text())


def test_nccl_executor_matches_sequential(tmp_path, cache_dir):
    """One rank over NCCL: every collective (FedAvg's merge included) gets CUDA tensors."""
    run(_cfg(tmp_path, cache_dir, "seq"), "ffdapt")
    rec = _launch([], "ffdapt", tmp_path, cache_dir, "nccl")
    assert rec["dist"]["backend"] == "nccl"
    assert _max_diff(_weights(tmp_path, "seq", "ffdapt"), _weights(tmp_path, "nccl", "ffdapt")) \
        < 1e-5


def test_zero_bf16_on_one_gpu(tmp_path, cache_dir):
    """ZeRO-2 bf16 over NCCL on one GPU: frozen blocks come back bit-identical, and the run
    stays near the sequential bf16 one (bf16 module vs autocast: not bit-equal)."""
    pytest.importorskip("deepspeed")
    run(_cfg(tmp_path, cache_dir, "seq", ["freeze.policy=bottom", "freeze.k=2"]), "ffdapt")
    rec = _launch(["dist.engine=deepspeed", "freeze.policy=bottom", "freeze.k=2",
                   "dist.deepspeed_config=configs/deepspeed/zero2.json"], "ffdapt", tmp_path,
                  cache_dir, "zero")
    assert rec["status"] == "finished"
    seq, zero = _weights(tmp_path, "seq", "ffdapt"), _weights(tmp_path, "zero", "ffdapt")
    # frozen on every client (the bottom policy): both are still the seeded initial weights
    frozen = [k for k in zero if ".layer.0." in k or ".layer.1." in k or ".embeddings." in k]
    assert frozen and all(torch.equal(seq[k], zero[k]) for k in frozen)
    assert _max_diff(seq, zero) < 5e-2


def test_bench_perf_at_gpu_sizes(tmp_path):
    out = (_out() or tmp_path) / "perf-gpu.json"
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "bench", "perf", "--device", "cuda", "--out",
                        str(out)], cwd=ROOT, capture_output=True, text=True, timeout=540)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    rec = json.loads(out.read_text())
    assert rec["sizes"]["preset"] == "distilbert-base" and rec["sizes"]["seq_len"] == 512
    m = rec["throughput"]["mfu_harness"]
    assert m["precision"] == "bf16" and 0 < m["mfu_measured_peak"] < 1.05
    assert rec["environment"]["device"].startswith("cuda")
    assert time.perf_counter() - t0 < 540
