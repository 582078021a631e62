"""Local training through a DeepSpeed ZeRO engine, built once per process and reused.

`deepspeed.initialize` per client leaks memory (DeepSpeed keeps buffers, hooks and process
groups alive), so one engine serves every client and round of the process. Between clients
the method needs a fresh start: ZeRO's fp32 master partitions are set to the global model
and the optimizer's moments are dropped. With bf16 the module holds a bf16 copy for the forward
and backward; the masters are what the optimizer steps and what the client uploads, so they are
set from the global fp32 values and read back through DeepSpeed's public accessors (the bf16
copy would round the global model at every client). A client's frozen
blocks keep `requires_grad = False` (their backward is skipped) and their parameter groups get
learning rate 0 (ZeRO steps every partition it owns; at lr 0 AdamW moves nothing, decay
included), so a frozen block leaves the client exactly as it came.

The optimizer is torch's AdamW (no DeepSpeed op to compile) with one parameter group per
transformer block, one for the embeddings and one for the rest; the schedule is the same
linear one as the plain loop, set on the groups before each step. ZeRO averages gradients over
the group's ranks, so each rank's loss is its rows' share of the batch loss times G.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..config.run import RunConfig
from ..errors import ConfigError
from ..executors import executor_of
from ..fl.local import LocalStats, amp_dtype, lr_factor, run_steps
from ..adapters import exchanged_names
from ..model import embedding_prefix, transformer_blocks
from .collectives import all_reduce_one
from .data_parallel import share, share_loss


def load_deepspeed_config(cfg: RunConfig) -> dict:
    path = Path(cfg.dist.deepspeed_config)
    if not path.is_absolute() and not path.exists():
        path = Path(__file__).resolve().parents[2] / path
    try:
        ds = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"dist.deepspeed_config: cannot read {path} ({exc.strerror})") \
            from None
    except ValueError as exc:
        raise ConfigError(f"dist.deepspeed_config: {path} is not JSON ({exc})") from None
    stage = ds.get("zero_optimization", {}).get("stage")
    if stage not in (1, 2, 3):
        raise ConfigError(f"dist.deepspeed_config: {path}: zero_optimization.stage must be "
                          f"1, 2 or 3, got {stage!r}")
    return ds


def check_supported(cfg: RunConfig, method: str) -> None:
    """What the ZeRO path does not cover, refused up front with the key to change."""
    if not executor_of(cfg).ranks:
        raise ConfigError("dist.engine: deepspeed needs dist.executor=distributed (launch with "
                          "torchrun or bench run --nproc N)")
    if method == "central":
        raise ConfigError("dist.engine: deepspeed runs federated methods; the central "
                          "baseline runs with dist.engine=torch (data-parallel over all ranks)")
    if cfg.train.optimizer_reset != "round":
        raise ConfigError("train.optimizer_reset: persist is not supported with "
                          "dist.engine=deepspeed (the engine's optimizer is reset per client)")
    if cfg.fl.strategy == "fedprox":
        raise ConfigError("fl.strategy: fedprox is not supported with dist.engine=deepspeed "
                          "(its proximal term needs the plain loop); use dist.engine=torch")


def _param_groups(model: nn.Module, exchanged: frozenset[str]
                  ) -> tuple[list[dict], list[frozenset[str]]]:
    """One group per transformer block, the embeddings, the rest, each split into what can
    train and what cannot (a LoRA base); and each group's parameter names."""
    prefixes = [p for p, _ in transformer_blocks(model)] + [embedding_prefix(model)]
    groups: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        prefix = next((x for x in prefixes if name.startswith(x)), "")
        groups.setdefault((prefix, name in exchanged), []).append((name, p))
    return ([{"params": [p for _, p in members]} for members in groups.values()],
            [frozenset(n for n, _ in members) for members in groups.values()])


class ZeroTrainer:
    """A client's local round through one reusable DeepSpeed engine."""

    def __init__(self, server_model: nn.Module, cfg: RunConfig, world):
        # the deepspeed extra: only dist.engine=deepspeed needs it
        import deepspeed

        self.cfg, self.world = cfg, world
        if world.group_size != world.size:
            raise ConfigError(f"dist.ranks_per_client: dist.engine=deepspeed shards one client "
                              f"over the whole world; set it to {world.size}")
        # the engine trains its own copy (ZeRO-3 partitions it); the harness's model stays the
        # server's whole global model, for aggregation, evaluation and checkpoints
        model = copy.deepcopy(server_model)
        ds = load_deepspeed_config(cfg)
        G = world.group_size
        ds.setdefault("train_micro_batch_size_per_gpu", max(1, math.ceil(cfg.train.batch_size
                                                                         / G)))
        ds.setdefault("gradient_accumulation_steps", 1)
        ds["train_batch_size"] = ds["train_micro_batch_size_per_gpu"] * G
        ds["gradient_clipping"] = cfg.train.max_grad_norm
        ds.setdefault("steps_per_print", 10**9)
        ds.setdefault("wall_clock_breakdown", False)
        if amp_dtype(cfg.train, world.device) == torch.bfloat16:
            ds.setdefault("bf16", {"enabled": True})
        # what the federation exchanges (a LoRA model: its adapters); the rest never changes
        self.exchanged = exchanged_names(model)
        self.fixed = frozenset(n for n, _ in model.named_parameters()) - self.exchanged
        for p in model.parameters():
            p.requires_grad_(True)  # ZeRO partitions what trains at initialisation
        groups, self.group_names = _param_groups(model, self.exchanged)
        # ZeRO steps this optimizer on its fp32 partitions; kept to drop its moments per client
        self.base_optimizer = torch.optim.AdamW(groups, lr=cfg.train.lr,
                                                weight_decay=cfg.train.weight_decay)
        self.stage = ds["zero_optimization"]["stage"]
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=self.base_optimizer, config=ds)
        self.model = self.engine.module

    def reset(self, global_params: dict[str, torch.Tensor]) -> None:
        """The global weights exactly in ZeRO's fp32 masters (and, cast, in the module's
        copy that the forward reads); no optimizer moments."""
        # the deepspeed extra: only dist.engine=deepspeed needs it
        import deepspeed

        params = [(n, p) for n, p in self.model.named_parameters() if n in global_params]
        self._all_trainable()
        with deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=0,
                                               enabled=self.stage == 3):
            with torch.no_grad():
                for name, p in params:
                    p.copy_(global_params[name])
        for name, p in params:
            self._set_master(p, global_params[name])
        # AdamW builds its moments and step count afresh at its next step (the step count is
        # out of reach of DeepSpeed's optimizer-state accessors)
        self.base_optimizer.state.clear()

    def _all_trainable(self) -> None:
        # ZeRO-3's accessors skip a parameter that does not require grad (set: nothing; get: None)
        for p in self.model.parameters():
            p.requires_grad_(True)

    def _set_master(self, p: nn.Parameter, value: torch.Tensor) -> None:
        # the deepspeed extra: only dist.engine=deepspeed needs it
        from deepspeed.utils import safe_set_full_fp32_param, safe_set_local_fp32_param

        value = value.detach().to(device=p.device, dtype=torch.float32)
        if self.stage != 3:
            safe_set_full_fp32_param(p, value)  # each rank takes the fragment it owns
            return
        # ZeRO-3's full setter cuts rank r's slice without the padding of the last partition
        # (it fails when the ranks do not divide the size); cut it here with the padding. ZeRO
        # partitions over the whole world (one client group, checked at initialisation).
        n, world = p.ds_tensor.numel(), self.world
        flat = torch.zeros(n * world.size, dtype=torch.float32, device=p.device)
        flat[:value.numel()] = value.flatten()
        safe_set_local_fp32_param(p, flat[n * world.rank:n * (world.rank + 1)])

    def copy_to(self, server_model: nn.Module) -> None:
        """The trained client weights, ZeRO's fp32 masters, into the server's model (every rank
        of the group joins: the masters are gathered from their partitions); only what can
        train: a LoRA base stays the server's own, bit for bit."""
        # the deepspeed extra: only dist.engine=deepspeed needs it
        from deepspeed.utils import safe_get_full_fp32_param

        params = dict(self.model.named_parameters())
        self._all_trainable()
        with torch.no_grad():
            for name, p in server_model.named_parameters():
                if name not in self.exchanged:
                    continue
                master = safe_get_full_fp32_param(params[name])
                if master is None:  # ZeRO keeps no master for it: never upload the bf16 copy
                    raise RuntimeError(f"ZeroTrainer.copy_to: ZeRO holds no fp32 master for "
                                       f"{name}")
                p.copy_(master.view_as(p))

    def train(self, frozen: frozenset[str], blocks: torch.Tensor, batches: Iterator[np.ndarray],
              n_steps: int, objective, mask_gen: torch.Generator, on_step=None) -> LocalStats:
        """One client's stretch of steps through the shared loop, with ZeRO's step."""
        try:
            return run_steps(ZeroStep(self, frozen | self.fixed, n_steps), blocks, batches, cfg=self.cfg.train,
                             objective=objective, mask_gen=mask_gen, device=self.world.device,
                             on_step=on_step)
        finally:
            self._all_trainable()


class ZeroStep:
    """The step through a DeepSpeed engine: this rank's rows of the batch, ZeRO's reduced
    gradient and clipping, the linear schedule set on the parameter groups (0 on a frozen
    group)."""

    def __init__(self, trainer: ZeroTrainer, frozen: frozenset[str], n_steps: int):
        self.trainer, self.frozen, self.n_steps = trainer, frozen, n_steps
        self.frozen_groups = [names <= frozen for names in trainer.group_names]

    def begin(self) -> None:
        for name, p in self.trainer.model.named_parameters():
            p.requires_grad_(name not in self.frozen)
        self.trainer.engine.train()

    def backward(self, inputs, labels, autocast, timer):
        world, engine = self.trainer.world, self.trainer.engine
        G = world.group_size
        n_total = max(1, int((labels != -100).sum()))
        rows = share(len(inputs), world.group_rank, G)
        # a short last batch may leave this rank no row: it still joins the gradient
        # reduction, with one row whose loss counts zero
        weight = 1.0 if rows.stop > rows.start else 0.0
        if not weight:
            rows = slice(0, 1)
        with autocast():
            logits = engine(input_ids=inputs[rows]).logits
        # ZeRO averages the ranks' gradients: × G makes it their sum, the batch gradient
        loss = share_loss(logits, labels[rows], n_total) * weight
        engine.backward(loss * G)
        timer.mark("backward")
        return loss

    def update(self, step, timer):
        cfg = self.trainer.cfg.train
        factor = lr_factor(step, cfg, self.n_steps)
        for group, is_frozen in zip(self.trainer.optimizer.param_groups, self.frozen_groups):
            group["lr"] = 0.0 if is_frozen else cfg.lr * factor
        self.trainer.engine.step()

    def total_loss(self, loss_sum):
        world = self.trainer.world
        if world.group_size == 1:
            return loss_sum
        return all_reduce_one(loss_sum, world.device, world.group)
