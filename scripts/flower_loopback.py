"""A cross-silo Flower deployment on the loopback interface, measured: a SuperLink, one
SuperNode per client whose `data-path` holds only that client's documents, and `flwr run` of
the harness's app. Writes one JSON (rounds, bytes, time per round, the round's time
outside the clients' training, and the largest weight difference from the same run on the
sequential executor) and prints a line per round.

    .venv/bin/python scripts/flower_loopback.py [--clients 2] [--rounds 3] [--out FILE]

Needs the `flower` extra. A few minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fdapt_core.config import load_config  # noqa: E402
from fdapt_core.data.synthetic import generate  # noqa: E402
from fdapt_core.flower.local_deployment import (BIN, free_port, start, stop,  # noqa: E402
                                                superlink)
from fdapt_core.prepare import prepare  # noqa: E402
from fdapt_core.records import environment, write_json_atomic  # noqa: E402
from fdapt_core.runner import run as run_here  # noqa: E402
from safetensors.torch import load_file  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "flower-loopback.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fdapt-loopback-"))
    docs = generate(n_docs=200, n_topics=6, seed=0)
    whole = tmp / "whole.jsonl"
    whole.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in docs))
    sets = ["data.source=jsonl", f"data.path={whole}", "data.text_fields=[text]",
            "data.id_field=id", f"fl.clients={args.clients}", f"fl.rounds={args.rounds}",
            f"output_dir={tmp / 'out'}", f"cache_dir={tmp / 'cache'}", "name=loopback",
            "dist.timeout_s=120"]
    # each institution's file: its client's documents alone
    manifest = prepare(load_config(ROOT / "configs" / "default.yaml", sets), "fdapt").manifest
    files = []
    for c, ids in enumerate(manifest["clients"]):
        mine = set(ids)
        files.append(tmp / f"client{c}.jsonl")
        files[-1].write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n"
                                     for d in docs if d.id in mine))
    link_proc, link, env = superlink(tmp / "flwr", ROOT, tmp / "superlink.log")
    procs = [link_proc]
    for c, f in enumerate(files):
        procs.append(start(["flower-supernode", "--insecure", "--superlink",
                             f"127.0.0.1:{link}", "--port", str(free_port()), "--node-config",
                             f'partition-id={c} data-path="{f}" cache-dir="{tmp / f"node{c}"}"'],
                            tmp / f"supernode-{c}.log", env))
    record = tmp / "out" / "loopback" / "fdapt" / "record.json"
    t0 = time.monotonic()
    try:
        time.sleep(3)
        run = subprocess.run([str(BIN / "flwr"), "run", str(ROOT / "flower_app"), "local",
                              "--stream", "--run-config", f'set="{" ".join(sets)}"'],
                             env=env, capture_output=True, text=True, timeout=900)
    finally:
        for p in procs:
            stop(p)
    wall = time.monotonic() - t0
    rec = json.loads(record.read_text()) if record.is_file() else None
    if rec is None or rec.get("status") not in ("finished", "degraded"):
        print(run.stdout[-3000:], run.stderr[-2000:])
        for log in tmp.glob("*.log"):
            print(f"--- {log.name}\n{log.read_text()[-2000:]}")
        return 1
    rounds = []
    for r in rec["rounds"]:
        train = max(c["wall_s"] for c in r["clients"])
        rounds.append({"round": r["round"] + 1, "wall_s": r["wall_s"],
                       "slowest_client_train_s": train,
                       "outside_client_training_s": r["wall_s"] - train,
                       "flower_bytes_down": sum(c["flower_bytes_down"] for c in r["clients"]),
                       "flower_bytes_up": sum(c["flower_bytes_up"] for c in r["clients"]),
                       "bytes_up": sum(c["bytes_up"] for c in r["clients"]),
                       "eval_loss": r["eval_loss"]})
        print(f"round {rounds[-1]['round']}: {r['wall_s']:.1f} s ({train:.1f} s training on "
              f"the slowest client), down {rounds[-1]['flower_bytes_down']:,} B, up "
              f"{rounds[-1]['flower_bytes_up']:,} B, held-out loss {r['eval_loss']:.4f}")
    # the same run on the sequential executor, on the whole corpus: the weights must agree
    run_here(load_config(ROOT / "configs" / "default.yaml", [*sets, "name=sequential"]), "fdapt")
    a = load_file(str(tmp / "out" / "sequential" / "fdapt" / "model" / "model.safetensors"))
    b = load_file(str(tmp / "out" / "loopback" / "fdapt" / "model" / "model.safetensors"))
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"largest weight difference from the sequential executor: {diff:.2e}")
    out = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "max_weight_diff_vs_sequential": diff,
           "environment": environment(torch.device("cpu")), "clients": args.clients,
           "documents_per_node": [len(ids) for ids in manifest["clients"]],
           "deployment_wall_s": wall, "rounds": rounds,
           "final_eval": rec["final_eval"], "initial_eval": rec["initial_eval"]}
    write_json_atomic(args.out, out)
    print(f"flower_loopback: {len(rounds)} rounds in {wall:.0f} s; record {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
