"""Local training: one plain PyTorch loop shared by every client and the central trainer.

No HF Trainer per client: building one costs more than a small client's round. The loop is
AdamW + a linear schedule, gradient clipping, bf16 autocast on CUDA; batch order and masks come
from seeded generators so that a step is the same wherever and whenever it runs.
"""
from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Protocol

import numpy as np
import torch
from torch import nn
from transformers import get_scheduler

from ..config.run import TrainConfig
from .. import interrupt
from ..heads import ScoringHead
from ..objective import Objective
from ..profiling.timing import PhaseTimer


@dataclass
class LocalStats:
    """What one stretch of local training did."""

    steps: int = 0
    samples: int = 0
    tokens: int = 0
    loss: float = float("nan")
    wall_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)

    def count(self, batch: torch.Tensor) -> None:
        """One step over `batch` (sequences × tokens) done."""
        self.steps += 1
        self.samples += batch.shape[0]
        self.tokens += batch.numel()


class BatchStream:
    """An endless sequence of epochs over `n_blocks`, epoch e shuffled by `epoch_seed(e)`.

    `take(start, n)` gives the block indices of global steps start … start+n−1, so a client's
    round r (starting at its epoch r·local_epochs) and a resumed run find their place without
    replaying anything. The last batch of an epoch may be short (no block is dropped).
    """

    def __init__(self, n_blocks: int, batch_size: int, epoch_seed: Callable[[int], int]):
        self.n_blocks, self.batch_size, self.epoch_seed = n_blocks, batch_size, epoch_seed
        self.steps_per_epoch = math.ceil(n_blocks / batch_size)

    def take(self, start: int, n: int) -> Iterator[np.ndarray]:
        epoch, offset = divmod(start, self.steps_per_epoch)
        while n > 0:
            order = np.random.default_rng(self.epoch_seed(epoch)).permutation(self.n_blocks)
            for i in range(offset, self.steps_per_epoch):
                if n == 0:
                    return
                yield order[i * self.batch_size:(i + 1) * self.batch_size]
                n -= 1
            epoch, offset = epoch + 1, 0

    def take_sequences(self, start: int, n: int) -> Iterator[np.ndarray]:
        """The batches holding sequences start … start+n−1 of the stream: the usual batches,
        the first and last cut where the stretch begins and ends. A budget in sequences (the
        central baseline's, matched to fdapt's tokens) thus resumes mid-batch exactly."""
        step, skip = self._locate(start)
        for idx in self.take(step, self.steps_per_epoch * (n // self.n_blocks + 2)):
            idx = idx[skip:][:n]
            skip = 0
            if len(idx) == 0:
                return
            yield idx
            n -= len(idx)

    def count_batches(self, start: int, n: int) -> int:
        """How many batches `take_sequences(start, n)` yields."""
        return sum(1 for _ in self.take_sequences(start, n))

    def _locate(self, sequence: int) -> tuple[int, int]:
        """(step, rows into it) of the stream's sequence number `sequence`."""
        epoch, within = divmod(sequence, self.n_blocks)
        step, rows = divmod(within, self.batch_size)
        return epoch * self.steps_per_epoch + step, rows


# the config's schedule names → transformers' (`get_scheduler`): each with its linear warm-up
# of `train.warmup_steps` (from 0), then linear decay to 0 at the last step, constant, or a
# half cosine to 0
SCHEDULES = {"linear": "linear", "constant": "constant_with_warmup", "cosine": "cosine"}


def make_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    """The learning-rate schedule of `cfg` over `total_steps`, from transformers."""
    return get_scheduler(SCHEDULES[cfg.schedule], optimizer, num_warmup_steps=cfg.warmup_steps,
                         num_training_steps=max(1, total_steps))


def make_optimizer(model: nn.Module, cfg: TrainConfig, total_steps: int, device: torch.device):
    """AdamW over the trainable parameters and the config's schedule (`make_scheduler`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=fused, foreach=None if fused else True)
    return opt, make_scheduler(opt, cfg, total_steps)


_FACTORS: dict = {}  # (schedule, warm-up, total) → the schedule's multiplier function


def lr_factor(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """The schedule's multiplier of the learning rate at `step` (for an engine that sets the
    rate itself, ZeRO's, once a step): the same function `make_scheduler` steps through,
    built once per schedule."""
    key = (cfg.schedule, cfg.warmup_steps, total_steps)
    if key not in _FACTORS:
        probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        _FACTORS[key] = make_scheduler(probe, cfg, total_steps).lr_lambdas[0]
    return _FACTORS[key](step)


_COMPILED: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()


def forward_module(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """The module a training step calls: the model, or with `train.compile` its compiled
    wrapper (made once per model and kept: it shares the model's parameters, and recompiles
    by itself when the frozen set changes)."""
    if not cfg.compile:
        return model
    if model not in _COMPILED:
        _COMPILED[model] = torch.compile(model)
    return _COMPILED[model]


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`; on CUDA through pinned memory, so the copy is truly
    asynchronous and the step never waits on the host."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def amp_dtype(cfg: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"
                                   and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return None


class StepEngine(Protocol):
    """How a step turns a batch into an update; the loop around it (`run_steps`) is the same
    for every engine: the plain AdamW step (`PlainStep`, data-parallel over a group or not)
    and a DeepSpeed ZeRO engine's (`dist.zero.ZeroStep`)."""

    def begin(self) -> None:
        """Before the first step (training mode, which parameters train)."""

    def backward(self, inputs: torch.Tensor, labels: torch.Tensor, autocast,
                 timer: PhaseTimer) -> torch.Tensor:
        """Take the gradient of the batch's mean loss; return this process's share of it."""

    def update(self, step: int, timer: PhaseTimer) -> None:
        """Apply the gradient: the `step`-th update of this stretch."""

    def total_loss(self, loss_sum: torch.Tensor) -> torch.Tensor:
        """The summed step losses over the processes that share each step."""


def run_steps(engine: StepEngine, blocks: torch.Tensor, batches: Iterator[np.ndarray], *,
              cfg: TrainConfig, objective: Objective, mask_gen: torch.Generator,
              device: torch.device, on_step: Optional[Callable[[int], None]] = None
              ) -> LocalStats:
    """The local-training loop: run the given batches; return steps, tokens, the mean
    training loss and phase times. The objective makes inputs and labels (masks drawn from
    `mask_gen`, so every rank of a group draws the same), the engine takes the step."""
    dtype = amp_dtype(cfg, device)

    def autocast():
        return torch.autocast(device.type, dtype=dtype or torch.float32,
                              enabled=dtype is not None)

    engine.begin()
    stats = LocalStats()
    loss_sum = torch.zeros((), device=device)  # summed on device: no sync per step
    timer = PhaseTimer(device)
    t0 = time.perf_counter()
    timer.start()
    for step, idx in enumerate(batches):
        x = blocks[torch.from_numpy(idx)]
        inputs, labels = objective.batch(x, mask_gen)
        inputs, labels = to_device(inputs, device), to_device(labels, device)
        timer.mark("data")
        loss_sum += engine.backward(inputs, labels, autocast, timer).detach()
        engine.update(step, timer)
        timer.mark("optimizer")
        stats.count(x)
        if on_step is not None:
            on_step(stats.steps)
        interrupt.check()  # a requested stop takes effect here, between whole steps
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    stats.wall_s = time.perf_counter() - t0
    stats.loss = (engine.total_loss(loss_sum) / max(1, stats.steps)).item()
    stats.phases = timer.result()
    return stats


class PlainStep:
    """AdamW on the model's trainable parameters, gradient clipping, the schedule.

    FedProx: with `prox_mu` > 0 each step minimises the loss + (prox_mu/2)·||w − w_ref||²
    over the trainable parameters, `prox_ref` holding w_ref by parameter name (the round's
    global model). Its gradient prox_mu·(w − w_ref) is added to the (group-summed) gradient
    before clipping; the loss reported stays the objective's. prox_mu = 0: no extra work.

    `dp` (a `dist.data_parallel.DataParallel`) spreads each batch over a group of ranks; the
    step is then the whole batch's step, gradients summed over the group."""

    def __init__(self, model: nn.Module, optimizer, scheduler, cfg: TrainConfig, dp=None,
                 prox_mu: float = 0.0, prox_ref: Optional[dict[str, torch.Tensor]] = None,
                 head: Optional[ScoringHead] = None):
        self.model, self.optimizer, self.scheduler, self.cfg = model, optimizer, scheduler, cfg
        self.dp, self.prox_mu, self.prox_ref = dp, prox_mu, prox_ref
        self.head = head or ScoringHead(None, "dense")

    def begin(self) -> None:
        self.model.train()
        self.forward = forward_module(self.head.target(self.model), self.cfg)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        if self.prox_mu > 0:
            self.prox = [(p, self.prox_ref[n]) for n, p in self.model.named_parameters()
                         if p.requires_grad]

    def backward(self, inputs, labels, autocast, timer):
        if self.dp is None:
            with autocast():
                loss = self.head.mean_loss(self.forward, inputs, labels)
            timer.mark("forward")
            loss.backward()
            timer.mark("backward")
            return loss
        # this rank's rows, then the group's summed gradient
        loss = self.dp.loss_and_backward(self.forward, inputs, labels, autocast, self.head)
        timer.mark("backward")
        self.dp.all_reduce_grads(self.trainable)
        timer.mark("allreduce")
        return loss

    def update(self, step, timer):
        if self.prox_mu > 0:  # FedProx: the gradient of (mu/2)·||w − w_ref||²
            for p, ref in self.prox:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                p.grad.add_(p.detach() - ref, alpha=self.prox_mu)
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def total_loss(self, loss_sum):
        # each rank of a group holds its rows' share of every step's loss
        return loss_sum if self.dp is None else self.dp.all_reduce_scalar(loss_sum)


def train_steps(model: nn.Module, blocks: torch.Tensor, batches: Iterator[np.ndarray], *,
                optimizer, scheduler, cfg: TrainConfig, objective: Objective,
                mask_gen: torch.Generator, device: torch.device,
                on_step: Optional[Callable[[int], None]] = None,
                dp=None, prox_mu: float = 0.0,
                prox_ref: Optional[dict[str, torch.Tensor]] = None,
                head: Optional[ScoringHead] = None) -> LocalStats:
    """`run_steps` with the plain step (see `PlainStep` for `dp`, `prox_mu`, `prox_ref`,
    `head`)."""
    return run_steps(PlainStep(model, optimizer, scheduler, cfg, dp, prox_mu, prox_ref, head),
                     blocks, batches, cfg=cfg, objective=objective, mask_gen=mask_gen,
                     device=device, on_step=on_step)
