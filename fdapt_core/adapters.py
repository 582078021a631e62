"""LoRA clients through peft: adapters inside an unchanged base model.

`attach` wraps the model with `peft.get_peft_model` and hands back the wrapped model itself
(peft injects its LoRA layers in place, so the model keeps its class and structure: blocks,
embeddings and freeze plans are found as before, only the adapted projections gain a
`base_layer` and `lora_A` / `lora_B`). The `PeftModel` is kept beside it to save the adapters
with `save_pretrained` and to merge them for a plain model at the end.

What trains is what the federation exchanges: under LoRA the adapter tensors, else every
parameter (`exchanged_names`). The base keeps `requires_grad = False` for the whole run, so it
never changes, never travels and is never averaged; its frozen weights still back-propagate
activation gradients to the adapters below them, which the FLOP count sees.

FedAvg averages A and B separately, as FederatedScope-LLM, OpenFedLLM and FlowerTune do: the
mean of the clients' B_i·A_i is not (mean B)·(mean A), so the averaged adapter is not the mean
of the clients' updates. See the README.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Optional

from torch import nn
from transformers.pytorch_utils import Conv1D

from .config.run import PeftConfig
from .errors import ConfigError
from .records import write_folder_atomic

# peft's defaults per model type, plus the families it has none for
EXTRA_TARGETS = {"distilbert": ["q_lin", "v_lin"]}


def target_modules(cfg: PeftConfig, model: nn.Module) -> list[str]:
    """The module names that get adapters: `peft.target_modules`, or peft's default for the
    model's family (query and value projections)."""
    if cfg.target_modules:
        return list(cfg.target_modules)
    # peft on first use: only LoRA runs need it, and importing it takes ~2.5 s
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAP

    kind = getattr(model.config, "model_type", None)
    found = MAP.get(kind) or EXTRA_TARGETS.get(kind)
    if not found:
        raise ConfigError(f"peft.target_modules: peft has no default for model type {kind!r}; "
                          "name the modules to adapt (e.g. [q_proj, v_proj])")
    return list(found)


def lora_config(cfg: PeftConfig, model: nn.Module):
    # peft on first use: only LoRA runs need it, and importing it takes ~2.5 s
    from peft import LoraConfig

    targets = target_modules(cfg, model)
    # GPT-2's projections are Conv1D, weights stored (in, out): peft must know
    transposed = any(isinstance(m, Conv1D) for n, m in model.named_modules()
                     if n.rsplit(".", 1)[-1] in targets)
    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=targets, bias="none", fan_in_fan_out=transposed)


def attach(cfg: PeftConfig, model: nn.Module) -> tuple[nn.Module, Optional[nn.Module]]:
    """(the model to train, its PeftModel or None): with `peft.method: lora` the model with
    LoRA adapters injected (seeded by the caller's RNG state), else the model as it is."""
    if cfg.method == "none":
        return model, None
    try:
        # peft on first use: only LoRA runs need it, and importing it takes ~2.5 s
        from peft import get_peft_model
    except ImportError:
        raise ConfigError("peft.method: lora needs peft (pip install peft)") from None
    try:
        with warnings.catch_warnings():  # peft reads an attribute transformers deprecates
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                    category=FutureWarning)
            wrapper = get_peft_model(model, lora_config(cfg, model))
    except ValueError as exc:  # e.g. a target module the model does not have
        raise ConfigError(f"peft.target_modules: {str(exc).splitlines()[0]}") from None
    inner = wrapper.base_model.model  # the same object as `model`, adapters injected
    for p in inner.parameters():
        p.requires_grad_(False)
    for name in adapter_names(inner):
        inner.get_parameter(name).requires_grad_(True)
    return inner, wrapper


def adapter_names(model: nn.Module) -> frozenset[str]:
    """Names of the model's adapter parameters (empty without adapters)."""
    # peft on first use: only LoRA runs need it, and importing it takes ~2.5 s
    from peft.tuners.tuners_utils import BaseTunerLayer

    names = set()
    for mod_name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            for layer in module.adapter_layer_names:
                prefix = f"{mod_name}.{layer}."
                names.update(f"{prefix}{n}" for n, _ in getattr(module, layer).named_parameters())
    return frozenset(names)


def has_adapters(model: nn.Module) -> bool:
    return getattr(model, "peft_config", None) is not None


def exchanged_names(model: nn.Module) -> frozenset[str]:
    """What can train, and so what the federation sends and averages: the adapters of a
    model that has them, else every parameter."""
    if has_adapters(model):
        return adapter_names(model)
    return frozenset(n for n, _ in model.named_parameters())


def inject_like(source: nn.Module, target: nn.Module) -> nn.Module:
    """`target` (a twin of `source`'s base, e.g. on the meta device) with the same adapters."""
    if not has_adapters(source):
        return target
    # peft on first use: only LoRA runs need it, and importing it takes ~2.5 s
    from peft import inject_adapter_in_model

    return inject_adapter_in_model(copy.deepcopy(source.peft_config["default"]), target)


def save_adapter(wrapper: nn.Module, folder: Path) -> None:
    """The adapters alone, as peft saves them (adapter_config.json + safetensors), for
    `PeftModel.from_pretrained(base, folder)`."""
    write_folder_atomic(folder, lambda tmp: wrapper.save_pretrained(tmp))


def merged(wrapper: nn.Module) -> nn.Module:
    """The base model with the adapters merged into its weights: a plain HF model, which
    downstream tasks load. Merging changes the wrapped model in place: call it last."""
    return wrapper.merge_and_unload()
