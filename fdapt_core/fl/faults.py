"""Client faults: seeded injection (drop-outs, corrupted updates) and the server's screen.

Injection is drawn per (round, client) from the run seed, so a faulty run is as reproducible
as a clean one. The screen runs on every update, injected or not: a non-finite value is always
rejected; an update whose norm ‖θ_client − θ_global‖ is more than `max_norm_ratio` times the
median of recently accepted norms is rejected too (the first updates of a run, with nothing to
compare to, pass the finite check only).

The screen has two halves. `check` needs the update alone (finite? its norm?), so it runs
wherever the client trained. `judge` compares a norm with the run's history, so the server
applies it in CLIENT ORDER once a round's clients are trained, `accept`ing each norm it lets
through before judging the next: every executor then sees the same history and rejects the same
updates (the sequential one trains in client order and can judge each as it arrives).
"""
from __future__ import annotations

import math
import statistics
from typing import Mapping, Optional

import numpy as np
import torch

from ..config.run import FaultsConfig
from ..seeding import derive


class Faults:
    def __init__(self, cfg: FaultsConfig, seed: int, window: int):
        self.cfg, self.seed, self.window = cfg, seed, window
        self.accepted_norms: list[float] = []  # checkpointed: the screen's memory

    def draw(self, round_index: int, client: int) -> Optional[str]:
        """None, "drop", or a corruption kind for this client's round."""
        rng = np.random.default_rng(derive(self.seed, "faults", round_index, client))
        u_drop, u_corrupt, u_kind = rng.random(3)
        if u_drop < self.cfg.dropout:
            return "drop"
        if u_corrupt < self.cfg.corrupt:
            kinds = self.cfg.corrupt_kinds
            return kinds[int(u_kind * len(kinds))]
        return None

    def corrupt(self, kind: str, sent: Mapping[str, torch.Tensor],
                global_params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A corrupted copy of an upload (the client's model itself is not touched)."""
        out = {k: v.detach().clone() for k, v in sent.items()}
        if kind == "scale":
            for k, v in out.items():
                g = global_params[k]
                v.copy_(g + self.cfg.corrupt_scale * (v - g))
        else:
            first = next(iter(out.values()))
            first.view(-1)[0] = math.nan if kind == "nan" else math.inf
        return out

    @property
    def needs_history(self) -> bool:
        """Whether `judge` looks at earlier updates (if not, any order judges the same)."""
        return self.cfg.max_norm_ratio is not None

    def check(self, sent: Mapping[str, torch.Tensor],
              global_params: Mapping[str, torch.Tensor]) -> tuple[Optional[str], float]:
        """What the update alone tells: (reason to reject or None, update norm)."""
        sq = 0.0
        for k, v in sent.items():
            if not torch.isfinite(v).all():
                return f"non-finite values in {k}", math.nan
            sq += float((v.detach().double() - global_params[k].double()).pow(2).sum())
        return None, math.sqrt(sq)

    def judge(self, norm: float) -> Optional[str]:
        """Reason to reject a finite update of this norm given the recently accepted ones."""
        ratio = self.cfg.max_norm_ratio
        recent = self.accepted_norms[-self.window:]
        if ratio is not None and recent:
            ref = statistics.median(recent)
            if ref > 0 and norm > ratio * ref:
                return (f"update norm {norm:.4g} is more than {ratio:g} × the median of recent "
                        f"accepted updates ({ref:.4g})")
        return None

    def accept(self, norm: float) -> None:
        self.accepted_norms.append(norm)
