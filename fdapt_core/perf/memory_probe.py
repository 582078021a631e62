"""Worker: one short fdapt run with K clients in a fresh process; writes its peak memory.

Run as `python -m fdapt_core.perf.memory_probe OUT.json K key=value …`. A fresh process per K
is what makes the peaks comparable: a process's resident set never shrinks back.
"""
from __future__ import annotations

import json
import sys

from fdapt_core.config.run import build_config
from fdapt_core.runner import run


def main(argv: list[str]) -> None:
    out, k, *overrides = argv
    cfg = build_config({}, [*overrides, f"fl.clients={k}", f"name=memory-{k}"])
    rec = run(cfg, "fdapt")
    t = rec["totals"]
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"clients": int(k), "peak_mem_mb": t["peak_mem_mb"],
                   "peak_rss_mb": t["peak_rss_mb"],
                   "peak_cuda_allocated_mb": t.get("peak_cuda_allocated_mb"),
                   "steps": t["steps"],
                   # a client with fewer blocks than a batch trains a smaller one: a lower peak
                   "smallest_batch": min(c["step_flops"]["batch"] for r in rec["rounds"]
                                         for c in r["clients"] if c["step_flops"])}, f)


if __name__ == "__main__":
    main(sys.argv[1:])
