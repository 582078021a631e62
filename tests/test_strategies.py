"""Server strategies (fdapt_core/fl/strategies): each update against an independent numpy
computation, FedProx's proximal gradient, state round trips through checkpoints and resumed
runs, method names and config errors."""
from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fdapt_core.checkpoint import Checkpoints
from fdapt_core.config.run import FLConfig, build_config
from fdapt_core.errors import ConfigError
from fdapt_core.fl.fedavg import FedAvg as FedAvgOld
from fdapt_core.fl.strategies import (STRATEGIES, DiLoCo, FedAdam, FedAvg, FedAvgM, FedProx,
                                      FedYogi, build_strategy)
from fdapt_core.methods import parse_method
from fdapt_core.runner import run
from fdapt_core.runs import run_dir
from tests.conftest import ROOT
from tests.test_invariants import Stop, StopAfter, StopDuring, assert_same_weights, final_weights

FAST = ("profile.count_flops=false",)  # runs here need no FLOP counts

# ----------------------------------------------------------------------------- unit

SHAPES = {"a": (3,), "b": (2, 2), "frozen_on_1": (2,)}


def uploads_for(seed: int, n_rounds: int = 3):
    """Per round, two clients' uploads (client 1 never sends `frozen_on_1`), as numpy."""
    rng = np.random.default_rng(seed)
    g0 = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    rounds = []
    for _ in range(n_rounds):
        ups = {0: {k: rng.normal(scale=0.5, size=s).astype(np.float32)
                   for k, s in SHAPES.items()},
               1: {k: rng.normal(scale=0.5, size=s).astype(np.float32)
                   for k, s in SHAPES.items() if k != "frozen_on_1"}}
        rounds.append(ups)
    return g0, rounds


WEIGHTS = {0: 1.0, 1: 3.0}


def reference(kind: str, g0, rounds, lr, beta=0.9, b1=0.9, b2=0.99, tau=1e-3):
    """The strategies' arithmetic written out in float64 numpy, round by round.

    Uploads are the clients' *models*; the client's new model is global + its upload. Under
    frozen_aggregation=global an unsent parameter counts the global copy."""
    w = {k: v.astype(np.float64) for k, v in g0.items()}
    mom = {k: np.zeros_like(v) for k, v in w.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v = {k: np.full_like(x, tau ** 2) for k, x in w.items()}
    out = []
    for ups in rounds:
        new = {}
        for k in w:
            total = sum(WEIGHTS.values())
            avg = sum(WEIGHTS[c] * (w[k] + ups[c][k] if k in ups[c] else w[k])
                      for c in ups) / total
            d = avg - w[k]
            if kind == "fedavgm":
                mom[k] = beta * mom[k] + d
                new[k] = w[k] + lr * mom[k]
            else:
                m[k] = b1 * m[k] + (1 - b1) * d
                if kind == "fedadam":
                    v[k] = b2 * v[k] + (1 - b2) * d * d
                else:  # fedyogi
                    v[k] = v[k] - (1 - b2) * d * d * np.sign(v[k] - d * d)
                new[k] = w[k] + lr * m[k] / (np.sqrt(v[k]) + tau)
        w = new
        out.append(dict(w))
    return out


def play(strategy, g0, rounds):
    """Run the strategy over the rounds; the global after each, as numpy."""
    g = {k: torch.from_numpy(v.copy()) for k, v in g0.items()}
    out = []
    for ups in rounds:
        strategy.begin_round(g)
        for c, up in ups.items():
            strategy.accumulate(c, {k: g[k] + torch.from_numpy(x) for k, x in up.items()},
                                WEIGHTS[c])
        g = strategy.finish()
        out.append({k: t.numpy().astype(np.float64) for k, t in g.items()})
    return out


@pytest.mark.parametrize("kind, make, hp", [
    ("fedavgm", lambda: FedAvgM(server_lr=0.7, momentum=0.8), dict(lr=0.7, beta=0.8)),
    ("fedavgm", lambda: FedAvgM(), dict(lr=1.0, beta=0.9)),  # the defaults
    ("fedadam", lambda: FedAdam(server_lr=0.1), dict(lr=0.1)),
    ("fedadam", lambda: FedAdam(), dict(lr=1e-2)),
    ("fedadam", lambda: FedAdam(server_lr=0.05, beta1=0.5, beta2=0.9, tau=0.1),
     dict(lr=0.05, b1=0.5, b2=0.9, tau=0.1)),
    ("fedyogi", lambda: FedYogi(server_lr=0.1), dict(lr=0.1)),
    ("fedyogi", lambda: FedYogi(server_lr=0.05, beta1=0.5, beta2=0.9, tau=0.1),
     dict(lr=0.05, b1=0.5, b2=0.9, tau=0.1)),
])
def test_server_step_matches_a_numpy_computation(kind, make, hp):
    g0, rounds = uploads_for(1)
    got, want = play(make(), g0, rounds), reference(kind, g0, rounds, **hp)
    for r, (a, b) in enumerate(zip(got, want)):
        for k in SHAPES:
            np.testing.assert_allclose(a[k], b[k], rtol=2e-6, atol=2e-6, err_msg=f"{r} {k}")


@pytest.mark.parametrize("lr, momentum", [(None, 0.9), (0.5, 0.6)])
def test_diloco_is_torch_nesterov_sgd_on_the_pseudo_gradient(lr, momentum):
    """DiLoCo's outer step is torch.optim.SGD(nesterov=True) with the pseudo-gradient
    global − average as the gradient (defaults: lr 0.7, momentum 0.9)."""
    g0, rounds = uploads_for(2)
    got = play(DiLoCo(server_lr=lr, momentum=momentum), g0, rounds)
    w = {k: torch.nn.Parameter(torch.from_numpy(v.astype(np.float64))) for k, v in g0.items()}
    opt = torch.optim.SGD(list(w.values()), lr=lr or 0.7, momentum=momentum, nesterov=True)
    total = sum(WEIGHTS.values())
    for r, ups in enumerate(rounds):
        for k, p in w.items():
            avg = sum(WEIGHTS[c] * (p.detach() + torch.from_numpy(ups[c][k]).double()
                                    if k in ups[c] else p.detach()) for c in ups) / total
            p.grad = p.detach() - avg
        opt.step()
        for k in SHAPES:
            np.testing.assert_allclose(got[r][k], w[k].detach().numpy(), rtol=2e-6, atol=2e-6,
                                       err_msg=f"{r} {k}")


def test_fedyogi_second_moment_rule_on_hand_values():
    # one coordinate, v starts at tau² = 1e-6; Δ = 0.5 then Δ = 0 (v > Δ²: v shrinks by 0)
    s = FedYogi(server_lr=1.0, beta1=0.5, beta2=0.9, tau=1e-3)
    g = {"w": torch.tensor([1.0], dtype=torch.float64)}
    s.begin_round(g)
    s.accumulate(0, {"w": torch.tensor([1.5], dtype=torch.float64)}, 1.0)
    g = s.finish()
    v1 = 1e-6 + 0.1 * 0.25  # v − (1−β2)Δ²·sign(v − Δ²), sign = −1
    m1 = 0.5 * 0.5
    assert s.state["v"]["w"].item() == pytest.approx(v1, rel=1e-12)
    assert g["w"].item() == pytest.approx(1.0 + m1 / (np.sqrt(v1) + 1e-3), rel=1e-12)
    s.begin_round(g)
    s.accumulate(0, {"w": g["w"].clone()}, 1.0)  # Δ = 0
    g2 = s.finish()
    assert s.state["v"]["w"].item() == pytest.approx(v1, rel=1e-12)  # sign · 0 = 0
    assert g2["w"].item() == pytest.approx(g["w"].item() + 0.5 * m1 / (np.sqrt(v1) + 1e-3),
                                           rel=1e-12)


def test_fedavgm_without_momentum_is_fedavg():
    g0, rounds = uploads_for(2)
    a, b = play(FedAvgM(server_lr=1.0, momentum=0.0), g0, rounds), play(FedAvg(), g0, rounds)
    for x, y in zip(a, b):
        for k in SHAPES:
            np.testing.assert_allclose(x[k], y[k], rtol=1e-6, atol=1e-7)


def test_unsent_parameters_and_empty_rounds_take_no_step():
    s = FedAdam(frozen_aggregation="senders", server_lr=0.1)
    g = {"sent": torch.tensor([1.0, 2.0]), "nobody": torch.tensor([3.0])}
    s.begin_round(g)
    s.accumulate(0, {"sent": torch.tensor([2.0, 2.0])}, 1.0)
    new = s.finish()
    assert torch.equal(new["nobody"], g["nobody"]) and "nobody" not in s.state["m"]
    assert not torch.equal(new["sent"], g["sent"]) and s.steps == 1
    # the coordinate whose Δ is 0 does not move either (m = 0)
    assert new["sent"][1].item() == 2.0
    before = copy.deepcopy(s.state_dict())
    s.begin_round(new)  # nobody arrives
    again = s.finish()
    assert all(torch.equal(again[k], new[k]) for k in g) and s.steps == 1
    assert torch.equal(s.state_dict()["m"]["sent"], before["m"]["sent"])


def test_fedavg_is_the_same_class_everywhere_and_keeps_no_state():
    assert FedAvg is FedAvgOld and FedProx.__mro__[1] is FedAvg
    assert all(issubclass(c, FedAvg) for c in STRATEGIES.values())
    assert FedAvg().state_dict() == {} and FedProx().state_dict() == {}


def test_state_round_trips_through_a_checkpoint(tmp_path):
    g0, rounds = uploads_for(3, n_rounds=3)
    for make in (lambda: FedAvgM(server_lr=0.5), lambda: FedAdam(server_lr=0.1),
                 lambda: FedYogi(server_lr=0.1)):
        straight = play(make(), g0, rounds)
        first = make()
        after1 = play(first, g0, rounds[:1])[0]
        assert first.state_dict()["steps"] == 1
        ck = Checkpoints(tmp_path / first.name)
        ck.save(0, {k: torch.from_numpy(v.astype(np.float32)) for k, v in after1.items()},
                {"strategy": first.state_dict()})
        _, params, state = ck.load_latest()
        second = make()
        second.load_state_dict(state["strategy"])
        assert second.steps == 1
        for buf in second.buffers:  # float32 state, keyed by parameter name
            assert set(second.state[buf]) == set(SHAPES)
            assert all(t.dtype == torch.float32 for t in second.state[buf].values())
        rest = play(second, {k: v.numpy() for k, v in params.items()}, rounds[1:])
        for a, b in zip(straight[1:], rest):
            for k in SHAPES:
                assert np.array_equal(a[k], b[k]), (first.name, k)


def test_build_strategy_reads_the_config():
    fl = FLConfig()
    assert type(build_strategy(fl)) is FedAvg
    s = build_strategy(dataclasses.replace(fl, strategy="fedprox", prox_mu=0.3))
    assert type(s) is FedProx and s.prox_mu == 0.3 and FedAvg().prox_mu == 0.0
    s = build_strategy(dataclasses.replace(fl, strategy="fedavgm"))
    assert (s.server_lr, s.momentum) == (1.0, 0.9)
    s = build_strategy(dataclasses.replace(fl, strategy="fedadam", frozen_aggregation="senders"))
    assert (s.server_lr, s.beta1, s.beta2, s.tau, s.frozen_aggregation) \
        == (1e-2, 0.9, 0.99, 1e-3, "senders")
    s = build_strategy(dataclasses.replace(fl, strategy="fedyogi", server_lr=0.3, server_tau=0.1))
    assert type(s) is FedYogi and (s.server_lr, s.tau) == (0.3, 0.1)
    # the config's choices are exactly the registry
    choices = next(f for f in dataclasses.fields(FLConfig) if f.name == "strategy").metadata
    assert tuple(choices["choices"]) == tuple(STRATEGIES)


# ----------------------------------------------------------------------------- FedProx

def test_proximal_gradient_in_the_local_loop(tiny):
    """SGD, no clipping: one step with mu moves each trainable parameter by an extra
    −lr·mu·(w − w_ref) compared with the same step without; frozen ones stay."""
    from fdapt_core.fl.local import BatchStream, train_steps
    from fdapt_core.freeze.policies import apply_freeze, plan_freezing
    from fdapt_core.model import TokenizerInfo, build_from_preset
    from fdapt_core.objective import MaskedLM

    cfg = tiny()
    train_cfg = dataclasses.replace(cfg.train, max_grad_norm=0.0)
    torch.manual_seed(0)
    base = build_from_preset("tiny", 256, 64)
    ref = {n: p.detach().clone() for n, p in base.named_parameters()}
    with torch.no_grad():
        for p in base.parameters():
            p.add_(torch.randn_like(p), alpha=0.01)  # w ≠ w_ref
    plans = plan_freezing(base, "bottom", cfg.freeze, [4, 4])
    apply_freeze(base, plans[0])
    w0 = {n: p.detach().clone() for n, p in base.named_parameters()}
    blocks = torch.randint(5, 256, (16, 16))
    tok = TokenizerInfo(vocab_size=256, mask_id=4, pad_id=0, special_ids=(0, 1, 2, 3, 4))
    lr, mu = 0.1, 0.5
    out, losses = {}, {}
    for m in (0.0, mu):
        model = copy.deepcopy(base)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        torch.manual_seed(1)  # dropout
        st = train_steps(model, blocks, BatchStream(16, 8, lambda e: e).take(0, 1),
                         optimizer=opt, scheduler=sched, cfg=train_cfg,
                         objective=MaskedLM(tok),
                         mask_gen=torch.Generator().manual_seed(2), device=torch.device("cpu"),
                         prox_mu=m, prox_ref=ref if m else None)
        out[m] = {n: p.detach().clone() for n, p in model.named_parameters()}
        losses[m] = st.loss
    assert losses[0.0] == losses[mu]  # the reported loss is the MLM loss
    for n, p in base.named_parameters():
        if n in plans[0].names:
            assert torch.equal(out[mu][n], w0[n]) and torch.equal(out[0.0][n], w0[n]), n
        else:
            want = -lr * mu * (w0[n] - ref[n])
            torch.testing.assert_close(out[mu][n] - out[0.0][n], want, rtol=1e-4, atol=5e-7)


def test_fedprox_passes_mu_and_the_global_model_to_the_clients(tiny, monkeypatch):
    from fdapt_core.fl import client as engine  # the client half runs the local loop

    seen = []
    original = engine.train_steps

    def spy(model, *args, **kwargs):
        seen.append((kwargs["prox_mu"], {k: v.clone() for k, v in kwargs["prox_ref"].items()},
                     {k: v.detach().clone() for k, v in model.named_parameters()}))
        return original(model, *args, **kwargs)

    monkeypatch.setattr(engine, "train_steps", spy)
    cfg = tiny("fl.rounds=1", "fl.prox_mu=0.05", *FAST)
    rec = run(cfg, "fdapt-fedprox")
    assert rec["config"]["fl"]["strategy"] == "fedprox" and len(seen) == 2
    for mu, ref, start in seen:  # each client starts from the reference it is pulled to
        assert mu == 0.05 and ref.keys() == start.keys()
        assert all(torch.equal(ref[k], start[k]) for k in ref)


# ----------------------------------------------------------------------------- runs

@pytest.mark.parametrize("method, stopper", [
    ("fdapt-fedadam", lambda: StopAfter(0)),
    ("ffdapt-paper-fedavgm", lambda: StopDuring(1, 1, 2)),  # a partial-round checkpoint
])
@pytest.mark.slow
def test_resumed_run_with_server_state_is_exact(tiny, method, stopper):
    from fdapt_core import interrupt
    from fdapt_core.interrupt import StopRequested

    straight, broken = tiny("name=straight", *FAST), tiny("name=broken", *FAST)
    rec_a = run(straight, method)
    try:
        with pytest.raises((Stop, StopRequested)):
            run(broken, method, callbacks=stopper())
    finally:
        interrupt.clear()
    _, _, state = Checkpoints(run_dir(broken, method) / "checkpoints").load_latest()
    server = state["trainer"]["strategy"]
    assert server["steps"] == 1  # the server state was checkpointed, tensors by name
    assert all(len(server[b]) > 0 for b in server if b != "steps")
    rec_b = run(broken, method, resume=True)
    assert rec_b["resumed_from_round"] == 1
    assert_same_weights(final_weights(straight, method), final_weights(broken, method))
    assert [r["eval_loss"] for r in rec_a["rounds"]] == [r["eval_loss"] for r in rec_b["rounds"]]


def test_method_names_set_the_strategy():
    cfg = build_config({})
    assert parse_method("fdapt-fedadam", cfg)[1].fl.strategy == "fedadam"
    base, c = parse_method("ffdapt-bottom-fedprox", cfg)
    assert (base, c.freeze.policy, c.fl.strategy) == ("ffdapt", "bottom", "fedprox")
    base, c = parse_method("ffdapt-fedyogi", cfg)
    assert (base, c.freeze.policy, c.fl.strategy) == ("ffdapt", cfg.freeze.policy, "fedyogi")
    assert parse_method("fdapt", cfg)[1].fl.strategy == "fedavg"
    for bad in ("central-fedadam", "fdapt-fedfoo", "fdapt-paper", "ffdapt-fedadam-paper"):
        with pytest.raises(ConfigError, match="strategy in fedavg, fedprox"):
            parse_method(bad, cfg)


@pytest.mark.parametrize("override, words", [
    ("fl.server_tau=0", ["fl.server_tau", "minimum"]),
    ("fl.server_beta2=1.5", ["fl.server_beta2", "maximum"]),
    ("fl.prox_mu=-1", ["fl.prox_mu", "minimum"]),
    ("fl.server_lr=fast", ["fl.server_lr", "number"]),
])
def test_bad_strategy_parameters_name_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        build_config({}, [override])
    assert all(w in str(e.value) for w in words)


@pytest.mark.slow
def test_unknown_strategy_is_one_line_exit_2(tmp_path):
    out = tmp_path / "results"
    p = subprocess.run([sys.executable, "-m", "bench", "run", "--method", "fdapt", "--set",
                        "fl.strategy=fedfoo", "--set", f"output_dir={out}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "COLUMNS": "300"})  # rich wraps at 80 otherwise
    assert p.returncode == 2, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "fl.strategy" in lines[0]
    assert "fedyogi" in lines[0] and "Traceback" not in p.stderr + p.stdout
    assert not out.exists()
