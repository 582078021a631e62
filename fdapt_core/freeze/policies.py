"""Freeze policies: which parameters each ffdapt client leaves untouched.

`paper` is the study's allocation by data share (see `freeze.allocation.paper_allocation`):
each client freezes a different run of transformer blocks, fixed for the run. `bottom` freezes
the embeddings (and so DistilBERT's tied output projection) and the first k blocks on every
client: their whole backward pass is saved, not only their weight gradients. Only transformer
blocks and the embeddings are ever frozen; layer norms outside blocks and the MLM head always
train.

Beyond the study (allocation rules in `freeze.allocation`):

* `progressive` (per round, same on every client): a window of `freeze.window` trainable blocks
  starts at the bottom in round 0 and moves up one block a round (clamped at the top, or
  wrapping with `freeze.wrap`); everything outside it is frozen. With `freeze.embeddings` the
  embeddings are frozen whenever block 0 is (from round 1 on, unless the window wraps back),
  so that the frozen bottom skips its whole backward pass.
* `random` (per client and round): `freeze.k` blocks drawn from a seed derived from the run
  seed, the client and the round. The embeddings always train: a control for *which* blocks.
* `budget` (per client, fixed for the run): client i aims to save target × n_i·K/Σn of its
  training FLOPs (`freeze.target_saving`), clamped to what freezing can reach, and freezes the
  candidate with the fewest frozen parameters that meets it. Candidates are "bottom k blocks"
  and, with `freeze.embeddings`, "embeddings + bottom k blocks" (k = 0 … n); their savings are
  counted with FlopCounterMode on the meta-device twin (`FlopCache`), for the run's step shape.

`FreezeSchedule` is the seam the engine uses: `plan(client, round_index)`. Static policies
(`paper`, `bottom`, `none`, `budget`) answer the same plan every round and list it per client
in the run record; per-round policies leave the record's `freeze` list empty and each client
row carries its round's `frozen_blocks`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from torch import nn

from ..adapters import exchanged_names
from ..config.run import FreezeConfig
from ..errors import ConfigError
from .allocation import (BudgetChoice, Candidate, budget_allocation, bottom_allocation,
                                paper_allocation, progressive_allocation, random_allocation)
from ..model import embedding_prefix, transformer_blocks
from ..flops.count import FlopCache


@dataclass(frozen=True)
class FreezePlan:
    """A client's frozen set: block indices, whether embeddings freeze, and parameter names."""

    blocks: tuple[int, ...]
    embeddings: bool
    names: frozenset[str]


def check_freeze(policy: str, cfg: FreezeConfig, n_blocks: int) -> None:
    """Refuse freeze settings that a model of `n_blocks` transformer blocks cannot meet (the
    budget and none policies fit any model)."""
    n = n_blocks
    if policy == "paper" and cfg.max_blocks > n:
        raise ConfigError(f"freeze.max_blocks: {cfg.max_blocks} is more than the model's {n} "
                          f"transformer blocks; set freeze.max_blocks={n} or fewer (the "
                          "paper's 4 is for its 6-block model)")
    if policy in ("bottom", "random") and cfg.k > n:
        raise ConfigError(f"freeze.k: {cfg.k} is more than the model's {n} blocks")
    if policy == "progressive" and cfg.window > n:
        raise ConfigError(f"freeze.window: {cfg.window} is more than the model's {n} blocks")
    if policy not in ("paper", "bottom", "none", "progressive", "random", "budget"):
        raise ConfigError(f"freeze.policy: unknown policy {policy!r}")


def plan_freezing(model: nn.Module, policy: str, cfg: FreezeConfig,
                  n_batches: Sequence[int]) -> list[FreezePlan]:
    """One FreezePlan per client (`n_batches[i]`: client i's training batches per round)."""
    blocks = transformer_blocks(model)
    n = len(blocks)
    check_freeze(policy, cfg, n)
    if policy == "none":
        per_client, emb = [[] for _ in n_batches], False
    elif policy == "paper":
        per_client = paper_allocation(list(n_batches), n, cfg.min_blocks, cfg.max_blocks)
        emb = False
    elif policy == "bottom":
        per_client, emb = bottom_allocation(len(n_batches), cfg.k, n), cfg.embeddings
    else:
        raise ConfigError(f"freeze.policy: unknown policy {policy!r}")
    make = PlanMaker(model)
    return [make(frozen, emb) for frozen in per_client]


class PlanMaker:
    """FreezePlans of one model: (frozen blocks, embeddings?) → plan, each built once."""

    def __init__(self, model: nn.Module):
        self.blocks = [prefix for prefix, _ in transformer_blocks(model)]
        self.names = [n for n, _ in model.named_parameters()]
        self.sizes = {n: p.numel() for n, p in model.named_parameters()}
        self.emb_prefix = embedding_prefix(model)
        self._cache: dict[tuple, FreezePlan] = {}

    def __call__(self, frozen: Sequence[int], embeddings: bool) -> FreezePlan:
        key = (tuple(frozen), bool(embeddings))
        if key not in self._cache:
            prefixes = tuple(self.blocks[b] for b in frozen) \
                + (self.emb_prefix if embeddings else ())
            self._cache[key] = FreezePlan(
                blocks=tuple(frozen), embeddings=bool(embeddings),
                names=frozenset(x for x in self.names if x.startswith(prefixes))
                if prefixes else frozenset())
        return self._cache[key]

    def frozen_params(self, plan: FreezePlan) -> int:
        return sum(self.sizes[n] for n in plan.names)


class FreezeSchedule:
    """Which parameters client c freezes in round r: `plan(client, round_index)`.

    A static schedule (`plans`, one per client) answers the same plan in every round; a
    per-round one (`rule(client, round_index)`) is a pure function of its arguments and the
    config, so a resumed run sees the same plans. `settings` (the policy's parameters) and
    `details` (per client, e.g. the budget policy's target and achieved saving) go to the
    run record.
    """

    def __init__(self, policy: str, *, plans: Optional[Sequence[FreezePlan]] = None,
                 rule: Optional[Callable[[int, int], FreezePlan]] = None,
                 settings: Optional[dict] = None, details: Optional[Sequence[dict]] = None,
                 sizes: Optional[dict[str, int]] = None):
        if (plans is None) == (rule is None):
            raise ValueError("a FreezeSchedule needs exactly one of plans and rule")
        self.policy = policy
        self._plans = list(plans) if plans is not None else None
        self._rule = rule
        self.settings = dict(settings or {})
        self.details = list(details) if details is not None else None
        self._sizes = sizes

    @classmethod
    def of(cls, plans: "FreezeSchedule | Sequence[FreezePlan] | None") -> "FreezeSchedule | None":
        """A schedule from a schedule, a static list of plans (one per client), or None."""
        if plans is None or isinstance(plans, FreezeSchedule):
            return plans
        return cls("static", plans=plans)

    @property
    def static(self) -> bool:
        return self._plans is not None

    def plan(self, client: int, round_index: int) -> FreezePlan | None:
        if self._plans is not None:
            return self._plans[client] if self._plans else None
        return self._rule(client, round_index)

    def describe(self) -> dict:
        """The policy for the run record: its name, whether it is static, its settings."""
        return {"policy": self.policy, "static": self.static, **self.settings}

    def record(self, model: nn.Module) -> list[dict]:
        """The record's per-client `freeze` list (empty for a per-round schedule)."""
        if self._plans is None:
            return []
        sizes = self._sizes or {n: p.numel() for n, p in model.named_parameters()}
        rows = []
        for c, p in enumerate(self._plans):
            row = {"client": c, "blocks": list(p.blocks), "embeddings": p.embeddings,
                   "frozen_params": sum(sizes[n] for n in p.names if n in sizes)}
            if self.details is not None:
                row.update(self.details[c])
            rows.append(row)
        return rows


def freeze_schedule(model: nn.Module, policy: str, cfg: FreezeConfig, n_batches: Sequence[int],
                    *, seed: int = 0, shape: Optional[tuple[int, int]] = None,
                    flops=None) -> FreezeSchedule:
    """The run's FreezeSchedule for `policy` (`n_batches[i]`: client i's batches per round).

    `seed` is the run seed (random policy); `shape` = (batch size, sequence length) of a
    training step and `flops` an optional `FlopCache` of this model (budget policy: the
    candidates' savings are counted at this shape; a cache is made if none is given).
    """
    make = PlanMaker(model)
    check_freeze(policy, cfg, len(make.blocks))
    if policy not in SCHEDULES:
        raise ConfigError(f"freeze.policy: unknown policy {policy!r}")
    return SCHEDULES[policy](FreezeRequest(model, cfg, n_batches, seed, shape, flops, make))


@dataclass(frozen=True)
class FreezeRequest:
    """What a freeze policy may look at to make the run's schedule."""

    model: nn.Module
    cfg: FreezeConfig
    n_batches: Sequence[int]  # each client's training batches per round
    seed: int
    shape: Optional[tuple[int, int]]  # (batch size, sequence length) of a training step
    flops: object  # a FlopCache of this model, or None
    make: "PlanMaker"


def _fixed(policy: str, settings):
    def build(q: FreezeRequest) -> FreezeSchedule:
        return FreezeSchedule(policy, plans=plan_freezing(q.model, policy, q.cfg, q.n_batches),
                              settings=settings(q.cfg), sizes=q.make.sizes)
    return build


def _progressive(q: FreezeRequest) -> FreezeSchedule:
    cfg, make, n = q.cfg, q.make, len(q.make.blocks)

    def progressive(client: int, round_index: int) -> FreezePlan:
        frozen = progressive_allocation(round_index, n, cfg.window, cfg.wrap)
        return make(frozen, cfg.embeddings and 0 in frozen)

    return FreezeSchedule("progressive", rule=progressive, sizes=make.sizes,
                          settings={"window": cfg.window, "wrap": cfg.wrap,
                                    "embeddings": cfg.embeddings})


def _random(q: FreezeRequest) -> FreezeSchedule:
    cfg, make, n, seed = q.cfg, q.make, len(q.make.blocks), q.seed

    def random_(client: int, round_index: int) -> FreezePlan:
        return make(random_allocation(seed, client, round_index, n, cfg.k), False)

    return FreezeSchedule("random", rule=random_, sizes=make.sizes,
                          settings={"k": cfg.k, "seed": seed})


def _budget(q: FreezeRequest) -> FreezeSchedule:
    cfg, make = q.cfg, q.make
    if q.shape is None:
        raise ValueError("the budget policy needs the training step shape")
    candidates = budget_candidates(q.model, cfg.embeddings, q.shape, q.flops, make)
    choices: list[BudgetChoice] = budget_allocation(q.n_batches, candidates, cfg.target_saving)
    plans = [make(ch.choice.blocks, ch.choice.embeddings) for ch in choices]
    details = [{"target_saving": ch.target, "clamped_target_saving": ch.clamped_target,
                "flops_saving": ch.choice.saving} for ch in choices]
    return FreezeSchedule("budget", plans=plans, details=details, sizes=make.sizes,
                          settings={"target_saving": cfg.target_saving,
                                    "embeddings": cfg.embeddings, "step_shape": list(q.shape)})


# The freeze policies, registered by name (their names and allocations: freeze/allocation.py)
SCHEDULES: dict[str, Callable[[FreezeRequest], FreezeSchedule]] = {
    "paper": _fixed("paper", lambda c: {"min_blocks": c.min_blocks, "max_blocks": c.max_blocks}),
    "bottom": _fixed("bottom", lambda c: {"k": c.k, "embeddings": c.embeddings}),
    "none": _fixed("none", lambda c: {}),
    "progressive": _progressive,
    "random": _random,
    "budget": _budget,
}


def budget_candidates(model: nn.Module, embeddings: bool, shape: tuple[int, int],
                      flops=None, make: Optional[PlanMaker] = None) -> list[Candidate]:
    """"Bottom k blocks" (and with `embeddings`, "embeddings + bottom k") for k = 0 … n, each
    with its share of a training step's FLOPs saved, counted on the meta-device twin."""
    make = make or PlanMaker(model)
    cache = flops if flops is not None else FlopCache(model)
    full = cache.get(frozenset(), tuple(shape)).total
    out = []
    for emb in ((False, True) if embeddings else (False,)):
        for k in range(len(make.blocks) + 1):
            plan = make(range(k), emb)
            saving = 1.0 - cache.get(plan.names, tuple(shape)).total / full
            out.append(Candidate(blocks=plan.blocks, embeddings=emb,
                                 frozen_params=make.frozen_params(plan), saving=saving))
    return out


def apply_freeze(model: nn.Module, plan: FreezePlan | None) -> None:
    """Set requires_grad for a client's round: what can train (every parameter, or a LoRA
    model's adapters) less the plan's frozen set (None: nothing frozen). A frozen block's
    adapters freeze with it: they neither train nor travel that round."""
    frozen = plan.names if plan is not None else frozenset()
    trainable = exchanged_names(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable and name not in frozen)
