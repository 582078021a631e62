"""Sequential vs distributed, side by side: parity, round wall time, memory across rounds.

    python scripts/dist_bench.py [--nproc 2] [--repeats 3] [--config FILE] [--set k=v …]

Runs the same fdapt cell with the sequential executor and with `--nproc N` (one client per
rank), interleaved `--repeats` times; then one ffdapt run through DeepSpeed ZeRO (stage from
--zero) over all ranks for memory across rounds. Writes results/dist/dist-<device>.json with
medians and ratios measured in this run, and prints them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench(config, method, sets, nproc=None, env=None):
    args = [sys.executable, "-m", "bench", "run", "--config", config, "--method", method]
    if nproc:
        args += ["--nproc", str(nproc)]
    for s in sets:
        args += ["--set", s]
    t0 = time.perf_counter()
    res = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "DS_ACCELERATOR": "cpu", **(env or {})})
    if res.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{res.stderr[-2000:]}")
    return time.perf_counter() - t0


def record(out, name, method):
    return json.loads((out / name / method / "record.json").read_text())


def weights(out, name, method):
    from safetensors.torch import load_file

    return load_file(str(out / name / method / "model" / "model.safetensors"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--zero", type=int, default=2, choices=(1, 2, 3))
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--out", default="results/dist")
    a = ap.parse_args()
    out = ROOT / a.out
    base = [f"output_dir={out / 'runs'}", "model.dropout=0", *a.sets]
    seq_rounds, dist_rounds = [], []
    for i in range(a.repeats):  # interleaved: a slow spell of the machine hits both
        bench(a.config, "fdapt", [*base, "name=seq"])
        seq = record(out / "runs", "seq", "fdapt")
        bench(a.config, "fdapt", [*base, "name=dist"], nproc=a.nproc)
        dis = record(out / "runs", "dist", "fdapt")
        # rounds after the first (the first pays for warm-up, FLOP counting, op builds)
        seq_rounds += [r["train_wall_s"] + r["aggregate_wall_s"] for r in seq["rounds"][1:]]
        dist_rounds += [r["train_wall_s"] + r["aggregate_wall_s"] for r in dis["rounds"][1:]]
    ws, wd = weights(out / "runs", "seq", "fdapt"), weights(out / "runs", "dist", "fdapt")
    parity = max(float((ws[k] - wd[k]).abs().max()) for k in ws)
    zero_sets = [*base, "name=zero", "fl.rounds=6", f"dist.ranks_per_client={a.nproc}",
                 "dist.engine=deepspeed", f"dist.deepspeed_config=configs/deepspeed/"
                 f"zero{a.zero}.json"]
    bench(a.config, "ffdapt", zero_sets, nproc=a.nproc)
    z = record(out / "runs", "zero", "ffdapt")
    mem = [[x["mem_mb"] for x in r["ranks"]] for r in z["rounds"]]
    growth = max(m6 / m2 - 1 for m2, m6 in zip(mem[1], mem[5]))
    s_med, d_med = statistics.median(seq_rounds), statistics.median(dist_rounds)
    result = {
        "config": a.config, "sets": a.sets, "nproc": a.nproc, "repeats": a.repeats,
        "environment": seq["environment"],
        "max_abs_weight_diff": parity,
        "round_s_sequential_median": s_med, "round_s_distributed_median": d_med,
        "speedup": s_med / d_med, "speedup_target": 0.85 * a.nproc,
        "zero_stage": a.zero, "zero_mem_mb_per_round": mem,
        "zero_mem_growth_round2_to_6": growth,
    }
    out.mkdir(parents=True, exist_ok=True)
    dev = "cuda" if seq["environment"]["device"].startswith("cuda") else "cpu"
    path = out / f"dist-{dev}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "environment"}, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
