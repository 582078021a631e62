"""Parameters as the federation moves them: copied into and out of a model, counted in bytes,
moved to the CPU, and an optimizer's per-parameter state kept by name."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def load_params(model: nn.Module, params: dict[str, torch.Tensor]) -> None:
    """Copy `params` (all of the model's parameters, or some of them) into the model."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in params:
                p.copy_(params[name])


def snapshot(model: nn.Module, names: Optional[frozenset[str]] = None
             ) -> dict[str, torch.Tensor]:
    """A copy of the model's parameters (only `names`, if given)."""
    return {n: p.detach().clone() for n, p in model.named_parameters()
            if names is None or n in names}


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def to_cpu(obj):
    """A deep copy of a (nested) state with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def save_moments(opt: torch.optim.Optimizer, model: nn.Module) -> dict[str, dict]:
    """The optimizer's per-parameter state (AdamW: step, exp_avg, exp_avg_sq) by parameter
    name, on the CPU; parameters without state (no step taken) are left out."""
    return {n: to_cpu(opt.state[p]) for n, p in model.named_parameters() if p in opt.state}


def load_moments(opt: torch.optim.Optimizer, model: nn.Module,
                 moments: dict[str, dict]) -> None:
    """Give each parameter of a fresh optimizer the state saved under its name, if any.

    Through `load_state_dict`, which numbers the parameters in the groups' order and puts
    each state tensor where the optimizer wants it (device, dtype; `step` on the CPU unless
    fused); the groups' hyper-parameters stay the fresh ones."""
    position = {id(p): i for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
    sd = opt.state_dict()
    # copies: the optimizer steps its state in place, and the saved one must stay as it was
    # (a round stopped half-way is checkpointed with it)
    sd["state"] = {position[id(p)]: to_cpu(moments[n]) for n, p in model.named_parameters()
                   if id(p) in position and n in moments}
    opt.load_state_dict(sd)
