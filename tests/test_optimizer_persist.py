"""`train.optimizer_reset: persist` under per-round freeze policies: AdamW state by name.

A client's frozen set may change every round (random, progressive). Its persisted optimizer
state is kept by parameter name, so a parameter resumes the moments it left with, however the
trainable set around it changed, and one that sat out a round is not handed another's.
"""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from fdapt_core.checkpoint import Checkpoints, ResumeError
from fdapt_core.fl import client as engine  # the client half runs the local loop
from fdapt_core.fl.client import Client
from fdapt_core.runner import run
from fdapt_core.runs import run_dir

from test_invariants import StopDuring, assert_same_weights, final_weights

PERSIST = ("train.optimizer_reset=persist", "fl.rounds=3")


class Spy:
    """Callbacks that say which client and round is training, and a `train_steps` wrapper
    that records, per client round, each trainable parameter's AdamW state (by name) as
    loaded and as left, and the gradient AdamW saw at every step."""

    def __init__(self, monkeypatch):
        self.at, self.log = None, {}
        real = engine.train_steps

        def train_steps(model, blocks, batches, *, optimizer, **kw):
            names = {id(p): n for n, p in model.named_parameters()}
            trainable = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
            state = lambda: {names[id(p)]: {k: v.clone() for k, v in s.items()}
                             for p, s in optimizer.state.items()}
            entry = {"trainable": trainable, "before": state(), "grads": []}

            def record(opt, args, kwargs):  # after clipping: what AdamW steps on
                entry["grads"].append({names[id(p)]: p.grad.clone()
                                       for g in opt.param_groups for p in g["params"]
                                       if p.grad is not None})

            optimizer.register_step_pre_hook(record)
            out = real(model, blocks, batches, optimizer=optimizer, **kw)
            entry["after"] = state()
            self.log[self.at] = entry
            return out

        monkeypatch.setattr(engine, "train_steps", train_steps)

    def round_start(self, r, n, clients):
        self.round = r

    def client_start(self, client, steps):
        self.at = (client, self.round)

    def __getattr__(self, name):
        return lambda *a, **k: None


def adamw_moments(state: dict, grads: list[torch.Tensor], beta1=0.9, beta2=0.999) -> dict:
    """AdamW's moments after these gradients, from `state` (empty: a fresh parameter); the
    same float32 operations as torch's, so the result agrees to the last bits or so."""
    m = state["exp_avg"].clone() if state else torch.zeros_like(grads[0])
    v = state["exp_avg_sq"].clone() if state else torch.zeros_like(grads[0])
    step = float(state["step"]) if state else 0.0
    for g in grads:
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        step += 1
    return {"exp_avg": m, "exp_avg_sq": v, "step": step}


@pytest.mark.slow
def test_a_parameter_resumes_its_own_moments_after_a_frozen_round(tiny, monkeypatch):
    """ffdapt-random: each client freezes 2 of the 6 same-shaped blocks, drawn anew every
    round. Every parameter must start a round with the state it had after the last round it
    trained, and end it advanced by exactly that round's own gradients."""
    spy = Spy(monkeypatch)
    rec = run(tiny(*PERSIST), "ffdapt-random", callbacks=spy)
    rounds, clients = range(3), range(2)
    assert sorted(spy.log) == [(c, r) for c in clients for r in rounds]
    sat_out = 0  # parameters that trained, sat a round out, then trained again
    for c in clients:
        last: dict[str, dict] = {}  # name -> its state after the last round it trained
        history: dict[str, list[int]] = {}
        for r in rounds:
            entry = spy.log[(c, r)]
            frozen = next(x["frozen_blocks"] for x in rec["rounds"][r]["clients"]
                          if x["client"] == c)
            assert {int(re.search(r"layer\.(\d+)\.", n).group(1)) for n in entry["trainable"]
                    if ".layer." in n} == set(range(6)) - set(frozen)
            for n in entry["trainable"]:
                loaded = entry["before"].get(n, {})
                assert loaded.keys() == last.get(n, {}).keys(), (c, r, n)
                for k in loaded:
                    assert torch.equal(loaded[k], last[n][k]), (c, r, n, k)
                want = adamw_moments(loaded, [g[n] for g in entry["grads"]])
                got = entry["after"][n]
                assert float(got["step"]) == want["step"], (c, r, n)
                for k in ("exp_avg", "exp_avg_sq"):
                    torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-10)
                last[n] = got
                history.setdefault(n, []).append(r)
        sat_out += sum(h == [0, 2] for h in history.values())
    assert sat_out > 0  # the seed gives the case this test is about


@pytest.mark.slow
def test_progressive_with_persisted_optimizer_counts_each_blocks_own_steps(tiny):
    """The window moves up a block a round and the embeddings freeze after round 0, so the
    trainable set changes size every round. In the last checkpoint, each block's AdamW step
    count is the steps of the rounds it trained in, and the embeddings keep round 0's."""
    cfg = tiny(*PERSIST)
    rec = run(cfg, "ffdapt-progressive")
    _, _, state = Checkpoints(run_dir(cfg, "ffdapt-progressive") / "checkpoints").load_latest()
    kept = state["trainer"]["client_opt"]
    for c in range(2):
        rows = [next(x for x in r["clients"] if x["client"] == c) for r in rec["rounds"]]
        moments = kept[c]["moments"]
        for b in range(6):
            want = sum(x["steps"] for x in rows if b not in x["frozen_blocks"])
            steps = {float(s["step"]) for n, s in moments.items() if f".layer.{b}." in n}
            assert steps == ({want} if want else set()), (c, b)
        emb = {float(s["step"]) for n, s in moments.items() if ".embeddings." in n}
        assert rows[1]["frozen_embeddings"] and emb == {rows[0]["steps"]}


@pytest.mark.slow
def test_random_persist_stopped_mid_round_resumes_exactly(tiny):
    """The partial-round checkpoint holds the finished clients' state by name and the
    interrupted client's as it was before its round."""
    from fdapt_core import interrupt
    from fdapt_core.interrupt import StopRequested

    straight, broken = tiny(*PERSIST, "name=straight"), tiny(*PERSIST, "name=broken")
    run(straight, "ffdapt-random")
    try:
        with pytest.raises(StopRequested):
            run(broken, "ffdapt-random", callbacks=StopDuring(1, 1, 2))
    finally:
        interrupt.clear()
    rec = run(broken, "ffdapt-random", resume=True)
    assert rec["resumed_from_round"] == 1
    assert_same_weights(final_weights(straight, "ffdapt-random"),
                        final_weights(broken, "ffdapt-random"))


def test_a_checkpoint_with_positional_optimizer_state_is_refused():
    old = {"strategy": {}, "accepted_norms": [],
           "client_opt": {0: {"opt": {"state": {}, "param_groups": []}, "sched": {}}}}
    with pytest.raises(ResumeError, match="by position"):
        Client(SimpleNamespace(), codec=None).load_state_dict(old)
