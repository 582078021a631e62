"""The step bench, then the `gpu`-marked tests on one GPU, gathered into one JSON.

First the step bench (fdapt_core/perf/step_bench.py): the harness's step at the study's
encoder shape (distilbert-base, 512 tokens, batch 32) with the levers added one at a time,
batch 64, the Llama-shape decoder, and each freeze policy's FLOP against wall-time saving;
each row times repeats until they agree within 5 % (the spread recorded), with MFU on the fixed
formula and the datasheet and measured peaks, tokens/s, HFU, and GPU memory
(max_memory_allocated) beside the host's RSS. Then the tests, which leave their figures in
$FDAPT_GPU_CHECK_DIR (mfu.json: the harness loop's MFU, eager and compiled; perf-gpu.json:
`bench perf` at GPU sizes); this script adds each test's outcome and time, the device and the
commit. Called by scripts/gpu_check.sh.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fdapt_core.perf.step_bench import gpu_rows  # noqa: E402
from fdapt_core.records import environment, write_json_atomic  # noqa: E402

TARGET_MFU = 0.40  # distilbert-base shape, 512 tokens, bf16, vs the datasheet dense peak
STRETCH_MFU = 0.45
STEP_BENCH_S = 170  # the step bench's share of the 8 minutes (a row is not started after it)
BUDGET_S = 300  # the tests' share


def outcomes(junit: Path) -> list[dict]:
    if not junit.exists():
        return []
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        bad = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        rows.append({"test": case.get("name"), "seconds": float(case.get("time", 0)),
                     "outcome": "passed" if bad is None else bad.tag,
                     "message": None if bad is None else (bad.get("message") or "")[:500]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / time.strftime(
        "gpu-check-%Y%m%d-%H%M%S.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    try:
        steps = gpu_rows(torch.device("cuda"), STEP_BENCH_S, progress=lambda m: print(
            f"gpu_check: {m}", flush=True))
    except Exception as exc:  # the tests still run; the record says what failed
        steps = {"error": f"{type(exc).__name__}: {exc}"}
    torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory(prefix="fdapt-gpu-") as tmp:
        figures = Path(tmp) / "figures"
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py",
               f"--junitxml={junit}", "-p", "no:cacheprovider"]
        try:
            rc = subprocess.run(cmd, cwd=ROOT, timeout=BUDGET_S,
                                env={**os.environ, "FDAPT_GPU_CHECK_DIR": str(figures)}).returncode
        except subprocess.TimeoutExpired:
            rc = 124
        found = {f.stem: json.loads(f.read_text()) for f in figures.glob("*.json")} \
            if figures.exists() else {}
        tests = outcomes(junit)
        if (figures / "perf-gpu.json").exists():
            shutil.copy(figures / "perf-gpu.json", args.out.with_name("perf-gpu.json"))
    mfu = found.get("mfu") or {}
    best = max([mfu[k]["mfu_datasheet"] for k in ("eager", "compiled")
                if mfu.get(k, {}).get("mfu_datasheet") is not None]
               + ([steps["best_mfu"]] if steps.get("best_mfu") is not None else []),
               default=None)
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": environment(torch.device("cuda")), "wall_s": time.perf_counter() - t0,
        "pytest_exit": rc, "tests": tests,
        "passed": sum(t["outcome"] == "passed" for t in tests),
        "failed": sum(t["outcome"] in ("failure", "error") for t in tests),
        "mfu": mfu or None,
        "step_bench": steps,
        "target": {"what": "MFU vs datasheet dense bf16 peak, distilbert-base shape, 512 tokens",
                   "min": TARGET_MFU, "stretch": STRETCH_MFU, "best": best,
                   "met": None if best is None else best >= TARGET_MFU},
        "perf": found.get("perf-gpu"),
    }
    write_json_atomic(args.out, result)
    print(f"gpu_check: {result['passed']} passed, {result['failed']} failed "
          f"in {result['wall_s']:.0f} s; MFU best {best if best is None else f'{best:.1%}'} "
          f"(target {TARGET_MFU:.0%}); record {args.out}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
