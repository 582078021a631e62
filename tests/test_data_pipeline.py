"""Packing, masking, validation split and the per-client data a run builds."""
from __future__ import annotations

import math

import torch

from fdapt_core.data.document import Document
from fdapt_core.data.masking import IGNORE, mask_tokens
from fdapt_core.data.packing import pack, tokenize_corpus
from fdapt_core.model import TokenizerInfo, train_tokenizer
from fdapt_core.prepare import prepare, split_validation


def test_pack_concatenates_in_order_and_drops_the_remainder(tmp_path):
    docs = [Document(str(i), t) for i, t in enumerate(["alpha beta", "gamma", "delta eps zeta"])]
    tok = train_tokenizer([d.text for d in docs], 128, tmp_path)
    tc = tokenize_corpus(docs, tok, tmp_path)
    ids = [tok(d.text)["input_ids"] for d in docs]
    assert all(i[0] == tok.cls_token_id and i[-1] == tok.sep_token_id for i in ids)
    flat = ids[2] + ids[0]
    blocks = pack(tc, [2, 0], 3)
    assert blocks.tolist() == [flat[i:i + 3] for i in range(0, len(flat) // 3 * 3, 3)]
    assert pack(tc, [], 3).shape == (0, 3)
    again = tokenize_corpus(docs, tok, tmp_path)  # second time: from the datasets cache
    assert again.from_cache and not tc.from_cache
    assert (again.flat == tc.flat).all()


def test_masking_spares_special_tokens_and_is_seeded():
    tok = TokenizerInfo(vocab_size=100, mask_id=4, pad_id=0, special_ids=(0, 1, 2, 3, 4))
    x = torch.randint(5, 100, (64, 64))
    x[:, 0], x[:, -1] = 2, 3
    a_in, a_lab = mask_tokens(x, tok, 0.15, torch.Generator().manual_seed(1))
    b_in, b_lab = mask_tokens(x, tok, 0.15, torch.Generator().manual_seed(1))
    assert torch.equal(a_in, b_in) and torch.equal(a_lab, b_lab)
    chosen = a_lab != IGNORE
    assert not chosen[:, 0].any() and not chosen[:, -1].any()
    assert 0.12 < chosen.float().mean() < 0.18
    assert torch.equal(a_lab[chosen], x[chosen])
    assert torch.equal(a_in[~chosen], x[~chosen])  # the rest is untouched


def _within(k: int, n: int, p: float, z: float = 4.0) -> bool:
    """k successes of n draws agree with probability p: within z binomial standard errors."""
    return abs(k - n * p) <= z * math.sqrt(n * p * (1 - p))


def test_masking_follows_the_80_10_10_rule():
    # Each chosen position is told apart by its input alone: [MASK] = masked, the original
    # token = kept, anything else = a random token. A random draw (over the whole vocabulary,
    # as BERT does) equals [MASK] or the original with probability 1/V each, which moves
    # 0.1/V of the chosen positions from "random" to each of the other two.
    V, mask_id = 100, 4
    tok = TokenizerInfo(vocab_size=V, mask_id=mask_id, pad_id=0, special_ids=(0, 1, 2, 3, 4))
    x = torch.randint(5, V, (512, 512), generator=torch.Generator().manual_seed(0))
    inputs, labels = mask_tokens(x, tok, 0.15, torch.Generator().manual_seed(1))
    chosen = labels != IGNORE
    masked = chosen & (inputs == mask_id)
    kept = chosen & (inputs == x)
    random = chosen & ~masked & ~kept
    n = int(chosen.sum())
    assert _within(n, x.numel(), 0.15)
    assert _within(int(masked.sum()), n, 0.8 + 0.1 / V)
    assert _within(int(kept.sum()), n, 0.1 + 0.1 / V)
    assert _within(int(random.sum()), n, 0.1 - 0.2 / V)
    # the random tokens are spread over the vocabulary: every id but [MASK] turns up, and a
    # chi-square against uniform stays within z = 4 of its degrees of freedom
    counts = torch.bincount(inputs[random], minlength=V).double()
    others = torch.tensor([i != mask_id for i in range(V)])
    assert (counts[others] > 0).all() and counts[mask_id] == 0
    expected = counts.sum() / others.sum()
    chi2 = float(((counts[others] - expected) ** 2 / expected).sum())
    dof = int(others.sum()) - 1
    assert chi2 < dof + 4 * math.sqrt(2 * dof), chi2


def test_validation_split_is_seeded_and_disjoint():
    tr, va = split_validation(100, 0.1, 0)
    assert len(va) == 10 and not set(tr) & set(va) and sorted(tr + va) == list(range(100))
    assert split_validation(100, 0.1, 0) == (tr, va)
    assert split_validation(100, 0.1, 1)[1] != va


def test_prepare_builds_disjoint_client_shards(tiny):
    prep = prepare(tiny("fl.clients=3", "partition.method=by_key"), "fdapt")
    ids = [set(prep.docs[i].id for i in p) for p in prep.parts]
    keys = [set(prep.docs[i].key for i in p) for p in prep.parts]
    assert all(not a & b for i, a in enumerate(ids) for b in ids[i + 1:])
    assert all(not a & b for i, a in enumerate(keys) for b in keys[i + 1:])
    assert set().union(*ids) | {prep.docs[i].id for i in prep.val_idx} \
        == {d.id for d in prep.docs}
    assert prep.manifest["clients"] == [[prep.docs[i].id for i in p] for p in prep.parts]
    assert all(len(b) > 0 and b.shape[1] == 32 for b in prep.client_blocks)


def test_heldout_loss_on_masked_positions_only_equals_the_models_own_loss(tmp_path):
    import math

    from fdapt_core.fl.evaluate import HeldOut
    from fdapt_core.model import build_from_preset, output_head
    from fdapt_core.objective import MaskedLM

    tok = TokenizerInfo(vocab_size=200, mask_id=4, pad_id=0, special_ids=(0, 1, 2, 3, 4))
    blocks = torch.randint(5, 200, (10, 24))
    model = build_from_preset("tiny", 200, 64)
    held = HeldOut(blocks, MaskedLM(tok, 0.15), seed=3, batch_size=4)
    fast = held.evaluate(model, torch.device("cpu"))
    # the reference: HF's loss over the full vocabulary projection, weighted by masked tokens
    model.eval()
    with torch.no_grad():
        total = sum(model(input_ids=i, labels=l).loss.item() * int((l != -100).sum())
                    for i, l in held.batches)
    model.train()
    assert output_head(model) is not None
    assert math.isclose(fast["loss"], total / held.n_masked, rel_tol=1e-5)
    assert model.training  # evaluation puts the mode back
