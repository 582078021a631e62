import pytest
import torch

from fdapt_core.fl.fedavg import FedAvg


def _round(strategy, global_params, uploads, weights):
    strategy.begin_round(global_params)
    for c, sent in uploads.items():
        strategy.accumulate(c, sent, weights[c])
    return strategy.finish()


def test_identical_clients_average_to_that_model_exactly():
    g = {"w": torch.randn(50, 7), "b": torch.randn(7)}
    theta = {k: v + torch.randn_like(v) for k, v in g.items()}
    new = _round(FedAvg(), g, {c: theta for c in range(3)}, {0: 3.0, 1: 5.0, 2: 11.0})
    for k in g:
        assert torch.equal(new[k], theta[k])


def test_single_client_is_taken_as_it_is():
    g = {"w": torch.randn(20)}
    theta = {"w": torch.randn(20)}
    assert torch.equal(_round(FedAvg(), g, {4: theta}, {4: 17.0})["w"], theta["w"])


def test_weights_follow_the_rule():
    g = {"w": torch.zeros(2)}
    uploads = {0: {"w": torch.tensor([0.0, 1.0])}, 1: {"w": torch.tensor([4.0, 5.0])}}
    new = _round(FedAvg(), g, uploads, {0: 1.0, 1: 3.0})  # 1/4 and 3/4
    assert torch.allclose(new["w"], torch.tensor([3.0, 4.0]))
    assert new["w"].dtype == torch.float32


def test_unsent_parameter_counts_the_global_copy_or_only_senders():
    g = {"frozen_on_0": torch.tensor([2.0]), "all": torch.tensor([0.0])}
    uploads = {0: {"all": torch.tensor([1.0])},
               1: {"all": torch.tensor([3.0]), "frozen_on_0": torch.tensor([10.0])}}
    w = {0: 1.0, 1: 1.0}
    new = _round(FedAvg("global"), g, uploads, w)
    assert new["frozen_on_0"].item() == pytest.approx(0.5 * 2.0 + 0.5 * 10.0)
    assert new["all"].item() == pytest.approx(2.0)
    new = _round(FedAvg("senders"), g, uploads, w)
    assert new["frozen_on_0"].item() == pytest.approx(10.0)


def test_a_parameter_nobody_sent_stays():
    g = {"w": torch.tensor([1.5])}
    assert _round(FedAvg("senders"), g, {0: {}}, {0: 1.0})["w"].item() == 1.5


def test_a_zero_weight_is_refused():
    s = FedAvg()
    s.begin_round({"w": torch.zeros(1)})
    with pytest.raises(ValueError, match="client 3"):
        s.accumulate(3, {"w": torch.ones(1)}, 0.0)


def test_no_arrival_keeps_the_global_model():
    s = FedAvg()
    g = {"w": torch.tensor([1.25])}
    s.begin_round(g)
    assert torch.equal(s.finish()["w"], g["w"]) and s.accepted == []
