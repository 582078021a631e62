"""One training step of the harness, timed so that the numbers can be trusted, and its MFU.

The GPU check's core (scripts/gpu_check.py): a preset at a batch and length, with the levers
the single-node anchors use switched on or off one at a time (the sparse MLM head, bf16
autocast with float32 masters, SDPA attention, fused AdamW, `torch.compile`, the vocabulary
padded to a multiple of 64), and each FFDAPT freeze policy's step against the full one.

Timing. Every repeat runs `steps` steps of the harness loop (`fl.local.train_steps`, the loop
the runs use) after `warmup` steps that are not timed (they also compile). The loop ends on a
device synchronisation, so its wall clock covers the work and not only its launch; the
repeats go on until the spread of the last `min_repeats` (max − min over the median) is at
most `max_spread`, or `max_repeats` is reached, and the spread is recorded either way.
Memory is `torch.cuda.max_memory_allocated` over the timed repeats (the tensors the step
holds), with the host's peak resident set beside it.

FLOPs. MFU keeps one formula: the model's FLOPs per token with the head at every position
(the dense step, counted on the meta device: what the anchors' tokens/s turn into), so a lever
that skips work (the sparse head) shows as the tokens/s it gains. The FLOPs the step actually
runs are counted too (`hfu`, hardware FLOPs utilisation).

Bound. A policy's wall-time saving should follow its FLOP saving where the step is compute
bound. Each row says what bounds it, from what was measured: `launch` where the host took at
least 90 % of the device time to issue the steps (the device waited on the launches), `compute`
where the step reaches at least half the chip's measured matmul rate, else `memory`.
"""
from __future__ import annotations

import resource
import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Optional

import torch
from transformers import get_scheduler

from ..config.run import FreezeConfig, TrainConfig
from ..fl.local import BatchStream, amp_dtype, make_optimizer, train_steps
from ..freeze.policies import plan_freezing
from ..heads import scoring_head
from ..model import TokenizerInfo, build_from_preset, preset_objective
from ..objective import CausalLM, MaskedLM
from ..flops.count import count_step_flops
from ..profiling.peak import device_peak

# bert-base-cased's vocabulary (the distilbert-base shape the study pretrains), 28,996 words:
# not a multiple of 64, which is what the padding lever changes
VOCAB = 28996
CAUSAL_VOCAB = 49152  # SmolLM's


@dataclass(frozen=True)
class Setup:
    """One step to time: the model, its batch and the levers."""

    preset: str = "distilbert-base"
    batch: int = 32
    seq_len: int = 512
    vocab: int = VOCAB
    precision: str = "bf16"  # autocast; the masters stay float32
    sparse_head: bool = True
    compile: bool = False
    pad_vocab: int = 64  # the embedding and head padded to a multiple of this (0: as is)
    attention: str = "sdpa"  # the model's attention implementation ("eager": the math path)
    fused_adamw: bool = True  # on CUDA; the CPU uses foreach
    freeze: str = "none"  # an FFDAPT policy: none, paper, bottom (client 0's plan)


@dataclass(frozen=True)
class Timing:
    steps: int = 20
    warmup: int = 5
    min_repeats: int = 3
    max_repeats: int = 8
    max_spread: float = 0.05


def spread(samples: list[float]) -> float:
    """(max − min) / median: how far apart the repeats are."""
    return (max(samples) - min(samples)) / statistics.median(samples)


def _tokenizer(vocab: int) -> TokenizerInfo:
    return TokenizerInfo(vocab_size=vocab, mask_id=103, pad_id=0,
                         special_ids=(0, 100, 101, 102, 103))


def build(setup: Setup, device: torch.device):
    """(model on `device`, blocks on the host, objective, tokenizer info)."""
    torch.manual_seed(0)
    model = build_from_preset(setup.preset, setup.vocab, setup.seq_len)
    if setup.attention != getattr(model.config, "_attn_implementation", setup.attention):
        model.set_attn_implementation(setup.attention)
    if setup.pad_vocab:
        model.resize_token_embeddings(setup.vocab, pad_to_multiple_of=setup.pad_vocab)
    model.to(device)
    tok = _tokenizer(setup.vocab)
    blocks = torch.randint(200, setup.vocab, (max(4 * setup.batch, 64), setup.seq_len),
                           generator=torch.Generator().manual_seed(0))
    causal = preset_objective(setup.preset) == "clm"
    return model, blocks, (CausalLM() if causal else MaskedLM(tok, 0.15)), tok


def _freeze(model, setup: Setup) -> frozenset[str]:
    if setup.freeze == "none":
        return frozenset()
    cfg = FreezeConfig(policy=setup.freeze)
    # client 0 of four with 1/8 of the data: the paper's allocation freezes it the most
    plans = plan_freezing(model, setup.freeze, cfg, [1, 2, 2, 3])
    return frozenset(plans[0].names)


def measure(setup: Setup, device: torch.device, timing: Timing = Timing()) -> dict:
    """One row: tokens/s (median and every repeat), its spread, the step's FLOPs (model and
    executed), MFU and HFU against the datasheet and the measured peak, memory, the bound."""
    model, blocks, objective, tok = build(setup, device)
    frozen = _freeze(model, setup)
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    cfg = TrainConfig(batch_size=setup.batch, lr=5e-5, precision=setup.precision,
                      compile=setup.compile, sparse_head=setup.sparse_head, warmup_steps=0,
                      schedule="constant")
    head = scoring_head(model, objective.name, setup.sparse_head, 0.15, setup.seq_len)
    stream = BatchStream(len(blocks), setup.batch, lambda e: e)
    total = timing.warmup + timing.max_repeats * timing.steps
    opt, sched = make_optimizer(model, cfg, total, device)
    if not setup.fused_adamw and device.type == "cuda":
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
        sched = get_scheduler("constant", opt)
    gen = torch.Generator().manual_seed(0)
    at = 0

    def steps(n: int):
        nonlocal at
        st = train_steps(model, blocks, stream.take(at, n), optimizer=opt, scheduler=sched,
                         cfg=cfg, objective=objective, mask_gen=gen, device=device, head=head)
        at += n
        return st

    if timing.warmup:  # not timed: allocator warm-up, autotuning, compilation
        steps(timing.warmup)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    samples = []
    while len(samples) < timing.max_repeats:
        st = steps(timing.steps)  # ends on a device synchronisation
        samples.append(st.tokens / st.wall_s)
        last = samples[-timing.min_repeats:]
        if len(last) >= timing.min_repeats and spread(last) <= timing.max_spread:
            break
    tokens_per_s = statistics.median(samples)
    x, y = objective.batch(blocks[:setup.batch], torch.Generator().manual_seed(1))
    dtype = amp_dtype(cfg, device)
    x, y = x.to(device), y.to(device)
    model_flops = count_step_flops(model, x, y, dtype)  # the fixed formula: the dense head
    run_flops = count_step_flops(model, x, y, dtype, scored=head.scored_rows(tuple(x.shape)))
    per_token = model_flops.total / x.numel(), run_flops.total / x.numel()
    peak = device_peak(device, dtype, None)
    achieved = per_token[1] * tokens_per_s
    step_s = x.numel() / tokens_per_s

    def share(flops_per_s: float, of: Optional[float]) -> Optional[float]:
        return flops_per_s / of if of else None

    row = {
        "setup": asdict(setup), "timing": asdict(timing),
        "attention": getattr(model.config, "_attn_implementation", None),
        "vocab_rows": int(model.get_input_embeddings().weight.shape[0]),
        "head": head.why, "frozen_params": sum(p.numel() for n, p in model.named_parameters()
                                               if n in frozen),
        "tokens_per_s": tokens_per_s, "samples_tokens_per_s": samples,
        "repeats": len(samples), "spread": spread(samples[-timing.min_repeats:]),
        "spread_met": spread(samples[-timing.min_repeats:]) <= timing.max_spread,
        "model_flops_per_token": per_token[0], "run_flops_per_token": per_token[1],
        "precision": peak.precision,
        "datasheet_tflops": (peak.datasheet or 0) / 1e12 or None,
        "measured_peak_tflops": (peak.measured or 0) / 1e12 or None,
        "mfu": share(per_token[0] * tokens_per_s, peak.datasheet),
        "mfu_measured_peak": share(per_token[0] * tokens_per_s, peak.measured),
        "hfu": share(achieved, peak.datasheet),
        "hfu_measured_peak": share(achieved, peak.measured),
        "step_s": step_s,
        "host_issue_share": None if device.type != "cuda" else host_issue_share(setup, device),
        "host_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "gpu_max_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda" else None,
    }
    row["bound"] = _bound(row, device)
    return row  # the model goes with this frame: the caller empties the CUDA cache


def host_issue_share(setup: Setup, device: torch.device, steps: int = 10) -> Optional[float]:
    """The host's time to issue `steps` forward-backward passes without waiting, over the
    device's time to run them (CUDA only): near 1, the device waits on the launches."""
    if device.type != "cuda":
        return None
    model, blocks, objective, _ = build(setup, device)
    x, y = objective.batch(blocks[:setup.batch], torch.Generator().manual_seed(1))
    x, y = x.to(device), y.to(device)
    head = scoring_head(model, objective.name, False)  # dense: no gather, no host sync
    dtype = amp_dtype(TrainConfig(precision=setup.precision), device)

    def once():
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = head.mean_loss(head.target(model), x, y)
        loss.backward()

    for _ in range(3):
        once()
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0 = time.perf_counter()
    start.record()
    for _ in range(steps):
        once()
    end.record()
    host = time.perf_counter() - t0
    torch.cuda.synchronize(device)
    return host / (start.elapsed_time(end) / 1000.0)


def _bound(row: dict, device: torch.device) -> str:
    issue = row.get("host_issue_share")
    if issue is not None and issue >= 0.9:
        return "launch"
    if device.type != "cuda":
        return "host (a CPU: the host does the work)"
    measured = row["hfu_measured_peak"]
    return "compute" if measured is not None and measured >= 0.5 else "memory"


def policy_savings(base: Setup, device: torch.device, timing: Timing = Timing(),
                   policies: tuple[str, ...] = ("paper", "bottom")) -> dict:
    """Each freeze policy's step against the full step: the FLOP saving (the counted step,
    what the runs record) and the wall-time saving (tokens/s), in points, with the gap and
    whether the step is compute-bound (where the two should agree within 5 points)."""
    full = measure(replace(base, freeze="none"), device, timing)
    out = {"none": full}
    for policy in policies:
        row = measure(replace(base, freeze=policy), device, timing)
        flops_saved = 100.0 * (1 - row["run_flops_per_token"] / full["run_flops_per_token"])
        wall_saved = 100.0 * (1 - full["tokens_per_s"] / row["tokens_per_s"])
        row["flops_saved_pct"], row["wall_saved_pct"] = flops_saved, wall_saved
        row["gap_points"] = wall_saved - flops_saved
        row["agrees_within_5_points"] = abs(wall_saved - flops_saved) <= 5.0
        out[policy] = row
    return out


# The GPU check's rows, in order of what they decide: the levers one at a time on the study's
# encoder (distilbert-base, 512 tokens, batch 32), the stretch at batch 64, the Llama-shape
# decoder, then the freeze policies' FLOP against wall-time savings.
ENCODER = Setup()
LADDER: tuple[tuple[str, Setup], ...] = (
    ("dense head, vocab 28,996, eager", replace(ENCODER, sparse_head=False, pad_vocab=0)),
    ("+ sparse head", replace(ENCODER, pad_vocab=0)),
    ("+ vocabulary padded to 64", ENCODER),
    ("+ torch.compile", replace(ENCODER, compile=True)),
    ("batch 64, every lever", replace(ENCODER, batch=64, compile=True)),
    ("llama-small, eager", Setup(preset="llama-small", vocab=CAUSAL_VOCAB)),
    ("llama-small, torch.compile", Setup(preset="llama-small", vocab=CAUSAL_VOCAB,
                                         compile=True)),
)


def gpu_rows(device: torch.device, budget_s: float, timing: Timing = Timing(),
             ladder=LADDER, policy_base: Setup = ENCODER, progress=print) -> dict:
    """The ladder and the policy savings, as many as fit in `budget_s` (a row that would start
    after it is listed as skipped, not run)."""
    deadline = time.perf_counter() + budget_s
    rows, skipped = {}, []
    for name, setup in ladder:
        if time.perf_counter() > deadline:
            skipped.append(name)
            continue
        progress(f"step bench: {name}")
        rows[name] = measure(setup, device, timing)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the row's model is gone: its blocks back to the pool
    policies = None
    if time.perf_counter() <= deadline:
        progress("step bench: freeze policies (none, paper, bottom)")
        policies = policy_savings(policy_base, device, timing)
    else:
        skipped.append("freeze policies")
    best = max((r["mfu"] for r in rows.values() if r["mfu"] is not None), default=None)
    return {"rows": rows, "policies": policies, "skipped": skipped, "best_mfu": best}
