"""The freeze frontier (`bench flops --frontier`): per freeze policy and allocation, the
training FLOPs it saves against fdapt on one config, beside the held-out loss that finished
runs of that very policy reached (where a results folder holds some).

FLOPs are predicted (`flops.plan`): seconds, no training. Held-out loss needs training, so it
is only read: a record counts for a frontier row when it is a finished run of the same base
method and freeze policy with the same settings, on the same config up to what does not change
what is trained (run name, seed, paths, threads, device, executor, the network and report
keys); the seeds found are averaged.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

from ..config.run import FreezeConfig, RunConfig, build_config
from ..errors import FdaptError
from .plan import PAPER_SAVING_PCT, FlopsPlanner, MethodFlops, saved_pct
from ..methods import check
from ..model import block_count
from ..records import read_json
from ..runs import DONE

# budget policy targets on the frontier: the paper's claimed saving among round shares
BUDGET_TARGETS = (0.05, 0.10, PAPER_SAVING_PCT / 100, 0.15, 0.20, 0.25, 0.30)


@dataclass
class FrontierRow:
    label: str
    policy: Optional[dict]  # the record's freeze_policy of such a run (None: fdapt)
    train_flops: int
    saved_pct: float
    frozen_blocks_mean: float
    reaches: bool  # saves at least PAPER_SAVING_PCT
    heldout_loss: Optional[float] = None  # mean final held-out loss of matching records
    heldout_runs: int = 0  # how many finished records it is the mean of

    def to_dict(self) -> dict:
        return asdict(self)


def frontier_settings(freeze: FreezeConfig, n_blocks: int) -> list[tuple[str, FreezeConfig]]:
    """(label, freeze settings) of every policy and allocation on the frontier: the config's
    paper allocation and the same rotation with k blocks on every client, bottom k with and
    without the embeddings, random k, the progressive window w, and budget targets.
    Policies' other settings are the config's."""
    n = n_blocks
    out = [(f"paper (k_i in [{freeze.min_blocks}, {freeze.max_blocks}])",
            replace(freeze, policy="paper"))]
    out += [(f"paper rotation, k={k} on every client",
             replace(freeze, policy="paper", min_blocks=k, max_blocks=k)) for k in range(1, n)]
    for emb in (False, True):
        out += [(f"bottom k={k}" + (" + embeddings" if emb else ""),
                 replace(freeze, policy="bottom", k=k, embeddings=emb)) for k in range(1, n)]
    out += [(f"random k={k}", replace(freeze, policy="random", k=k)) for k in range(1, n)]
    out += [(f"progressive window={w}" + (" + embeddings" if freeze.embeddings else ""),
             replace(freeze, policy="progressive", window=w)) for w in range(1, n)]
    out += [(f"budget target={t:.3g}" + (" (+ embeddings)" if freeze.embeddings else ""),
             replace(freeze, policy="budget", target_saving=t)) for t in BUDGET_TARGETS]
    return out


def frontier(planner: FlopsPlanner, cfg: RunConfig,
             records: Sequence[dict] = ()) -> list[FrontierRow]:
    """fdapt, then every frontier setting on `cfg`, each with its FLOPs saved against fdapt
    and (from `records`, finished run records) its held-out loss."""
    check(cfg, "ffdapt")
    n = block_count(cfg.model)
    if n is None:
        raise FdaptError("--frontier: the model's config does not say how many transformer "
                         "blocks it has")
    ref = planner.predict(cfg, "fdapt")
    rows = [_row("fdapt (reference)", ref, ref.train_flops, records, cfg)]
    for label, freeze in frontier_settings(cfg.freeze, n):
        rows.append(_row(label, planner.predict(cfg, "ffdapt", freeze=freeze),
                         ref.train_flops, records, replace(cfg, freeze=freeze)))
    return rows


def _row(label: str, m: MethodFlops, reference: int, records: Sequence[dict],
         cfg: RunConfig) -> FrontierRow:
    saved = saved_pct(m.train_flops, reference)
    losses = [r["final_eval"]["loss"] for r in records
              if _same_run(r, cfg, m.base, m.policy)]
    return FrontierRow(label=label, policy=m.policy if m.base == "ffdapt" else None,
                       train_flops=m.train_flops, saved_pct=saved,
                       frozen_blocks_mean=m.frozen_blocks_mean,
                       reaches=saved >= PAPER_SAVING_PCT - 1e-9,
                       heldout_loss=statistics.fmean(losses) if losses else None,
                       heldout_runs=len(losses))


def finished_records(folders: Sequence[Path]) -> list[dict]:
    """Every finished run record under these folders (at any depth)."""
    out = []
    for folder in folders:
        if not Path(folder).is_dir():
            raise FdaptError(f"--runs: {folder}: no such folder")
        for path in sorted(Path(folder).glob("**/record.json")):
            try:
                rec = read_json(path)
            except (OSError, ValueError):
                continue
            if rec.get("status") in DONE and (rec.get("final_eval") or {}).get("loss") \
                    is not None:
                out.append(rec)
    return out


def _same_run(rec: dict, cfg: RunConfig, base: str, policy: Optional[dict]) -> bool:
    """Whether a record trained what `cfg` with this method and freeze policy would train,
    whatever its seed."""
    if rec.get("base_method") != base:
        return False
    if base == "ffdapt" and _policy_key(rec.get("freeze_policy")) != _policy_key(policy):
        return False
    try:
        theirs = build_config(rec.get("config") or {})  # keys added since: their defaults
    except FdaptError:
        return False
    return _trained(theirs) == _trained(cfg)


def _policy_key(policy: Optional[dict]) -> Optional[str]:
    if policy is None:
        return None
    return json.dumps({k: v for k, v in policy.items() if k != "seed"}, sort_keys=True)


def _trained(cfg: RunConfig) -> str:
    """The config less what does not change what is trained (the freeze section is matched
    by the record's freeze_policy instead)."""
    d = cfg.to_dict()
    for key in ("name", "seed", "output_dir", "cache_dir", "network", "report", "profile",
                "dist", "freeze"):
        d.pop(key, None)
    for key in ("threads", "device", "sparse_head"):  # same loss and gradients either way
        d["train"].pop(key, None)
    return json.dumps(d, sort_keys=True, default=str)
