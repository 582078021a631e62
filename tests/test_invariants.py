"""The harness's invariants (DESIGN.md): equivalences that catch real bugs."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from fdapt_core.runner import run

from fdapt_core.runs import run_dir


def final_weights(cfg, method):
    return load_file(str(run_dir(cfg, method) / "model" / "model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_one_client_one_round_fdapt_is_central(tiny):
    cfg = tiny("fl.clients=1", "fl.rounds=1")
    rc, rf = run(cfg, "central"), run(cfg, "fdapt")
    assert rc["totals"]["steps"] == rf["totals"]["steps"] > 0
    assert_same_weights(final_weights(cfg, "central"), final_weights(cfg, "fdapt"))
    assert rc["final_eval"]["loss"] == rf["final_eval"]["loss"]


class Stop(Exception):
    pass


class StopAfter:
    """Callbacks that kill the run once round `n` is checkpointed."""

    def __init__(self, n):
        self.n = n

    def round_end(self, r, row):
        if r == self.n:
            raise Stop

    def __getattr__(self, name):
        return lambda *a, **k: None


@pytest.mark.parametrize("method, extra", [
    ("fdapt", ()),
    ("central", ()),
    ("ffdapt", ("train.optimizer_reset=persist", "fl.client_fraction=0.5")),
])
@pytest.mark.slow
def test_resume_reaches_the_same_weights_and_record(tiny, method, extra):
    straight = tiny("fl.rounds=3", "name=straight", *extra)
    broken = tiny("fl.rounds=3", "name=broken", *extra)
    rec_a = run(straight, method)
    with pytest.raises(Stop):
        run(broken, method, callbacks=StopAfter(0))
    rec_b = run(broken, method, resume=True)
    assert rec_b["resumed_from_round"] == 1
    assert_same_weights(final_weights(straight, method), final_weights(broken, method))
    strip = lambda rec: [(r["round"], r["eval_loss"], [(c["client"], c["steps"], c["loss"])
                                                      for c in r["clients"]])
                         for r in rec["rounds"]]
    assert strip(rec_a) == strip(rec_b)


def test_resume_refuses_another_config(tiny):
    from fdapt_core.checkpoint import ResumeError

    cfg = tiny("fl.rounds=1")
    run(cfg, "fdapt")
    with pytest.raises(ResumeError, match="config differs"):
        run(tiny("fl.rounds=2"), "fdapt", resume=True)
    with pytest.raises(ResumeError, match="no run"):
        run(tiny("name=other"), "fdapt", resume=True)


@pytest.mark.slow
def test_frozen_blocks_unchanged_and_not_sent(tiny):
    cfg = tiny("fl.rounds=1", "fl.clients=2", "freeze.policy=paper")
    rec = run(cfg, "ffdapt")
    # 2 equal-ish clients: the study's rule gives each 3 blocks, 0-2 and 3-5
    assert [f["blocks"] for f in rec["freeze"]] == [[0, 1, 2], [3, 4, 5]]
    n = rec["model"]["parameters"]
    for c in rec["rounds"][0]["clients"]:
        assert c["bytes_up"] == 4 * (n - c["frozen_params"])  # fp32, frozen blocks not sent
        assert c["bytes_down"] == 4 * n
    sent = run(tiny("fl.rounds=1", "fl.clients=2", "fl.send_frozen=true", "name=sent"), "ffdapt")
    assert all(c["bytes_up"] == 4 * n for c in sent["rounds"][0]["clients"])
    # FedAvg counts the server's copy for unsent blocks: the same model as sending them
    assert_same_weights(final_weights(cfg, "ffdapt"),
                        final_weights(tiny("name=sent"), "ffdapt"))


def test_local_training_leaves_frozen_parameters_bit_identical(tiny):
    from fdapt_core.freeze.policies import apply_freeze, plan_freezing
    from fdapt_core.fl.local import BatchStream, make_optimizer, train_steps
    from fdapt_core.model import build_from_preset, TokenizerInfo
    from fdapt_core.objective import MaskedLM

    cfg = tiny()
    model = build_from_preset("tiny", 256, 64)
    plans = plan_freezing(model, "bottom", cfg.freeze, [4, 4])
    apply_freeze(model, plans[0])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt, sched = make_optimizer(model, cfg.train, 3, torch.device("cpu"))
    blocks = torch.randint(5, 256, (24, 16))
    tok = TokenizerInfo(vocab_size=256, mask_id=4, pad_id=0, special_ids=(0, 1, 2, 3, 4))
    train_steps(model, blocks, BatchStream(24, 8, lambda e: e).take(0, 3), optimizer=opt,
                scheduler=sched, cfg=cfg.train, objective=MaskedLM(tok),
                mask_gen=torch.Generator(),
                device=torch.device("cpu"))
    for n, p in model.named_parameters():
        if n in plans[0].names:
            assert torch.equal(p, before[n]), n
        else:
            assert not torch.equal(p, before[n]), n
    # bottom freezes the embeddings, and with them the tied output projection
    assert "distilbert.embeddings.word_embeddings.weight" in plans[0].names
    assert model.vocab_projector.weight is model.distilbert.embeddings.word_embeddings.weight


class StopDuring:
    """Callbacks that request a stop at step `step` of client `client` in round `round`."""

    def __init__(self, round_, client, step):
        self.target, self.round, self.client = (round_, client, step), None, None

    def round_start(self, r, n, clients):
        self.round = r

    def client_start(self, client, steps):
        self.client = client

    def step(self, s):
        from fdapt_core import interrupt

        if (self.round, self.client, s) == self.target:
            interrupt.request_stop()

    def __getattr__(self, name):
        return lambda *a, **k: None


@pytest.mark.slow
@pytest.mark.parametrize("method, client", [("fdapt", 1), ("ffdapt", 2), ("central", 0)])
def test_stop_mid_round_then_resume_is_exact(tiny, method, client):
    from fdapt_core import interrupt
    from fdapt_core.interrupt import StopRequested

    straight = tiny("fl.rounds=3", "fl.clients=3", "name=straight")
    broken = tiny("fl.rounds=3", "fl.clients=3", "name=broken")
    rec_a = run(straight, method)
    try:
        with pytest.raises(StopRequested) as e:
            run(broken, method, callbacks=StopDuring(1, client, 2))
    finally:
        interrupt.clear()
    assert e.value.exit_code == 128 + 15
    ck = run_dir(broken, method) / "checkpoints"
    assert (ck / "partial-0001").is_dir() == (method != "central")
    import json
    assert json.loads((run_dir(broken, method) / "record.json").read_text())["status"] \
        == "interrupted"
    rec_b = run(broken, method, resume=True)
    assert not (ck / "partial-0001").exists()
    assert_same_weights(final_weights(straight, method), final_weights(broken, method))
    assert [r["eval_loss"] for r in rec_a["rounds"]] == [r["eval_loss"] for r in rec_b["rounds"]]
    assert [[c["client"] for c in r["clients"]] for r in rec_b["rounds"]] \
        == [[c["client"] for c in r["clients"]] for r in rec_a["rounds"]]


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path):
    import torch

    from fdapt_core.checkpoint import Checkpoints

    ck = Checkpoints(tmp_path)
    for r in range(3):
        ck.save(r, {"w": torch.full((4,), float(r))}, {"round_state": r})
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["round-0001",
                                                                        "round-0002"]
    blob = tmp_path / "round-0002" / "model.safetensors"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the weights
    blob.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="round-0002 is damaged"):
        r, params, state = ck.load_latest()
    assert r == 1 and torch.equal(params["w"], torch.full((4,), 1.0))
    assert state == {"round_state": 1}


@pytest.mark.slow
def test_central_trains_the_same_tokens_as_fdapt(tiny):
    """Clients end epochs on short batches; central's are full. Matching steps gave central
    more tokens (+1.7 % on the default config); the budget is matched in sequences."""
    cfg = tiny("fl.clients=3", "train.batch_size=3", "data.synthetic.n_docs=40")
    fed, cen = run(cfg, "fdapt"), run(cfg, "central")
    for rf, rc in zip(fed["rounds"], cen["rounds"]):
        assert sum(c["tokens"] for c in rf["clients"]) == rc["clients"][0]["tokens"]
    assert fed["totals"]["tokens"] == cen["totals"]["tokens"]
    assert cen["totals"]["steps"] <= fed["totals"]["steps"]


def test_a_sequence_budget_resumes_mid_batch():
    from fdapt_core.fl.local import BatchStream

    s = BatchStream(10, 4, lambda epoch: epoch)
    whole = [i for b in s.take(0, 9) for i in b]  # 3 epochs of batches 4, 4, 2
    a, b = list(s.take_sequences(0, 7)), list(s.take_sequences(7, 16))
    assert [len(x) for x in a] == [4, 3] and [len(x) for x in b] == [1, 2, 4, 4, 2, 3]
    assert [i for x in a + b for i in x] == whole[:23]
    assert s.count_batches(7, 16) == 6
