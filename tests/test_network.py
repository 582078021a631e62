"""Projected round times (fdapt_core/network.py) against hand arithmetic, and the network
settings left out of the config hash so that a new network needs no new training."""
from __future__ import annotations

import pytest

from fdapt_core.config.run import NetworkConfig, build_config
from fdapt_core.network import client_links, project, summary, time_to_target


def _record(base="fdapt"):
    def client(c, wall, up, down, dropped=False):
        return {"client": c, "wall_s": wall, "bytes_up": up, "bytes_down": down,
                "dropped": dropped}

    return {"base_method": base, "config": {"fl": {"clients": 3}}, "rounds": [
        {"round": 0, "aggregate_wall_s": 0.5, "eval_loss": 3.0,
         "clients": [client(0, 10.0, 10_000_000, 20_000_000),
                     client(1, 12.0, 1_000_000, 20_000_000),
                     client(2, 0.0, 0, 0, dropped=True)]},
        {"round": 1, "aggregate_wall_s": 0.5, "eval_loss": 2.0,
         "clients": [client(0, 10.0, 10_000_000, 20_000_000),
                     client(1, 10.0, 1_000_000, 20_000_000)]},
    ]}


def test_the_slowest_client_gates_the_round():
    net = NetworkConfig(up_mbps=8.0, down_mbps=80.0, latency_ms=50.0)
    rounds = project(_record(), net)
    # client 0: 0.1 s latency + 20 MB / 10 MB/s down + 10 s + 10 MB / 1 MB/s up = 22.1 s
    # client 1: 0.1 + 2 + 12 + 1 = 15.1 s; the dropped client is not waited for
    assert rounds[0].round_s == pytest.approx(22.1 + 0.5)
    assert rounds[0].transfer_s == pytest.approx(12.1) and rounds[0].compute_s == 10.0
    assert rounds[1].elapsed_s == pytest.approx(2 * 22.6)
    assert rounds[1].bytes_sent == 2 * 51_000_000
    assert time_to_target(rounds, 2.5) == pytest.approx(45.2)
    assert time_to_target(rounds, 1.0) is None


def test_central_moves_no_data():
    rec = _record("central")
    for r in rec["rounds"]:
        r["clients"] = [{"client": "central", "wall_s": 30.0, "bytes_up": 0, "bytes_down": 0}]
    s = summary(rec, NetworkConfig(up_mbps=1e-3), target=2.0)
    assert s["round_s"] == pytest.approx(30.5) and s["transfer_share"] == 0.0
    assert s["time_to_target_s"] == pytest.approx(61.0)


def test_heterogeneous_links_are_seeded_and_spread():
    net = NetworkConfig(heterogeneity=1.0, seed=3)
    a, b = client_links(net, 8), client_links(net, 8)
    assert a == b
    ups = [x.up_mbps for x in a]
    assert max(ups) / min(ups) > 3 and all(x.latency_ms == 20.0 for x in a)
    assert {x.up_mbps for x in client_links(NetworkConfig(), 4)} == {100.0}


def test_the_network_is_not_part_of_what_a_run_computes():
    a = build_config({})
    b = build_config({}, ["network.up_mbps=1", "network.heterogeneity=0.5",
                          "report.target_loss=4.0"])
    c = build_config({}, ["fl.upload_codec=int8"])
    assert a.hash() == b.hash() != c.hash()
