"""Model FLOPs utilisation of the harness's local loop on one GPU, for a preset and batch size.

Counted FLOPs per token (the meta-device count the records use) times the loop's tokens/s, over
the datasheet dense peak and over the chip's measured matmul peak. The plain hand-written loop
is timed at the same size, so that a low MFU can be told apart: the harness's overhead (ratio
below 1) or a step too small to fill the chip (both loops low alike).
"""
from __future__ import annotations

import torch

from ..config.run import TrainConfig
from ..objective import MaskedLM
from ..model import TokenizerInfo, build_from_preset
from ..flops.count import count_step_flops
from ..profiling.peak import device_peak
from .throughput import run_harness, run_plain

# bert-base-cased's vocabulary: the distilbert-base shape the study pretrains
VOCAB = 28996
TOKENIZER = TokenizerInfo(vocab_size=VOCAB, mask_id=103, pad_id=0,
                          special_ids=(0, 100, 101, 102, 103))


def harness_mfu(device: torch.device, preset: str = "distilbert-base", batch: int = 8,
                seq_len: int = 512, compiled: bool = False, steps: int = 60,
                plain: bool = False) -> dict:
    """One row: tokens/s, achieved TFLOP/s and MFU of the harness loop (bf16), after a warm-up
    that also compiles; with `plain`, the hand-written loop's tokens/s at the same size."""
    blocks = torch.randint(200, VOCAB, (max(512, 4 * batch), seq_len),
                           generator=torch.Generator().manual_seed(0))
    x, y = MaskedLM(TOKENIZER, 0.15).batch(blocks[:batch], torch.Generator().manual_seed(1))
    cfg = TrainConfig(batch_size=batch, lr=5e-5, precision="bf16", compile=compiled)
    model = build_from_preset(preset, VOCAB, seq_len).to(device)
    run_harness(model, blocks, cfg, TOKENIZER, device, 10)  # warm-up (and compilation)
    tokens, wall = run_harness(model, blocks, cfg, TOKENIZER, device, steps)
    flops = count_step_flops(model, x.to(device), y.to(device), torch.bfloat16)
    peak = device_peak(device, torch.bfloat16, None)
    achieved = flops.total / flops.batch / seq_len * tokens / wall
    row = {"preset": preset, "batch": batch, "seq_len": seq_len, "compiled": compiled,
           "tokens_per_s": tokens / wall, "achieved_tflops": achieved / 1e12,
           "datasheet_tflops": (peak.datasheet or 0) / 1e12 or None,
           "measured_peak_tflops": (peak.measured or 0) / 1e12 or None,
           "mfu_datasheet": achieved / peak.datasheet if peak.datasheet else None,
           "mfu_measured_peak": achieved / peak.measured if peak.measured else None}
    if plain:
        run_plain(model, blocks, cfg, TOKENIZER, device, 10)
        p_tokens, p_wall = run_plain(model, blocks, cfg, TOKENIZER, device, steps)
        row["plain_tokens_per_s"] = p_tokens / p_wall
        row["harness_vs_plain"] = row["tokens_per_s"] / row["plain_tokens_per_s"]
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row
