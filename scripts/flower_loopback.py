"""A cross-silo Flower deployment on the loopback interface, measured: a SuperLink, one
SuperNode per client whose `data-path` holds only that client's documents, and `flwr run` of
the harness's app. Writes one JSON (rounds, bytes, time per round, the round's time
outside the clients' training, and the largest weight difference from the same run on the
sequential executor) and prints a line per round.

    .venv/bin/python scripts/flower_loopback.py [--clients 2] [--rounds 3] [--warm-s 120]
        [--out FILE]

Each round's time outside the slowest client's training is broken down along the node
whose reply came last (`round_summary`); `--warm-s 0` measures nodes without a warm worker.

Needs the `flower` extra. A few minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fdapt_core.config.run import load_config  # noqa: E402
from fdapt_core.data.synthetic import generate  # noqa: E402
from fdapt_core.flower.local_deployment import (BIN, free_port, start, stop,  # noqa: E402
                                                superlink)
from fdapt_core.flower.phases import NODE_PHASES  # noqa: E402
from fdapt_core.prepare import prepare  # noqa: E402
from fdapt_core.records import environment, write_json_atomic  # noqa: E402
from fdapt_core.runner import run as run_here  # noqa: E402
from safetensors.torch import load_file  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "flower-loopback.json")
    ap.add_argument("--warm-s", type=float, default=120.0,
                    help="each node's warm worker waits this long for the next message "
                         "(node config warm-s); 0: a fresh ClientApp process trains each round")
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
                             f'partition-id={c} data-path="{f}" cache-dir="{tmp / f"node{c}"}" '
                             f'warm-s={args.warm_s:g}'],
                            tmp / f"supernode-{c}.log", env))
    record = tmp / "out" / "loopback" / "fdapt" / "record.json"
    t0 = time.monotonic()
    try:
        time.sleep(3)
        run = subprocess.run([str(BIN / "flwr"), "run", str(ROOT / "flower_app"), "local",
                              "--stream", "--run-config", f'set="{" ".join(sets)}"'],
                             env=env, capture_output=True, text=True, timeout=900)
        # what each SuperNode's session still runs once the run is over (docs/flower.md)
        left = {f"supernode-{c}": session_processes(p.pid) for c, p in enumerate(procs[1:])}
    finally:
        for p in procs:
            stop(p)
    wall = time.monotonic() - t0
    rec = json.loads(record.read_text()) if record.is_file() else None
    if rec is None or rec.get("status") not in ("finished", "degraded"):
        print(run.stdout[-3000:], run.stderr[-2000:])
        for log in tmp.glob("*.log"):
            print(f"--- {log.name}\n{log.read_text()[-2000:]}")
        print(f"its files are kept for a look: {tmp}")
        return 1
    rounds = [round_summary(r) for r in rec["rounds"]]
    for x in rounds:
        print(f"round {x['round']}: {x['wall_s']:.1f} s ({x['slowest_client_train_s']:.1f} s "
              f"training on the slowest client, {x['outside_client_training_s']:.1f} s "
              f"outside), down {x['flower_bytes_down']:,} B, up {x['flower_bytes_up']:,} B, "
              f"held-out loss {x['eval_loss']:.4f}")
        print("    " + ", ".join(f"{k.removesuffix('_s')} {v:.2f}"
                                 for k, v in x["outside_breakdown_s"].items()))
    # the same run on the sequential executor, on the whole corpus: the weights must agree
    run_here(load_config(ROOT / "configs" / "default.yaml", [*sets, "name=sequential"]), "fdapt")
    a = load_file(str(tmp / "out" / "sequential" / "fdapt" / "model" / "model.safetensors"))
    b = load_file(str(tmp / "out" / "loopback" / "fdapt" / "model" / "model.safetensors"))
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"largest weight difference from the sequential executor: {diff:.2e}")
    out = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "max_weight_diff_vs_sequential": diff,
           "environment": environment(torch.device("cpu")), "clients": args.clients,
           "warm_s": args.warm_s,
           "documents_per_node": [len(ids) for ids in manifest["clients"]],
           "deployment_wall_s": wall, "processes_after_run": left, "rounds": rounds,
           "median_outside_client_training_s": statistics.median(
               x["outside_client_training_s"] for x in rounds),
           "median_outside_breakdown_s": {
               k: statistics.median(x["outside_breakdown_s"].get(k, 0.0) for x in rounds)
               for k in rounds[0]["outside_breakdown_s"]},
           "final_eval": rec["final_eval"], "initial_eval": rec["initial_eval"]}
    write_json_atomic(args.out, out)
    shutil.rmtree(tmp, ignore_errors=True)  # its corpus, models and logs: ~12 MB a run
    print(f"flower_loopback: {len(rounds)} rounds in {wall:.0f} s, median "
          f"{out['median_outside_client_training_s']:.1f} s a round outside training; "
          f"record {args.out}")
    return 0


def session_processes(sid: int) -> list[str]:
    """`pid ppid state command` of every process in session `sid` (a SuperNode started in a
    session of its own), the SuperNode first."""
    ps = subprocess.run(["ps", "-eo", "pid=,ppid=,sid=,stat=,args="], capture_output=True,
                        text=True).stdout.splitlines()
    rows = [line.split(None, 4) for line in ps]
    here = f"{ROOT}/"  # commands relative to the checkout: the record names no machine path
    return [" ".join([pid, ppid, stat, args.replace(here, "")[:100]])
            for pid, ppid, s, stat, args in (r + [""] * (5 - len(r)) for r in rows)
            if s == str(sid)]


def round_summary(r: dict) -> dict:
    """A round's time and traffic, and where its time outside training went: along the
    node whose reply came last (the round waited for it), from the server's encoding of
    the tasks to its decoding of the replies, then the server's own aggregation,
    evaluation; `other` is what no phase accounts for. The checkpoint follows the round's
    `wall_s` (it is not in it) and is listed last."""
    train = max(c["wall_s"] for c in r["clients"])
    last = max(r["clients"], key=lambda c: sum((c.get("node") or {}).values()))
    got = last.get("node") or {}
    # the node's client round (`train_s`) less the training proper (its row's wall_s):
    # loading the global model, freezing, encoding the upload
    node = {("round_setup_s" if k == "train_s" else k):
            got[k] - (last["wall_s"] if k == "train_s" else 0.0)
            for k in NODE_PHASES if k in got}
    tr = r.get("transport") or {}
    parts = {"server_connect_s": tr.get("connect_s", 0.0),
             "server_encode_s": tr.get("encode_s", 0.0), **node,
             "server_decode_s": tr.get("decode_s", 0.0),
             "aggregate_s": r["aggregate_wall_s"], "eval_s": r["eval_wall_s"]}
    outside = r["wall_s"] - last["wall_s"]
    parts["other_s"] = outside - sum(parts.values())
    # after the round's wall_s, before the next round starts
    parts["checkpoint_s"] = r.get("checkpoint_wall_s") or 0.0
    return {"round": r["round"] + 1, "wall_s": r["wall_s"],
            "slowest_client_train_s": train,
            "outside_client_training_s": r["wall_s"] - train,
            "critical_client": last["client"],
            "outside_breakdown_s": parts,
            "nodes": {str(c["client"]): c.get("node") for c in r["clients"]},
            "transport": tr,
            "flower_bytes_down": sum(c["flower_bytes_down"] for c in r["clients"]),
            "flower_bytes_up": sum(c["flower_bytes_up"] for c in r["clients"]),
            "bytes_up": sum(c["bytes_up"] for c in r["clients"]),
            "eval_loss": r["eval_loss"]}


if __name__ == "__main__":
    sys.exit(main())
