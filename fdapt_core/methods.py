"""What a method name means, and everything a run would refuse that the config can tell.

A method is `<base>[-<policy>][-lora][-<codec>][-<strategy>]`; the names after the base come
from the registries of freeze policies, upload codecs and server strategies.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from .config.run import RunConfig
from .dist.zero import check_supported as zero_supported
from .errors import ConfigError
from .executors import executor_of
from .fl.codecs import CODECS
from .fl.strategies import STRATEGIES
from .flower.support import check_supported as flower_supported
from .freeze.policies import check_freeze
from .freeze.allocation import POLICIES as FREEZE_POLICIES
from .model import block_count, check_model

METHODS = ("central", "fdapt", "ffdapt")
UPLOAD_CODECS = tuple(c for c in CODECS if c != "none")  # method-name suffixes


@dataclass(frozen=True)
class Method:
    """A method name, parsed once: `<base>[-<policy>][-lora][-<codec>][-<strategy>]`.

    base `central`, `fdapt` or `ffdapt`; a freeze policy only after ffdapt (without one,
    freeze.policy's); `-lora`: LoRA clients (or a LoRA central baseline); a federated method
    may go on with an upload codec (`fdapt-int8`) and end in a server strategy
    (`fdapt-fedadam`, `ffdapt-paper-lora-fedprox`). The suffixes come from the registries of
    freeze policies, upload codecs and strategies."""

    name: str
    base: str
    policy: Optional[str] = None
    lora: bool = False
    codec: Optional[str] = None
    strategy: Optional[str] = None

    @classmethod
    def parse(cls, method: str) -> "Method":
        base, *rest = method.split("-")
        policy = rest.pop(0) if rest and base == "ffdapt" and rest[0] in FREEZE_POLICIES \
            else None
        lora = bool(rest) and rest[0] == "lora"
        if lora:
            rest.pop(0)
        codec = rest.pop(0) if rest and base != "central" and rest[0] in UPLOAD_CODECS \
            else None
        strategy = rest.pop(0) if rest and base != "central" and rest[0] in STRATEGIES \
            else None
        if base not in METHODS or rest:
            raise ConfigError(f"method {method!r}: expected one of central, fdapt, ffdapt, "
                              f"ffdapt-<policy> with policy in {', '.join(FREEZE_POLICIES)}, "
                              f"optionally followed by -lora (LoRA adapters), the federated "
                              f"ones then by -<codec> with codec in {', '.join(UPLOAD_CODECS)} "
                              f"and -<strategy> with strategy in {', '.join(STRATEGIES)}")
        return cls(method, base, policy, lora, codec, strategy)

    def apply(self, cfg: RunConfig) -> RunConfig:
        """The config this method runs with: the keys its suffixes set."""
        if self.policy:
            cfg = replace(cfg, freeze=replace(cfg.freeze, policy=self.policy))
        if self.lora:
            cfg = replace(cfg, peft=replace(cfg.peft, method="lora"))
        if self.codec:
            cfg = replace(cfg, fl=replace(cfg.fl, upload_codec=self.codec))
        if self.strategy:
            cfg = replace(cfg, fl=replace(cfg.fl, strategy=self.strategy))
        return cfg


def parse_method(method: str, cfg: RunConfig) -> tuple[str, RunConfig]:
    """(base method, the config it runs with): `Method.parse(method)` applied to `cfg`."""
    m = Method.parse(method)
    return m.base, m.apply(cfg)


def check(cfg: RunConfig, method: str) -> tuple[str, RunConfig, str]:
    """(base method, the method's config, the objective): everything a run would refuse that
    the config and the model's own config can tell, before any data is read or anything is
    built or written. `compare` and `study` call it for every method before the first trains.

    The method's name, the model and its objective (`model.check_model`), the freeze
    settings against the model's transformer blocks, and what the ZeRO engine and the Flower
    executor support."""
    base, cfg = parse_method(method, cfg)
    objective = check_model(cfg.model)
    if base == "ffdapt":
        n_blocks = block_count(cfg.model)
        if n_blocks is not None:
            check_freeze(cfg.freeze.policy, cfg.freeze, n_blocks)
    if cfg.dist.engine == "deepspeed":
        zero_supported(cfg, base)
    if executor_of(cfg).remote:  # a node trains the plain loop alone
        flower_supported(cfg)
    return base, cfg, objective
