"""Model FLOPs utilisation (MFU): FLOPs trained / (time × devices × peak FLOP/s per device).

Two peaks, reported side by side and labelled:

* the **datasheet** dense peak of the device in the precision trained in (`profile.peak_tflops`
  when set, else the table below, matched on the CUDA device name): the figure papers quote;
* the **measured** peak: the best of a few large matrix products in that precision, timed
  once per process: what the chip really reaches, a little under the datasheet.

Devices matter: a client trained data-parallel over G ranks (the central baseline over all W)
used G devices for its wall time, so its device-seconds are wall × G.
"""
from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch

# Dense (no structured sparsity) tensor-core peaks per device, TFLOP/s, from the vendors'
# datasheets. "fp32" is plain IEEE fp32 (torch's default "highest" matmul precision); "tf32"
# is fp32 matmuls on tensor cores (torch.set_float32_matmul_precision("high")).
# The first row whose words all appear in the device name wins, so specific rows come first.
DATASHEET_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("H100 PCIe", {"bf16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    ("H100 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    ("H100", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),  # SXM (and GH200)
    ("A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.1, "tf32": 183.0, "fp32": 91.6}),
    ("L4", {"bf16": 121.0, "tf32": 60.0, "fp32": 30.3}),
)


def precision_of(dtype: Optional[torch.dtype], device: torch.device) -> str:
    """The precision a step's matrix products run in: bf16 under autocast, else fp32, or tf32
    where torch lets fp32 matmuls use tensor cores on CUDA."""
    if dtype == torch.bfloat16:
        return "bf16"
    if device.type == "cuda" and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "fp32"


def datasheet_tflops(device_name: str, precision: str) -> Optional[float]:
    """The table's dense peak for this device name and precision; None if not listed."""
    for words, peaks in DATASHEET_TFLOPS:
        if all(w in device_name for w in words.split()):
            return peaks.get(precision)
    return None


@functools.lru_cache(maxsize=None)
def measured_peak_flops(device_str: str, precision: str, n: int = 8192,
                        repeats: int = 10) -> float:
    """FLOP/s of the best of `repeats` n×n matrix products in `precision` on a CUDA device."""
    device = torch.device(device_str)
    if device.type != "cuda":
        raise ValueError("the peak is measured on CUDA devices only")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


@dataclass(frozen=True)
class Peak:
    """A device's peak FLOP/s in the precision trained in; None where unknown."""

    precision: str
    datasheet: Optional[float]
    datasheet_source: Optional[str]  # "profile.peak_tflops" or the device's name
    measured: Optional[float]

    def describe(self) -> dict:
        return asdict(self)


def device_peak(device: torch.device, dtype: Optional[torch.dtype],
                configured_tflops: Optional[float]) -> Peak:
    """The datasheet (or configured) and measured peaks of `device` for steps in `dtype`."""
    precision = precision_of(dtype, device)
    datasheet, source = None, None
    if configured_tflops is not None:
        datasheet, source = configured_tflops * 1e12, "profile.peak_tflops"
    elif device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        tflops = datasheet_tflops(name, precision)
        if tflops is not None:
            datasheet, source = tflops * 1e12, f"{name} datasheet, {precision} dense"
    measured = measured_peak_flops(str(device), precision) if device.type == "cuda" else None
    return Peak(precision, datasheet, source, measured)


def mfu(flops: Optional[float], device_seconds: float, peak: Optional[float]) -> Optional[float]:
    """FLOPs / (device-seconds × peak per device); None when any part is unknown."""
    if not flops or not peak or device_seconds <= 0:
        return None
    return flops / (device_seconds * peak)


def utilisation(train_flops: Optional[float], local_train_s: float, devices: int,
                peak: Peak) -> dict:
    """The record's MFU block: clients' wall time × the devices each trained on, and MFU
    against the datasheet (or configured) peak and against the measured one."""
    device_s = local_train_s * devices
    return {"devices_per_client": devices, "device_train_s": device_s,
            "peak_flops": peak.datasheet, "peak": peak.describe(),
            "mfu": mfu(train_flops, device_s, peak.datasheet),
            "mfu_measured_peak": mfu(train_flops, device_s, peak.measured)}
