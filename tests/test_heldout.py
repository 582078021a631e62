"""The held-out set scored is a representative sample of the held-out documents, whatever the
file order (corpora often arrive sorted by category, as OHSUMED does)."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from fdapt_core.data.heldout import select_heldout, stratified_order
from fdapt_core.data.packing import TokenizedCorpus
from fdapt_core.data.synthetic import generate
from fdapt_core.records import read_json
from fdapt_core.prepare import prepare
from fdapt_core.runner import run


def test_every_prefix_of_the_order_is_a_proportional_stratified_sample():
    keys = ["a"] * 50 + ["b"] * 30 + ["c"] * 15 + ["d"] * 5  # sorted, as a corpus on disk
    order = stratified_order(list(range(100)), keys, np.random.default_rng(0))
    assert sorted(order) == list(range(100))
    share = Counter(keys)
    for m in range(1, 101):
        got = Counter(keys[i] for i in order[:m])
        for k, n in share.items():
            # a random permutation strays by up to 9 here; the stratified order by under 2
            assert abs(got[k] - m * n / 100) < 2, (m, k, got)
    # seeded: the same seed, the same order; another seed, another
    assert stratified_order(list(range(100)), keys, np.random.default_rng(0)) == order
    assert stratified_order(list(range(100)), keys, np.random.default_rng(1)) != order


def test_scored_documents_are_the_ones_inside_the_kept_blocks():
    lengths = [7, 3, 12, 5, 9, 4]
    flat = np.concatenate([np.full(n, i, dtype=np.int32) for i, n in enumerate(lengths)])
    corpus = TokenizedCorpus(flat=flat, offsets=np.concatenate([[0], np.cumsum(lengths)]))
    sel = select_heldout(corpus, range(6), [None] * 6, block_size=4, max_blocks=3,
                         rng=np.random.default_rng(5))
    assert sel.blocks.shape == (3, 4)
    assert set(sel.blocks.unique().tolist()) == set(sel.doc_indices)
    assert sel.key_counts([None] * 6) == {}


def _sorted_corpus(path, n_docs=600, n_topics=6):
    docs = sorted(generate(n_docs=n_docs, n_topics=n_topics, seed=0), key=lambda d: d.key)
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps({"id": d.id, "text": d.text, "topic": d.key}) + "\n")
    return docs


def test_scored_documents_span_the_keys_as_a_random_sample_does(tiny, tmp_path):
    """On a corpus sorted by key, the scored documents' keys are spread as in a uniform random
    sample of the held-out documents of the same size; a head cut of file order scores only
    the first topic or two."""
    _sorted_corpus(tmp_path / "sorted.jsonl")
    cfg = tiny(f"data.source=jsonl", f"data.path={tmp_path / 'sorted.jsonl'}",
               "data.text_fields=[text]", "data.id_field=id", "data.key_field=topic",
               "data.val_fraction=0.2", "eval.max_blocks=300")
    prep = prepare(cfg, "fdapt")
    val_keys = [prep.docs[i].key for i in prep.val_idx]
    scored = prep.manifest["heldout_scored"]
    key_of = {d.id: d.key for d in prep.docs}
    assert set(scored) <= {prep.docs[i].id for i in prep.val_idx}
    got = Counter(key_of[s] for s in scored)
    m, N = len(scored), len(val_keys)
    assert 10 <= m < N  # a real subsample
    # a uniform random sample of m of the N held-out documents: per key a hypergeometric count
    rng = np.random.default_rng(0)
    sims = [Counter(rng.choice(val_keys, size=m, replace=False)) for _ in range(2000)]
    for k in set(val_keys):
        lo, hi = np.quantile([s[k] for s in sims], [0.001, 0.999])
        assert lo <= got[k] <= hi, (k, got[k], lo, hi)
    covered = np.quantile([len(s) for s in sims], 0.001)
    assert len(got) >= covered


def test_the_record_says_what_was_scored(tiny, tmp_path):
    _sorted_corpus(tmp_path / "sorted.jsonl", n_docs=120, n_topics=3)
    cfg = tiny(f"data.source=jsonl", f"data.path={tmp_path / 'sorted.jsonl'}",
               "data.text_fields=[text]", "data.id_field=id", "data.key_field=topic",
               "fl.rounds=1", "train.max_local_steps=1", "data.val_fraction=0.25",
               "eval.max_blocks=120")
    rec = run(cfg, "fdapt")
    folder = tmp_path / "results" / cfg.name / "fdapt"
    man = read_json(folder / "manifest.json")
    held = rec["data"]["heldout_scored"]
    assert held["documents"] == len(man["heldout_scored"]) > 0
    key_of = {json.loads(line)["id"]: json.loads(line)["topic"]
              for line in (tmp_path / "sorted.jsonl").read_text().splitlines()}
    assert held["by_key"] == dict(sorted(Counter(key_of[i] for i in man["heldout_scored"])
                                         .items()))
    assert len(held["by_key"]) == 3


@pytest.mark.parametrize("method", ["central", "ffdapt"])
def test_every_method_scores_the_same_documents(tiny, method):
    cfg = tiny()
    assert prepare(cfg, method).manifest["heldout_scored"] \
        == prepare(cfg, "fdapt").manifest["heldout_scored"]


def _token_losses(model, heldout):
    """Each scored token's float32 loss, through the scorer's own head path (the same kernels
    on the same inputs, so the same float32 values on any CPU)."""
    import torch
    import torch.nn.functional as F

    from fdapt_core.heads import scoring_head

    head = scoring_head(model, heldout.objective)
    body = head.target(model)
    out = []
    with torch.no_grad():
        for inputs, labels in heldout.batches:
            logits, scored = head.logits(body, inputs, labels)
            keep = scored != -100
            out += F.cross_entropy(logits.float()[keep], scored[keep],
                                   reduction="none").tolist()
    return out


def test_the_held_out_loss_is_the_exact_mean_of_its_token_losses(tiny):
    """Two runs whose weights parted by up to 6e-7 (1 and 2 threads, five rounds) scored the
    same held-out loss to 16 digits: each batch's loss was summed in float32, whose rounding
    (about 1e-7 of the sum) swallowed the difference. The scorer sums each token's float32 loss
    in float64, so its mean is the exact mean of those losses to within float64's own rounding
    bound, (n + 2) · eps64 of the mean, in any summation order and on any CPU; a float32 sum
    misses it by ~1e-7 of the mean, five orders of magnitude more. And so a weight change that
    moves the exact mean by more than that bound moves the score."""
    import math

    import torch

    from fdapt_core.fl.evaluate import HeldOut
    from fdapt_core.model import tokenizer_info
    from fdapt_core.objective import build_objective

    cfg = tiny("eval.max_blocks=64", "data.max_seq_length=64", "data.val_fraction=0.3")
    prep = prepare(cfg, "fdapt")
    objective = build_objective("mlm", tokenizer_info(prep.tokenizer), 0.15)
    heldout = HeldOut(prep.heldout.blocks, objective, cfg.seed, batch_size=64)
    model = prep.model.eval()  # no dropout: the scorer's own mode
    eps64 = torch.finfo(torch.float64).eps

    def scored_and_exact():
        losses = _token_losses(model, heldout)
        assert len(losses) == heldout.n_masked > 100
        exact = math.fsum(losses) / len(losses)
        return heldout.evaluate(model, torch.device("cpu"))["loss"], exact, \
            (len(losses) + 2) * eps64 * exact

    before, exact_before, bound = scored_and_exact()
    assert abs(before - exact_before) <= bound, (before, exact_before, bound)

    gen = torch.Generator().manual_seed(0)
    seen = 0
    with torch.no_grad():
        for p in list(model.parameters())[::3]:  # a third of the tensors, every kind among them
            saved = p.clone()
            p.add_(torch.randn(p.shape, generator=gen) * 1e-7)
            after, exact_after, _ = scored_and_exact()
            assert abs(after - exact_after) <= bound, (after, exact_after, bound)
            if abs(exact_after - exact_before) > 2 * bound:  # the token losses moved
                seen += 1
                assert after != before
            p.copy_(saved)
    assert seen > 0  # the nudge moved some tensor's token losses: the check above was made
