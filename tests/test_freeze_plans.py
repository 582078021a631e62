import pytest

from fdapt_core.config.run import FreezeConfig
from fdapt_core.errors import ConfigError
from fdapt_core.freeze.policies import apply_freeze, plan_freezing
from fdapt_core.model import build_from_preset, transformer_blocks


@pytest.fixture(scope="module")
def model():
    return build_from_preset("tiny", 200, 64)


def test_paper_plan_freezes_whole_blocks_only(model):
    plans = plan_freezing(model, "paper", FreezeConfig(), [10, 10, 10, 10])
    assert [p.blocks for p in plans] == [(0, 1), (2, 3), (4, 5), (0, 1)]
    names = dict(model.named_parameters())
    for plan in plans:
        assert not plan.embeddings
        assert {n.split(".")[3] for n in plan.names} == {str(b) for b in plan.blocks}
        block_params = sum(p.numel() for b in plan.blocks
                           for p in transformer_blocks(model)[b][1].parameters())
        assert sum(names[n].numel() for n in plan.names) == block_params


def test_bottom_plan_and_apply(model):
    plans = plan_freezing(model, "bottom", FreezeConfig(k=2), [3, 9])
    assert all(p.blocks == (0, 1) and p.embeddings for p in plans)
    apply_freeze(model, plans[1])
    assert not model.distilbert.embeddings.word_embeddings.weight.requires_grad
    assert not model.vocab_projector.weight.requires_grad  # tied to the embeddings
    assert model.vocab_layer_norm.weight.requires_grad  # the MLM head always trains
    assert model.distilbert.transformer.layer[2].ffn.lin1.weight.requires_grad
    apply_freeze(model, None)
    assert all(p.requires_grad for p in model.parameters())


def test_none_and_errors(model):
    assert all(not p.names for p in plan_freezing(model, "none", FreezeConfig(), [1, 2]))
    with pytest.raises(ConfigError, match="freeze.k"):
        plan_freezing(model, "bottom", FreezeConfig(k=7), [1])
    with pytest.raises(ConfigError, match="freeze.max_blocks"):
        plan_freezing(model, "paper", FreezeConfig(max_blocks=9), [1])
