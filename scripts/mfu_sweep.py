"""MFU of the harness loop against batch size on one GPU (bf16, eager and compiled), with the
plain hand-written loop at each size: is a low MFU the loop's overhead or a step too small for
the chip? Prints a table; --out writes the rows as JSON.

    PYTHONPATH=. python scripts/mfu_sweep.py --batches 8,32,64 --out results/mfu-sweep.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fdapt_core.perf.mfu import harness_mfu  # noqa: E402
from fdapt_core.records import environment, write_json_atomic  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="distilbert-base")
    ap.add_argument("--batches", default="8,32,64")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("mfu_sweep: no CUDA device here: nothing to measure")
        return 0
    device = torch.device("cuda")
    rows = []
    print(f"{'batch':>5} {'mode':>8} {'tok/s':>10} {'TFLOP/s':>8} {'MFU ds':>7} "
          f"{'MFU meas':>8} {'vs plain':>8}", flush=True)
    for batch in (int(b) for b in args.batches.split(",")):
        for compiled in (False, True):
            r = harness_mfu(device, args.preset, batch, args.seq_len, compiled, args.steps,
                            plain=not compiled)
            rows.append(r)
            vs = f"{r['harness_vs_plain']:.3f}" if "harness_vs_plain" in r else "-"
            print(f"{batch:>5} {'compiled' if compiled else 'eager':>8} "
                  f"{r['tokens_per_s']:>10.0f} {r['achieved_tflops']:>8.1f} "
                  f"{r['mfu_datasheet'] or 0:>7.1%} {r['mfu_measured_peak']:>8.1%} {vs:>8}",
                  flush=True)
            if args.out:  # after every row: a run stopped at its limit keeps what it measured
                write_json_atomic(args.out, {
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "environment": environment(device), "preset": args.preset,
                    "seq_len": args.seq_len, "steps": args.steps, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
