#!/usr/bin/env python3
"""Kill a run at random moments, resume it, and check it ends as an uninterrupted run does.

    python scripts/kill_loop.py --kills 20 [--method fdapt] [--seed 0] [--out results/kill-loop.json]

One uninterrupted reference run first; then, per kill, a fresh run of the same config is
SIGKILLed after a seeded random delay drawn over the reference's whole duration (so kills land
in data preparation, local training, aggregation, evaluation and checkpoint writing alike), then
resumed (or restarted, when it died before its record existed) until it finishes. A kill passes
when the final weights are bit-identical to the reference's and the per-round held-out losses
match. Writes a JSON summary; exits 1 if any kill did not resume exactly.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.synthetic.n_docs=80", "data.max_seq_length=32", "data.val_fraction=0.1",
        "model.vocab_size=256", "fl.clients=3", "fl.rounds=3", "train.lr=1e-3",
        "eval.max_blocks=16", "train.threads=1"]


def bench(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT,
                          capture_output=True, text=True)


def sets(out: Path, cache: Path, name: str) -> list[str]:
    return [a for s in [*TINY, f"output_dir={out}", f"cache_dir={cache}", f"name={name}"]
            for a in ("--set", s)]


def final(out: Path, name: str, method: str) -> tuple[dict, list]:
    from safetensors.torch import load_file

    run = out / name / method
    weights = load_file(str(run / "model" / "model.safetensors"))
    rounds = json.loads((run / "record.json").read_text())["rounds"]
    return weights, [r["eval_loss"] for r in rounds]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--method", default="fdapt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import torch

    rng = random.Random(args.seed)
    results = []
    with tempfile.TemporaryDirectory(prefix="kill-loop-") as tmp:
        out, cache = Path(tmp) / "results", Path(tmp) / "cache"
        t0 = time.perf_counter()
        ref = bench(["run", "--method", args.method, *sets(out, cache, "reference")])
        if ref.returncode != 0:
            print(ref.stderr, file=sys.stderr)
            return 2
        duration = time.perf_counter() - t0
        ref_w, ref_losses = final(out, "reference", args.method)
        for i in range(args.kills):
            name = f"kill-{i}"
            delay = rng.uniform(0.0, duration)
            proc = subprocess.Popen([sys.executable, "-m", "bench", "run", "--method",
                                     args.method, *sets(out, cache, name)], cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(delay)
            killed = proc.poll() is None
            proc.kill()
            proc.wait()
            attempts = 0
            while True:  # resume until finished; restart if it died before its record
                attempts += 1
                has_record = (out / name / args.method / "record.json").is_file()
                p = bench(["run", "--method", args.method, *(["--resume"] if has_record else []),
                           *sets(out, cache, name)])
                if p.returncode == 0 or attempts >= 3:
                    break
            ok = p.returncode == 0
            if ok:
                w, losses = final(out, name, args.method)
                ok = losses == ref_losses and all(torch.equal(w[k], ref_w[k]) for k in ref_w)
            results.append({"kill": i, "delay_s": round(delay, 3), "killed_mid_run": killed,
                            "exact": ok})
            print(f"kill {i + 1}/{args.kills} after {delay:.2f} s: "
                  f"{'exact' if ok else 'DIFFERENT'}", flush=True)
    summary = {"method": args.method, "kills": args.kills, "reference_wall_s": duration,
               "exact": sum(r["exact"] for r in results), "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{summary['exact']}/{args.kills} exact resumes")
    return 0 if summary["exact"] == args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
