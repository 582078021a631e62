"""The fixed micro-suite behind `bench perf`, returning one JSON-ready record.

(a) local-training tokens/s: harness vs a plain loop vs the HF Trainer, as ratios, for an
    encoder (MLM) and a Llama-shape decoder (next-token loss);
(b) the share of round wall time spent outside local training;
(c) the FFDAPT FLOP and local-training wall-time savings (paper and bottom policies);
(d) peak memory of the sequential executor with 2, 8 and 32 clients, on one corpus large
    enough that every client trains full batches at every count (with 600 documents at 512
    tokens, 32 clients had short ones, and the GPU's peak fell with more clients: it measured
    the batch, not the clients).
Sizes are fixed per device kind so that records of the same kind compare run to run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config.run import build_config, load_config
from ..errors import FdaptError
from ..fl.local import amp_dtype
from ..model import build_model, tokenizer_info
from ..objective import MaskedLM
from ..flops.count import count_step_flops
from ..profiling.peak import device_peak
from ..profiling.host import HostLoad
from ..records import environment
from ..data.packing import pack
from ..prepare import prepare, resolve_device
from ..runner import run
from .throughput import Grow, compare_heads, compare_loops

SCHEMA = 1
DOCS_PER_CLIENT = 40  # (d): enough for full batches at every client count


@dataclass(frozen=True)
class Sizes:
    """What the suite runs on one kind of device."""

    preset: str
    seq_len: int
    steps: int
    repeats: int
    rounds: int
    memory_clients: tuple[int, ...] = (2, 8, 32)
    n_docs: int = 600
    max_local_steps: int | None = None
    causal_preset: str = "llama-small"  # the decoder of (a)'s causal row
    minilm: bool = True  # time the sparse MLM head on all-MiniLM-L6-v2 (configs/ohsumed.yaml)
    # harness ÷ plain: pairs added until its 90 % interval's half-width is this, within cap_s
    ratio_half_width: float = 0.02
    ratio_cap_s: float = 300.0


CPU = Sizes(preset="small", seq_len=128, steps=24, repeats=3, rounds=2)
GPU = Sizes(preset="distilbert-base", seq_len=512, steps=50, repeats=3, rounds=2)
QUICK = Sizes(preset="tiny", seq_len=64, steps=4, repeats=1, rounds=1,
              memory_clients=(2, 4), n_docs=200, max_local_steps=4, causal_preset="llama-tiny",
              minilm=False, ratio_cap_s=0.0)


def _base_overrides(cache_dir: Path, out_dir: Path, sizes: Sizes, device: str) -> list[str]:
    return [f"cache_dir={cache_dir}", f"output_dir={out_dir}",
            f"data.synthetic.n_docs={sizes.n_docs}", f"data.max_seq_length={sizes.seq_len}",
            f"fl.rounds={sizes.rounds}", "fl.clients=4", f"train.device={device}",
            "train.lr=5e-4", f"train.max_local_steps={sizes.max_local_steps or 'null'}"]


def run_suite(device: str = "auto", cache_dir: str | Path = "results/.cache",
              sizes: Sizes | None = None, progress=lambda msg: None) -> dict:
    """Run (a)–(d); `progress(msg)` is told what is running."""
    dev = resolve_device(device)
    sizes = sizes or (GPU if dev.type == "cuda" else CPU)
    cache = Path(cache_dir)
    t_start = time.perf_counter()
    host = HostLoad(torch.get_num_threads())  # timings are only as clean as the host was
    children0 = _children_cpu_s()
    with tempfile.TemporaryDirectory(prefix="fdapt-perf-") as tmp:
        base = _base_overrides(cache, Path(tmp), sizes, str(dev))
        result = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                             time.gmtime()),
                  "environment": environment(dev), "sizes": sizes.__dict__ | {
                      "memory_clients": list(sizes.memory_clients)}}

        progress(f"(a) local-training throughput: harness vs plain loop vs HF Trainer "
                 f"({sizes.preset}, {sizes.repeats}×{sizes.steps} steps each)")
        cfg = build_config({}, [*base, f"model.preset={sizes.preset}"])
        prep = prepare(cfg, "central")
        blocks = pack(prep.tokens, [i for p in prep.parts for i in p], sizes.seq_len)
        model = build_model(cfg.model, prep.tokenizer, sizes.seq_len, cfg.seed).to(dev)
        loops = compare_loops(model, blocks, cfg.train, prep.tokenizer,
                              tokenizer_info(prep.tokenizer), dev, sizes.steps, sizes.repeats,
                              grow=_grow(sizes))
        if dev.type == "cuda":
            loops["mfu_harness"] = _mfu(model, blocks, cfg, prep.tokenizer, dev,
                                        loops["tokens_per_s"]["harness"])
        del model, prep
        result["throughput"] = loops
        result["harness_vs_plain_ratio"] = loops["harness_vs_plain_ratio"]
        result["harness_vs_plain_ci90"] = loops["harness_vs_plain_ci90"]
        result["harness_vs_trainer_ratio"] = loops["harness_vs_trainer_ratio"]

        progress("(a) the sparse MLM head on all-MiniLM-L6-v2 (configs/ohsumed.yaml): the harness "
                 "with the head at the masked positions and at every one")
        result["sparse_head_minilm"] = _sparse_head_minilm(cache, Path(tmp), sizes, dev) \
            if sizes.minilm else {"skipped": "not in the quick suite"}

        progress(f"(a) the same for a decoder ({sizes.causal_preset}, next-token loss)")
        cfg = build_config({}, [*base, f"model.preset={sizes.causal_preset}"])
        prep = prepare(cfg, "central")
        model = build_model(cfg.model, prep.tokenizer, sizes.seq_len, cfg.seed).to(dev)
        causal = compare_loops(model, blocks, cfg.train, prep.tokenizer,
                               tokenizer_info(prep.tokenizer), dev, sizes.steps, sizes.repeats,
                               causal=True, grow=_grow(sizes))
        del model, prep
        result["throughput_causal"] = causal
        result["harness_vs_plain_ratio_causal"] = causal["harness_vs_plain_ratio"]
        result["harness_vs_plain_ci90_causal"] = causal["harness_vs_plain_ci90"]
        result["harness_vs_trainer_ratio_causal"] = causal["harness_vs_trainer_ratio"]

        progress("(b, c) rounds of fdapt, ffdapt-paper and ffdapt-bottom: overhead and savings")
        records = {m: run(build_config({}, [*base, "name=perf"]), m)
                   for m in ("fdapt", "ffdapt-paper", "ffdapt-bottom")}
        ref = records["fdapt"]["totals"]
        result["outside_train_share"] = ref["outside_train_share"]
        result["phases_s"] = ref["phases_s"]
        result["ffdapt"] = {}
        for m in ("ffdapt-paper", "ffdapt-bottom"):
            t = records[m]["totals"]
            result["ffdapt"][m.split("-")[1]] = {
                "flops_saved_pct": 100.0 * (1 - t["train_flops"] / ref["train_flops"]),
                "train_wall_saved_pct": 100.0 * (1 - t["local_train_s"] / ref["local_train_s"]),
                "bytes_up_saved_pct": 100.0 * (1 - t["bytes_up"] / ref["bytes_up"]),
                "train_flops": t["train_flops"], "fdapt_train_flops": ref["train_flops"],
            }

        progress(f"(d) peak memory with {', '.join(map(str, sizes.memory_clients))} clients, "
                 "one fresh process each")
        mem, smallest = {}, {}
        docs = max(sizes.n_docs, DOCS_PER_CLIENT * max(sizes.memory_clients))
        for k in sizes.memory_clients:
            out = Path(tmp) / f"memory-{k}.json"
            overrides = [*base, "fl.rounds=1", "train.max_local_steps=2", "model.preset=tiny",
                         f"data.synthetic.n_docs={docs}"]
            subprocess.run([sys.executable, "-m", "fdapt_core.perf.memory_probe", str(out),
                            str(k), *overrides], check=True, env=os.environ.copy(),
                           capture_output=True, text=True)
            probe = json.loads(out.read_text())
            mem[str(k)], smallest[str(k)] = probe["peak_mem_mb"], probe["smallest_batch"]
        lo, hi = sizes.memory_clients[0], sizes.memory_clients[-1]
        result["memory"] = {"peak_mem_mb": mem, "n_docs": docs, "smallest_batch": smallest,
                            f"growth_{lo}_to_{hi}": mem[str(hi)] / mem[str(lo)] - 1.0}
        result["memory_growth"] = result["memory"][f"growth_{lo}_to_{hi}"]
    result["suite_wall_s"] = time.perf_counter() - t_start
    # the memory probes are this suite's own children: their CPU time is not contention
    result["host"] = host.sample(ranks_cpu_s=host.own_s() + _children_cpu_s() - children0)
    return result


def _sparse_head_minilm(cache: Path, out: Path, sizes: Sizes, dev: torch.device) -> dict:
    """Harness tokens/s with and without sparse prediction on the OHSUMED config's model (a
    30,522-word head on a 384-wide encoder: where the head costs most); skipped, with the
    reason, where the model's package or the corpus is not installed."""
    config = Path(__file__).resolve().parents[2] / "configs" / "ohsumed.yaml"
    try:
        cfg = load_config(config, [f"cache_dir={cache}", f"output_dir={out}",
                                   f"train.device={dev}", "data.max_docs=300",
                                   f"data.max_seq_length={sizes.seq_len}"])
        prep = prepare(cfg, "central")
    except FdaptError as exc:
        return {"skipped": str(exc)}
    blocks = pack(prep.tokens, [i for p in prep.parts for i in p], sizes.seq_len)
    model = prep.model.to(dev)
    steps = max(2, sizes.steps // 3)
    return {"config": "configs/ohsumed.yaml", "model": cfg.model.name_or_path,
            **compare_heads(model, blocks, cfg.train, tokenizer_info(prep.tokenizer), dev,
                            steps, sizes.repeats)}


def _grow(sizes: Sizes) -> Grow:
    return Grow(("harness", "plain"), sizes.ratio_half_width, sizes.ratio_cap_s)


def _children_cpu_s() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _mfu(model, blocks, cfg, tokenizer, device, tokens_per_s: float) -> dict:
    """Model FLOPs utilisation of the harness loop (one device): counted FLOPs per token ×
    tokens/s over the datasheet peak and over the measured one, in the precision trained."""
    x = blocks[: cfg.train.batch_size]
    inputs, labels = MaskedLM(tokenizer_info(tokenizer)).batch(x, torch.Generator())
    sf = count_step_flops(model, inputs.to(device), labels.to(device),
                          amp_dtype(cfg.train, device))
    dtype = amp_dtype(cfg.train, device)
    peak = device_peak(device, dtype, cfg.profile.peak_tflops)
    flops_per_s = sf.total / x.numel() * tokens_per_s
    return {"precision": peak.precision, "datasheet_source": peak.datasheet_source,
            "mfu": flops_per_s / peak.datasheet if peak.datasheet else None,
            "mfu_measured_peak": flops_per_s / peak.measured if peak.measured else None,
            "peak_tflops": (peak.datasheet or 0) / 1e12 or None,
            "measured_peak_tflops": (peak.measured or 0) / 1e12 or None}
