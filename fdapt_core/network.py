"""Round times over real networks, projected from a run record.

Nothing is sent over a network here: a simulated client's compute is measured (its local
training loop's wall time), and the network is modelled. Each client has an uplink and a
downlink (`network.up_mbps`, `network.down_mbps`) and a one-way latency (`network.latency_ms`);
with `network.heterogeneity` = σ > 0 each client's bandwidths are scaled by one seeded
log-normal factor exp(N(0, σ²)) (σ = 1 spreads them over about a factor of ten).

A synchronous round waits for its slowest client:

    client time = latency + bytes down / downlink + local training + latency + bytes up / uplink
    round time  = max over the clients that took part (a dropped client is not waited for)
                  + the server's aggregation time

The central baseline moves no data: its round time is its training time. Evaluation is the
harness's own measurement and is left out. Time to target: the projected time at the end of
the first round whose held-out loss is at or below the target (None if never reached).

Records keep the bytes and the compute; the projection is computed when a table is drawn, so
`network.*` (left out of the config hash) can change without training again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .config.run import NetworkConfig
from .seeding import derive


@dataclass(frozen=True)
class Link:
    up_mbps: float
    down_mbps: float
    latency_ms: float

    def transfer_s(self, bytes_down: int, bytes_up: int) -> float:
        return (2 * self.latency_ms / 1e3 + 8 * bytes_down / (self.down_mbps * 1e6)
                + 8 * bytes_up / (self.up_mbps * 1e6))


def client_links(cfg: NetworkConfig, n_clients: int) -> list[Link]:
    """Each client's link: the configured rates, scaled per client by the seeded factor."""
    factors = np.ones(n_clients)
    if cfg.heterogeneity > 0:
        rng = np.random.default_rng(derive(cfg.seed, "network"))
        factors = np.exp(rng.normal(0.0, cfg.heterogeneity, n_clients))
    return [Link(cfg.up_mbps * float(f), cfg.down_mbps * float(f), cfg.latency_ms)
            for f in factors]


@dataclass(frozen=True)
class RoundTime:
    round: int
    compute_s: float  # the slowest client's local training (central: its training)
    transfer_s: float  # the slowest client's transfer time, beside its compute
    round_s: float  # what the round takes: the slowest client + aggregation
    elapsed_s: float  # since the run began
    bytes_sent: int  # up + down, since the run began
    loss: Optional[float]  # held-out loss after the round


def project(record: dict, cfg: NetworkConfig) -> list[RoundTime]:
    """The record's rounds as they would run on these links."""
    central = record.get("base_method") == "central"
    links = client_links(cfg, record["config"]["fl"]["clients"])
    out, elapsed, sent = [], 0.0, 0
    for r in record["rounds"]:
        rows = [c for c in r["clients"] if not c.get("dropped")]
        if central or not rows:
            compute = sum(c.get("wall_s") or 0.0 for c in rows)
            slowest, transfer = compute, 0.0
        else:
            # an older record's row may lack its client index: its place in the round
            times = [(links[c.get("client", i) % len(links)].transfer_s(_bytes(c, "down"),
                                                                        _bytes(c, "up")),
                      c.get("wall_s") or 0.0) for i, c in enumerate(rows)]
            transfer, compute = max(times, key=sum)
            slowest = transfer + compute
        round_s = slowest + (r.get("aggregate_wall_s") or 0.0)
        elapsed += round_s
        sent += sum(_bytes(c, "up") + _bytes(c, "down") for c in r["clients"])
        out.append(RoundTime(r["round"], compute, transfer, round_s, elapsed, sent,
                             r.get("eval_loss")))
    return out


def _bytes(row: dict, way: str) -> int:
    return row.get(f"bytes_{way}") or 0  # an older record's row may lack the count


def time_to_target(rounds: list[RoundTime], target: Optional[float]) -> Optional[float]:
    """Projected seconds until the held-out loss first reaches `target` (None: never)."""
    if target is None:
        return None
    return next((t.elapsed_s for t in rounds if t.loss is not None and t.loss <= target), None)


def summary(record: dict, cfg: NetworkConfig, target: Optional[float]) -> dict:
    """The figures a table shows: mean projected round time, its transfer share, total
    projected time and time to `target`."""
    rounds = project(record, cfg)
    total = rounds[-1].elapsed_s if rounds else None
    return {"round_s": total / len(rounds) if rounds else None,
            "transfer_share": sum(t.transfer_s for t in rounds) / total if total else None,
            "projected_s": total, "time_to_target_s": time_to_target(rounds, target)}
