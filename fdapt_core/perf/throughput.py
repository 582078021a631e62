"""Local-training tokens/s: the harness loop vs a plain hand-written loop vs the HF Trainer.

All three train the same model from the same initial weights on the same blocks for the same
number of steps (AdamW, linear decay, clipping; 15 % MLM masking for an encoder, the next-token
loss for a decoder), one after another in one
process, interleaved and in rotating order over repeats so that drift of a shared, noisy machine
falls on all three alike. Medians are reported, with every sample.
"""
from __future__ import annotations

import copy
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

import datasets
import torch
from scipy import stats as scipy_stats
from torch import nn
from transformers import (DataCollatorForLanguageModeling, PrinterCallback, Trainer,
                          TrainingArguments, get_scheduler)
from transformers.utils import logging as hf_logging

from ..config.run import TrainConfig
from ..fl.local import BatchStream, amp_dtype, make_optimizer, train_steps
from ..model import TokenizerInfo
from ..heads import scoring_head
from ..objective import CausalLM, MaskedLM


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_harness(model: nn.Module, blocks: torch.Tensor, cfg: TrainConfig, tok: TokenizerInfo,
                device: torch.device, steps: int, objective=None,
                sparse: bool | None = None) -> tuple[int, float]:
    """The harness loop; `sparse` (default `cfg.sparse_head`): the MLM head only at the
    masked positions."""
    objective = objective or MaskedLM(tok, cfg.mlm_probability)
    opt, sched = make_optimizer(model, cfg, steps, device)
    stream = BatchStream(len(blocks), cfg.batch_size, lambda e: e)
    head = scoring_head(model, objective.name, cfg.sparse_head if sparse is None else sparse)
    st = train_steps(model, blocks, stream.take(0, steps), optimizer=opt, scheduler=sched,
                     cfg=cfg, objective=objective, mask_gen=torch.Generator().manual_seed(0),
                     device=device, head=head)
    return st.tokens, st.wall_s


def run_plain(model: nn.Module, blocks: torch.Tensor, cfg: TrainConfig, tok: TokenizerInfo,
              device: torch.device, steps: int, causal: bool = False) -> tuple[int, float]:
    """What a user would write by hand: the reference the harness must keep up with (for a
    decoder: the inputs as their own labels, HF's causal loss shifting them). An encoder's
    loss takes the same head as the harness (`cfg.sparse_head`: the head at the masked rows,
    as a user who knows the trick writes it)."""
    head = scoring_head(model, "clm" if causal else "mlm", cfg.sparse_head)
    forward = head.target(model)
    dtype = amp_dtype(cfg, device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=device.type == "cuda")
    sched = get_scheduler("linear", opt, num_warmup_steps=0, num_training_steps=steps)
    gen = torch.Generator().manual_seed(0)
    special = torch.tensor(tok.special_ids)
    model.train()
    tokens = 0
    _sync(device)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(blocks), (cfg.batch_size,), generator=gen)
        x = blocks[idx]
        if causal:
            with torch.autocast(device.type, dtype=dtype or torch.float32,
                                enabled=dtype is not None):
                loss = model(input_ids=x.to(device), labels=x.to(device)).loss
            _step(model, loss, opt, sched, cfg)
            tokens += x.numel()
            continue
        chosen = (torch.rand(x.shape, generator=gen) < cfg.mlm_probability) \
            & ~torch.isin(x, special)
        labels = torch.where(chosen, x, -100)
        roll = torch.rand(x.shape, generator=gen)
        inputs = torch.where(chosen & (roll < 0.8), tok.mask_id, x)
        inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9),
                             torch.randint(tok.vocab_size, x.shape, generator=gen), inputs)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if head.sparse:
                loss = head.mean_loss(forward, inputs.to(device), labels.to(device))
            else:
                loss = model(input_ids=inputs.to(device), labels=labels.to(device)).loss
        _step(model, loss, opt, sched, cfg)
        tokens += x.numel()
    _sync(device)
    return tokens, time.perf_counter() - t0


def _step(model, loss, opt, sched, cfg: TrainConfig) -> None:
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)


def run_trainer(model: nn.Module, blocks: torch.Tensor, cfg: TrainConfig, tokenizer,
                device: torch.device, steps: int, causal: bool = False) -> tuple[int, float]:
    """The HF Trainer as a user would set it up for one client's local training."""
    hf_logging.set_verbosity_error()
    ds = datasets.Dataset.from_dict({"input_ids": blocks.tolist()})
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=cfg.batch_size, max_steps=steps,
            learning_rate=cfg.lr, weight_decay=cfg.weight_decay, lr_scheduler_type="linear",
            warmup_steps=0, max_grad_norm=cfg.max_grad_norm, logging_strategy="no",
            save_strategy="no", report_to="none", disable_tqdm=True, seed=0,
            dataloader_num_workers=0, use_cpu=device.type == "cpu",
            bf16=amp_dtype(cfg, device) is not None,
            optim="adamw_torch_fused" if device.type == "cuda" else "adamw_torch")
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=not causal,
                                                   mlm_probability=cfg.mlm_probability)
        trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=collator)
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics to stdout
        _sync(device)
        t0 = time.perf_counter()
        trainer.train()
        _sync(device)
        wall = time.perf_counter() - t0
    return steps * cfg.batch_size * blocks.shape[1], wall


def paired_ratio(a: list[float], b: list[float], level: float = 0.90) -> dict:
    """The ratio a/b from paired samples (a_i and b_i measured back to back): the geometric
    mean of the pair ratios and its `level` interval (Student t on the log ratios), so that
    drift of the host between pairs falls out. Fewer than 2 pairs: no interval."""
    logs = [math.log(x / y) for x, y in zip(a, b)]
    mean = statistics.fmean(logs)
    out = {"pairs": len(logs), "ratio": math.exp(mean), "ci90": None, "half_width": None}
    if len(logs) >= 2:
        half = float(scipy_stats.t.ppf(0.5 + level / 2, len(logs) - 1)) \
            * statistics.stdev(logs) / math.sqrt(len(logs))
        lo, hi = math.exp(mean - half), math.exp(mean + half)
        out.update(ci90=[lo, hi], half_width=(hi - lo) / 2)
    return out


@dataclass(frozen=True)
class Grow:
    """Repeats of a pair of loops that grow until the pair's ratio is known to `half_width`
    (90 % interval), or `cap_s` seconds or `max_pairs` pairs are spent."""

    pair: tuple[str, str]
    half_width: float = 0.02
    cap_s: float = 300.0
    max_pairs: int = 40


def _interleaved(loops: dict, fresh, steps: int, repeats: int, warmup_steps: int,
                 grow: Optional[Grow] = None) -> dict[str, list[float]]:
    """Tokens/s samples of each loop: a warm-up each, then `repeats` rounds in rotating order,
    each loop from the same fresh weights; then, with `grow`, short blocks of the pair alone
    (alternating which goes first) until its ratio's interval is narrow enough."""
    for fn in loops.values():  # warm-up: first-call costs (allocator, kernels) land here
        fn(fresh(), warmup_steps)
    samples: dict[str, list[float]] = {k: [] for k in loops}
    names = list(loops)
    for rep in range(repeats):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            tokens, wall = loops[name](fresh(), steps)
            samples[name].append(tokens / wall)
    if grow is None:
        return samples
    a, b = grow.pair
    t0 = time.perf_counter()
    while len(samples[a]) < grow.max_pairs and time.perf_counter() - t0 < grow.cap_s:
        hw = paired_ratio(samples[a], samples[b])["half_width"]
        if hw is not None and hw <= grow.half_width:
            break
        for name in ((a, b) if len(samples[a]) % 2 == 0 else (b, a)):
            tokens, wall = loops[name](fresh(), steps)
            samples[name].append(tokens / wall)
    return samples


def compare_heads(model: nn.Module, blocks: torch.Tensor, cfg: TrainConfig, tok: TokenizerInfo,
                  device: torch.device, steps: int, repeats: int, warmup_steps: int = 2
                  ) -> dict:
    """The harness loop with the MLM head only at the masked positions and at every one,
    side by side (medians, every sample, the speed-up)."""
    init = copy.deepcopy(model).cpu().state_dict()

    def fresh() -> nn.Module:
        model.load_state_dict(init)
        return model

    loops = {"sparse": lambda m, n: run_harness(m, blocks, cfg, tok, device, n, sparse=True),
             "dense": lambda m, n: run_harness(m, blocks, cfg, tok, device, n, sparse=False)}
    samples = _interleaved(loops, fresh, steps, repeats, warmup_steps)
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {"steps": steps, "repeats": repeats, "batch_size": cfg.batch_size,
            "seq_len": int(blocks.shape[1]), "vocab_size": tok.vocab_size,
            "tokens_per_s": med, "samples_tokens_per_s": samples,
            "sparse_vs_dense_speedup": med["sparse"] / med["dense"]}


def compare_loops(model: nn.Module, blocks: torch.Tensor, cfg: TrainConfig, tokenizer,
                  tok: TokenizerInfo, device: torch.device, steps: int, repeats: int,
                  warmup_steps: int = 3, causal: bool = False,
                  grow: Optional[Grow] = None) -> dict:
    """Tokens/s of each loop (median of its samples), every sample, and the two ratios;
    `causal`: a decoder, trained on the next-token loss by all three. harness ÷ plain is
    the paired estimate with its 90 % interval (`grow`: pairs added until it is narrow)."""
    init = copy.deepcopy(model).cpu().state_dict()
    objective = CausalLM() if causal else None
    loops = {
        "harness": lambda m, n: run_harness(m, blocks, cfg, tok, device, n, objective),
        "plain": lambda m, n: run_plain(m, blocks, cfg, tok, device, n, causal),
        "trainer": lambda m, n: run_trainer(m, blocks, cfg, tokenizer, device, n, causal),
    }

    def fresh() -> nn.Module:
        model.load_state_dict(init)
        for p in model.parameters():
            p.requires_grad_(True)
            p.grad = None
        return model

    samples = _interleaved(loops, fresh, steps, repeats, warmup_steps, grow)
    med = {k: statistics.median(v) for k, v in samples.items()}
    paired = paired_ratio(samples["harness"], samples["plain"])
    return {
        "steps": steps, "repeats": repeats, "batch_size": cfg.batch_size,
        "seq_len": int(blocks.shape[1]),
        "tokens_per_s": med, "samples_tokens_per_s": samples,
        "harness_vs_plain_ratio": paired["ratio"],
        "harness_vs_plain_ci90": paired["ci90"], "harness_vs_plain_pairs": paired["pairs"],
        "harness_vs_plain_half_width": paired["half_width"],
        "sparse_head": cfg.sparse_head and not causal,
        "harness_vs_trainer_ratio": med["harness"] / med["trainer"],
    }
