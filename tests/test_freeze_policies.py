"""Freeze policies beyond the study: progressive, random and budget.

Allocation rules are checked by hand without a model; the schedules on the tiny model; the
budget policy against FLOPs counted on the real model; the engine against the per-round plan
(frozen parameters untouched, uploads and FLOPs follow the round's frozen set); and a CLI run
of ffdapt-progressive resumed after its first round.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fdapt_core.config.run import FreezeConfig
from fdapt_core.errors import ConfigError
from fdapt_core.freeze.policies import (FreezeSchedule, apply_freeze, budget_candidates,
                               freeze_schedule, plan_freezing)
from fdapt_core.freeze.allocation import (Candidate, budget_allocation, budget_targets,
                                          progressive_allocation, random_allocation)
from fdapt_core.model import build_from_preset, embedding_prefix
from fdapt_core.flops.count import FlopCache, count_step_flops
from fdapt_core.runner import run
from fdapt_core.runs import run_dir
from fdapt_core.seeding import derive
from tests.conftest import ROOT, TINY



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread, as the tiny runs use (train.threads=1): on a busy 2-core machine a
    second thread makes these small steps many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

# ----------------------------------------------------------------------------- allocation rules


def test_progressive_window_moves_up_one_block_a_round_and_stops_at_the_top():
    frozen = [progressive_allocation(r, 6, 2) for r in range(7)]
    assert frozen == [[2, 3, 4, 5],  # round 0 trains 0, 1
                      [0, 3, 4, 5],  # round 1 trains 1, 2
                      [0, 1, 4, 5],
                      [0, 1, 2, 5],
                      [0, 1, 2, 3],  # round 4 trains 4, 5: the top
                      [0, 1, 2, 3],  # clamped there
                      [0, 1, 2, 3]]
    assert [progressive_allocation(r, 4, 3) for r in range(3)] == [[3], [0], [0]]
    assert all(progressive_allocation(r, 6, 6) == [] for r in range(4))


def test_progressive_window_wraps_when_asked():
    frozen = [progressive_allocation(r, 6, 2, wrap=True) for r in range(4, 8)]
    assert frozen == [[0, 1, 2, 3],  # trains 4, 5
                      [1, 2, 3, 4],  # trains 5, 0
                      [2, 3, 4, 5],  # trains 0, 1: round 6 is round 0 again
                      [0, 3, 4, 5]]
    assert progressive_allocation(13, 6, 1, wrap=True) == [0, 2, 3, 4, 5]


@pytest.mark.parametrize("args, message", [((0, 6, 0), r"freeze.window: 0 must be in \[1, 6\]"),
                                           ((0, 6, 7), r"freeze.window: 7"),
                                           ((-1, 6, 2), "round index"),
                                           ((0, 0, 1), "n_blocks >= 1")])
def test_progressive_validation(args, message):
    with pytest.raises(ConfigError, match=message):
        progressive_allocation(*args)


def test_random_sets_are_seeded_per_client_and_round():
    a = [[random_allocation(0, c, r, 6, 2) for c in range(4)] for r in range(5)]
    assert a == [[random_allocation(0, c, r, 6, 2) for c in range(4)] for r in range(5)]
    # by definition: the run seed, a purpose, the client and the round, nothing else
    rng = np.random.default_rng(derive(0, "freeze-random", 3, 2))
    assert a[2][3] == sorted(int(b) for b in rng.choice(6, 2, replace=False))
    flat = [s for row in a for s in row]
    assert all(len(s) == 2 and s == sorted(set(s)) and 0 <= s[0] and s[-1] < 6 for s in flat)
    assert len({tuple(s) for s in flat}) > 5  # sets vary over clients and rounds
    assert [random_allocation(1, c, r, 6, 2) for r in range(5) for c in range(4)] != flat
    assert random_allocation(0, 0, 0, 6, 0) == [] and random_allocation(0, 0, 0, 6, 6) == \
        list(range(6))
    # uniform over blocks: each block frozen in about k/n of the draws
    counts = np.bincount([b for c in range(300) for b in random_allocation(7, c, 0, 6, 2)],
                         minlength=6)
    assert np.all(np.abs(counts / 300 - 2 / 6) < 0.08), counts
    with pytest.raises(ConfigError, match=r"\[0, 6\], got 7"):
        random_allocation(0, 0, 0, 6, 7)


def test_budget_targets_follow_the_data_share():
    assert budget_targets([1, 1, 2], 0.2) == pytest.approx([0.15, 0.15, 0.3])
    assert np.mean(budget_targets([3, 5, 9, 1], 0.25)) == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="client 1 has 0"):
        budget_targets([2, 0], 0.25)
    with pytest.raises(ConfigError, match="target_saving"):
        budget_targets([2], 1.5)


CANDIDATES = [Candidate((), False, 0, 0.0), Candidate((0,), False, 10, 0.05),
              Candidate((0, 1), False, 20, 0.10), Candidate((), True, 30, 0.20),
              Candidate((0,), True, 40, 0.30), Candidate((0, 1), True, 50, 0.40)]


def test_budget_takes_the_fewest_frozen_parameters_that_meet_the_target():
    # targets 0.15, 0.15, 0.3: the (0, 1) blocks save too little, the embeddings alone enough
    got = budget_allocation([1, 1, 2], CANDIDATES[::-1], 0.2)
    assert [(g.choice.blocks, g.choice.embeddings) for g in got] == [((), True), ((), True),
                                                                    ((0,), True)]
    assert [g.target for g in got] == pytest.approx([0.15, 0.15, 0.3])
    # targets 0.375, 0.375, 0.75: the last is clamped to the best saving, 0.40
    got = budget_allocation([1, 1, 2], CANDIDATES, 0.5)
    assert [g.choice.blocks for g in got] == [(0, 1)] * 3
    assert [g.clamped_target for g in got] == pytest.approx([0.375, 0.375, 0.40])
    assert all(g.choice.blocks == () and not g.choice.embeddings
               for g in budget_allocation([1, 3], CANDIDATES, 0.0))


# ----------------------------------------------------------------------------- schedules


@pytest.fixture(scope="module")
def model():
    return build_from_preset("tiny", 256, 64)


def emb_names(model):
    return {n for n, _ in model.named_parameters() if n.startswith(embedding_prefix(model))}


@pytest.mark.parametrize("policy, cfg", [("paper", FreezeConfig()),
                                         ("bottom", FreezeConfig(k=3)),
                                         ("none", FreezeConfig())])
def test_static_policies_keep_their_plans(model, policy, cfg):
    plans = plan_freezing(model, policy, cfg, [3, 5, 2, 8])
    schedule = freeze_schedule(model, policy, cfg, [3, 5, 2, 8])
    assert schedule.static and [schedule.plan(c, 0) for c in range(4)] == plans
    assert all(schedule.plan(c, r) == plans[c] for c in range(4) for r in range(4))
    assert FreezeSchedule.of(plans).plan(2, 7) == plans[2]  # a plain list still works
    assert [f["blocks"] for f in schedule.record(model)] == [list(p.blocks) for p in plans]


def test_progressive_schedule(model):
    s = freeze_schedule(model, "progressive", FreezeConfig(window=2), [3, 9])
    assert not s.static and s.record(model) == []
    assert s.describe() == {"policy": "progressive", "static": False, "window": 2,
                            "wrap": False, "embeddings": True}
    expected = {0: ((2, 3, 4, 5), False), 1: ((0, 3, 4, 5), True), 4: ((0, 1, 2, 3), True),
                9: ((0, 1, 2, 3), True)}
    for r, (blocks, emb) in expected.items():
        for c in (0, 1):  # the same on every client
            p = s.plan(c, r)
            assert (p.blocks, p.embeddings) == (blocks, emb)
            assert (emb_names(model) <= p.names) == emb
            assert {n.split(".")[3] for n in p.names if ".layer." in n} == set(map(str, blocks))
    no_emb = freeze_schedule(model, "progressive", FreezeConfig(embeddings=False), [1])
    assert not any(no_emb.plan(0, r).embeddings for r in range(6))
    with pytest.raises(ConfigError, match="freeze.window: 7"):
        freeze_schedule(model, "progressive", FreezeConfig(window=7), [1])


def test_random_schedule_is_seeded(model):
    a = freeze_schedule(model, "random", FreezeConfig(k=3), [1, 1, 1], seed=5)
    b = freeze_schedule(model, "random", FreezeConfig(k=3), [1, 1, 1], seed=5)
    plans = [[a.plan(c, r) for c in range(3)] for r in range(4)]
    assert plans == [[b.plan(c, r) for c in range(3)] for r in range(4)]
    assert all(p.blocks == tuple(random_allocation(5, c, r, 6, 3)) and not p.embeddings
               for r, row in enumerate(plans) for c, p in enumerate(row))
    other = freeze_schedule(model, "random", FreezeConfig(k=3), [1, 1, 1], seed=6)
    assert [[other.plan(c, r) for c in range(3)] for r in range(4)] != plans
    with pytest.raises(ConfigError, match="freeze.k: 7"):
        freeze_schedule(model, "random", FreezeConfig(k=7), [1])


@pytest.fixture(scope="module")
def flops(model):
    return FlopCache(model)


def measured_saving(model, plan, shape=(4, 32)):
    """The saving counted on the real model (not the meta twin the policy used)."""
    x = torch.randint(5, 256, shape, generator=torch.Generator().manual_seed(0))
    full = count_step_flops(model, x, x.clone())
    apply_freeze(model, plan)
    try:
        frozen = count_step_flops(model, x, x.clone())
    finally:
        apply_freeze(model, None)
    return 1.0 - frozen.total / full.total


@pytest.mark.parametrize("embeddings, expected", [
    # targets n_i/12 = 0.083, 0.167, 0.25, 0.5 against the tiny model's counted savings
    # (embeddings + bottom k: 0.133, 0.237, 0.341, 0.446, 0.550 for k = 1..5; blocks only,
    # k × 0.048)
    (True, [((0,), True), ((0, 1), True), ((0, 1, 2), True), ((0, 1, 2, 3, 4), True)]),
    (False, [((0, 1), False), ((0, 1, 2, 3), False), ((0, 1, 2, 3, 4, 5), False),
             ((0, 1, 2, 3, 4, 5), False)]),  # 0.5 is out of reach: clamped to 0.289
])
def test_budget_meets_each_clients_target_with_no_more_than_needed(model, flops, embeddings,
                                                                  expected):
    n_batches = [1, 2, 3, 6]
    cfg = FreezeConfig(target_saving=0.25, embeddings=embeddings)
    # without a cache (profile.count_flops: false) the policy makes its own
    s = freeze_schedule(model, "budget", cfg, n_batches, shape=(4, 32),
                        flops=flops if embeddings else None)
    assert s.static
    plans = [s.plan(c, 0) for c in range(len(n_batches))]
    assert [(p.blocks, p.embeddings) for p in plans] == expected
    record = s.record(model)
    candidates = budget_candidates(model, embeddings, (4, 32), flops)
    for c, (plan, rec) in enumerate(zip(plans, record)):
        target = rec["clamped_target_saving"]
        assert rec["target_saving"] == pytest.approx(0.25 * n_batches[c] * 4 / 12)
        achieved = measured_saving(model, plan)
        assert achieved == pytest.approx(rec["flops_saving"], abs=1e-12)
        assert achieved >= target - 1e-9
        # no candidate that freezes fewer parameters would have met the target
        assert all(x.saving < target for x in candidates
                   if x.frozen_params < rec["frozen_params"])
    assert record[3]["clamped_target_saving"] == pytest.approx(
        0.5 if embeddings else max(x.saving for x in candidates))


# ----------------------------------------------------------------------------- engine


class Probe:
    """Callbacks that know the round and client; a train_steps wrapper that snapshots."""

    def __init__(self):
        self.round = self.client = None
        self.seen = []

    def round_start(self, r, n, clients):
        self.round = r

    def client_start(self, client, steps):
        self.client = client

    def __getattr__(self, name):
        return lambda *a, **k: None


def test_engine_trains_each_round_with_its_plan(tiny, monkeypatch):
    import fdapt_core.fl.client as engine  # the client half runs the local loop

    probe = Probe()
    inner = engine.train_steps

    def train_steps(model, *args, **kwargs):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        st = inner(model, *args, **kwargs)
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        same = {n for n, p in model.named_parameters() if torch.equal(p, before[n])}
        probe.seen.append((probe.round, probe.client, frozen, same))
        return st

    monkeypatch.setattr(engine, "train_steps", train_steps)
    cfg = tiny("fl.rounds=2", "freeze.window=3")
    rec = run(cfg, "ffdapt-progressive", callbacks=probe)
    assert rec["freeze"] == [] and rec["freeze_policy"] == {
        "policy": "progressive", "static": False, "window": 3, "wrap": False, "embeddings": True}

    # rebuild the schedule on the run's model, independently of the run
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(run_dir(cfg, "ffdapt-progressive") / "model")
    schedule = freeze_schedule(model, "progressive", cfg.freeze, [1, 1])
    assert len(probe.seen) == 4
    for r, c, frozen, same in probe.seen:
        plan = schedule.plan(c, r)
        assert frozen == set(plan.names)
        assert frozen <= same  # frozen parameters bit-identical after local training
        assert not (same - frozen)  # every trainable one moved
    n = rec["model"]["parameters"]
    from fdapt_core.assembly import run_head

    cache = FlopCache(model, run_head(cfg, model, "mlm"))  # the run's sparse head
    for r, row in enumerate(rec["rounds"]):
        for c in row["clients"]:
            assert c["frozen_blocks"] == progressive_allocation(r, 6, 3)
            assert c["frozen_embeddings"] == (r > 0)
            plan = schedule.plan(c["client"], r)
            assert c["frozen_params"] == sum(p.numel() for k, p in model.named_parameters()
                                             if k in plan.names)
            assert c["bytes_up"] == 4 * (n - c["frozen_params"])  # only trainable tensors sent
            assert c["bytes_down"] == 4 * n
            step = cache.get(plan.names, (c["step_flops"]["batch"], 32))
            assert (c["step_flops"]["forward"], c["step_flops"]["backward"]) == \
                (step.forward, step.backward)
    # round 1 freezes the bottom (and embeddings): its whole backward pass is saved
    b0, b1 = (rec["rounds"][r]["clients"][0]["step_flops"]["backward"] for r in (0, 1))
    assert b1 < b0


def test_budget_run_records_the_saving_it_reaches(tiny):
    from transformers import AutoModelForMaskedLM

    cfg = tiny("fl.rounds=1", "freeze.target_saving=0.3", "partition.method=quantity")
    rec = run(cfg, "ffdapt-budget")
    from fdapt_core.assembly import run_head

    model = AutoModelForMaskedLM.from_pretrained(run_dir(cfg, "ffdapt-budget") / "model")
    cache = FlopCache(model, run_head(cfg, model, "mlm"))  # the run's sparse head
    assert rec["freeze_policy"]["policy"] == "budget" and rec["freeze_policy"]["static"]
    targets = [f["clamped_target_saving"] for f in rec["freeze"]]
    assert targets[1] > targets[0]  # quantity skew: client 1 has more data, saves more
    for f, c in zip(rec["freeze"], rec["rounds"][0]["clients"]):
        assert c["frozen_blocks"] == f["blocks"] and f["flops_saving"] >= f["clamped_target_saving"]
        # the engine's own count of the run agrees with the saving the policy measured
        s = c["step_flops"]
        full = cache.get(frozenset(), (s["batch"], 32)).total
        saved = 1 - (s["forward"] + s["backward"]) / full
        assert saved == pytest.approx(f["flops_saving"], abs=1e-12)
        assert c["bytes_up"] == 4 * (rec["model"]["parameters"] - f["frozen_params"])


# ----------------------------------------------------------------------------- end to end


from test_invariants import Stop, StopAfter  # noqa: E402 (shared with the resume tests)

@pytest.mark.slow
def test_cli_progressive_run_resumed_after_round_1_is_exact(tmp_path, cache_dir):
    """Two rounds (TINY); killed once round 1 of 2 is checkpointed, resumed by the CLI."""
    def sets(name):
        return [a for s in [*TINY, f"output_dir={tmp_path}",
                            f"cache_dir={cache_dir}", f"name={name}"] for a in ("--set", s)]

    def bench(*args):
        return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)

    from fdapt_core.config.run import build_config

    def cfg(name):
        return build_config({}, [*TINY, f"output_dir={tmp_path}",
                                 f"cache_dir={cache_dir}", f"name={name}"])

    run(cfg("straight"), "ffdapt-progressive")
    broken = cfg("broken")
    with pytest.raises(Stop):
        run(broken, "ffdapt-progressive", callbacks=StopAfter(0))
    p = bench("run", "--method", "ffdapt-progressive", "--resume", *sets("broken"))
    assert p.returncode == 0, p.stderr
    a = load_file(str(tmp_path / "straight" / "ffdapt-progressive" / "model" /
                      "model.safetensors"))
    b = load_file(str(run_dir(broken, "ffdapt-progressive") / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra = json.loads((tmp_path / "straight" / "ffdapt-progressive" / "record.json").read_text())
    rb = json.loads((run_dir(broken, "ffdapt-progressive") / "record.json").read_text())
    assert rb["resumed_from_round"] == 1
    assert [r["eval_loss"] for r in ra["rounds"]] == [r["eval_loss"] for r in rb["rounds"]]
    assert [[c["frozen_blocks"] for c in r["clients"]] for r in rb["rounds"]] == \
        [[[2, 3, 4, 5]] * 2, [[0, 3, 4, 5]] * 2]  # the resumed round has another plan
    assert ra["totals"]["train_flops"] == rb["totals"]["train_flops"]
    assert ra["totals"]["bytes_up"] == rb["totals"]["bytes_up"]


def test_every_named_policy_has_a_schedule_and_no_other():
    """The policy names (config choices, method names) and the schedules that build them are
    one registry: a name without a builder, or a builder without a name, fails here."""
    from fdapt_core.freeze.policies import SCHEDULES
    from fdapt_core.freeze.allocation import POLICIES

    assert tuple(SCHEDULES) == POLICIES
