"""Client faults: injection is seeded, the screen rejects what it should, runs survive."""
from __future__ import annotations

import math

import pytest
import torch

from fdapt_core.config.run import FaultsConfig
from fdapt_core.fl.faults import Faults
from fdapt_core.runner import run


def test_draws_are_seeded_and_follow_the_rates():
    f = Faults(FaultsConfig(dropout=0.2, corrupt=0.1), seed=0, window=8)
    draws = [f.draw(r, c) for r in range(200) for c in range(10)]
    assert draws == [Faults(FaultsConfig(dropout=0.2, corrupt=0.1), 0, 8).draw(r, c)
                     for r in range(200) for c in range(10)]
    assert 0.17 < draws.count("drop") / 2000 < 0.23
    corrupted = sum(d in ("nan", "inf", "scale") for d in draws) / 2000
    assert 0.06 < corrupted < 0.10  # 10 % of the 80 % that did not drop
    assert all(d is None for d in (Faults(FaultsConfig(), 0, 8).draw(r, 0) for r in range(50)))


def screen(f: Faults, sent, g):
    """The server's two halves in the order `Server.settle` runs them."""
    reason, norm = f.check(sent, g)
    return (reason or f.judge(norm)), norm


def test_screen_rejects_non_finite_and_outsized_updates():
    g = {"a": torch.zeros(4), "b": torch.zeros(2)}
    f = Faults(FaultsConfig(max_norm_ratio=10.0), seed=0, window=4)
    ok = {"a": torch.ones(4), "b": torch.zeros(2)}
    reason, norm = screen(f, ok, g)
    assert reason is None and norm == pytest.approx(2.0)
    f.accept(norm)
    for kind in ("nan", "inf"):
        bad = f.corrupt(kind, ok, g)
        assert screen(f, bad, g)[0].startswith("non-finite values in a")
        assert torch.isfinite(ok["a"]).all()  # the client's own tensors are untouched
    scaled = Faults(FaultsConfig(corrupt_scale=100.0), 0, 4).corrupt("scale", ok, g)
    reason, norm = screen(f, scaled, g)
    assert norm == pytest.approx(200.0) and "more than 10" in reason
    assert screen(f, {"a": torch.full((4,), 9.0), "b": torch.zeros(2)}, g)[0] is None  # 18 < 20


@pytest.mark.slow
def test_faulty_run_completes_records_why_and_stays_close(tiny):
    base = ["fl.rounds=4", "fl.clients=5", "data.synthetic.n_docs=120"]
    clean = run(tiny(*base, "name=clean"), "fdapt")
    # seed 0 at these rates draws drop-outs, nan and inf uploads, and two `scale` uploads (100 ×
    # the update) that arrive after other updates were accepted, so the norm screen has a
    # median to hold them to
    faulty = run(tiny(*base, "name=faulty", "faults.dropout=0.2", "faults.corrupt=0.15",
                      "faults.max_norm_ratio=10", "seed=0"), "fdapt")
    rows = [c for r in faulty["rounds"] for c in r["clients"]]
    assert any(c["dropped"] for c in rows)
    judged = {"nan": 0, "inf": 0, "scale": 0}
    history = False  # has the screen accepted an update yet (in client order, run-wide)?
    for r in faulty["rounds"]:
        assert set(r["accepted"]).isdisjoint(r["dropped"])
        for c in r["clients"]:
            why = r["rejected"].get(str(c["client"]))
            if c["fault"] in ("nan", "inf"):
                assert why.startswith("non-finite"), (r["round"], c["client"], why)
            elif c["fault"] == "scale" and history:
                assert "more than 10" in (why or ""), (r["round"], c["client"], why)
            elif c["fault"] == "scale":  # nothing to compare to yet: finite, so it passes
                assert why is None and c["client"] in r["accepted"]
            elif c["fault"] is None:  # a clean update is never turned away
                assert why is None and c["client"] in r["accepted"], (r["round"], c)
            if c["fault"] in judged and (c["fault"] != "scale" or history):
                judged[c["fault"]] += 1
            history = history or c["client"] in r["accepted"]
    assert judged["scale"] >= 1 and judged["nan"] + judged["inf"] >= 1, judged
    a, b = clean["final_eval"]["loss"], faulty["final_eval"]["loss"]
    assert math.isfinite(b) and abs(b - a) / a < 0.05


def test_corrupted_updates_never_reach_the_model_and_min_clients_holds(tiny):
    rec = run(tiny("fl.rounds=2", "fl.clients=2", "faults.corrupt=1.0",
                   "faults.corrupt_kinds=[nan]", "faults.min_clients=1"), "fdapt")
    for r in rec["rounds"]:
        assert r["accepted"] == [] and not r["aggregated"]
        assert all("non-finite" in why for why in r["rejected"].values())
    # nothing was accepted, so the model is the starting one: the held-out loss is unchanged
    assert rec["final_eval"]["loss"] == rec["initial_eval"]["loss"]


def test_nan_in_central_training_stops_with_a_clear_error(tiny):
    from fdapt_core.fl.engine import TrainingError

    with pytest.raises(TrainingError, match="central training diverged in round 1"):
        run(tiny("fl.rounds=2", "train.lr=1e12", "train.max_grad_norm=0"), "central")


@pytest.mark.parametrize("stop", [RuntimeError("the link went away"), SystemExit(1)])
def test_a_run_that_ends_on_an_error_says_so_in_its_record(tiny, tmp_path, stop):
    """A Flower ServerApp whose SuperLink went away left `status: running` behind: a record
    must say how a run ended (failed on an error, interrupted by an exit), with the error."""
    import json

    from fdapt_core.runner import run

    class Breaks:
        def __getattr__(self, name):
            return lambda *a, **k: None

        def round_end(self, r, row):
            raise stop

    with pytest.raises(type(stop)):
        run(tiny("name=ends"), "fdapt", callbacks=Breaks())
    rec = json.loads((tmp_path / "results" / "ends" / "fdapt" / "record.json").read_text())
    assert rec["status"] == ("failed" if isinstance(stop, Exception) else "interrupted")
    assert rec["error"] == (str(stop) or "SystemExit") and len(rec["rounds"]) == 1
