"""Tests for the synthetic corpus: determinism, shape, and the statistics partitioners rely on."""
from __future__ import annotations

import math
import re
import statistics
import time
from collections import Counter

import pytest

from fdapt_core.data.document import Document
from fdapt_core.data.synthetic import TOPICS, generate

_WORD = re.compile(r"[a-z][a-z0-9-]*")


def _words(doc: Document) -> list[str]:
    return _WORD.findall(doc.text.lower())


def _counts_by_topic(docs: list[Document]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {}
    for doc in docs:
        assert doc.key is not None
        counts.setdefault(doc.key, Counter()).update(_words(doc))
    return counts


@pytest.fixture(scope="module")
def corpus() -> list[Document]:
    return generate()


def test_deterministic_and_seed_dependent(corpus: list[Document]) -> None:
    assert generate() == corpus
    other = generate(seed=1)
    assert [d.text for d in other] != [d.text for d in corpus]
    assert generate(n_docs=50, seed=7) == generate(n_docs=50, seed=7)


def test_ids_are_labelled_synthetic_and_keys_are_topics(corpus: list[Document]) -> None:
    assert len(corpus) == 600
    assert [d.id for d in corpus[:2]] == ["synthetic-00000", "synthetic-00001"]
    assert len({d.id for d in corpus}) == 600
    assert all(d.id.startswith("synthetic-") for d in corpus)
    assert {d.key for d in corpus} == set(TOPICS[:6])


@pytest.mark.parametrize(("n_docs", "n_topics"), [(1, 1), (7, 3), (250, 8)])
def test_n_docs_and_n_topics_are_honoured(n_docs: int, n_topics: int) -> None:
    docs = generate(n_docs=n_docs, n_topics=n_topics)
    assert len(docs) == n_docs
    assert {d.key for d in docs} == set(TOPICS[:n_topics])


def test_invalid_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match=r"n_topics must be between 1 and \d+"):
        generate(n_topics=len(TOPICS) + 1)
    with pytest.raises(ValueError, match="n_docs"):
        generate(n_docs=0)
    with pytest.raises(ValueError, match="min_sentences"):
        generate(min_sentences=5, max_sentences=4)


def test_size_and_speed() -> None:
    start = time.perf_counter()
    docs = generate()
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0  # typically ~0.03 s; loose bound for slow CI machines
    assert 50_000 <= sum(len(d.text.split()) for d in docs) <= 90_000


def test_topic_sizes_are_uneven(corpus: list[Document]) -> None:
    sizes = Counter(d.key for d in corpus)
    assert sizes.most_common()[0][0] == TOPICS[0]
    assert max(sizes.values()) >= 4 * min(sizes.values())


def test_sentences_and_lengths_vary(corpus: list[Document]) -> None:
    sentences = [d.text.count(". ") + 1 for d in corpus]  # every sentence ends with "."
    assert all(d.text.endswith(".") for d in corpus)
    assert min(sentences) == 3 and max(sentences) == 12
    per_sentence = [len(d.text.split()) / n for d, n in zip(corpus, sentences)]
    assert statistics.pstdev(per_sentence) > 1.5
    diversity = [len(set(_words(d))) / len(_words(d)) for d in corpus]
    assert max(diversity) - min(diversity) > 0.3
    short = generate(n_docs=40, min_sentences=2, max_sentences=2)
    assert all(d.text.count(". ") == 1 for d in short)


def test_topics_have_distinct_vocabularies(corpus: list[Document]) -> None:
    counts = _counts_by_topic(corpus)
    totals = {topic: sum(c.values()) for topic, c in counts.items()}

    def top_specific(topic: str) -> set[str]:
        # Frequent words of this topic that are at least 3x more frequent here than elsewhere.
        rest_total = sum(totals.values()) - totals[topic]
        specific = [
            w
            for w, n in counts[topic].most_common()
            if n / totals[topic]
            >= 3 * (sum(c[w] for t, c in counts.items() if t != topic) + 1) / rest_total
        ]
        return set(specific[:20])

    tops = {topic: top_specific(topic) for topic in counts}
    assert all(len(words) == 20 for words in tops.values())
    for a in tops:
        for b in tops:
            if a < b:
                assert len(tops[a] & tops[b]) <= 2, (a, b, tops[a] & tops[b])


def test_topic_is_learnable_from_words(corpus: list[Document]) -> None:
    """A tiny naive Bayes model trained on half the corpus predicts the other half's topic."""
    train, test = corpus[::2], corpus[1::2]
    counts = _counts_by_topic(train)
    vocabulary = {w for c in counts.values() for w in c}
    log_prob = {
        topic: {w: math.log((c[w] + 1) / (sum(c.values()) + len(vocabulary))) for w in vocabulary}
        for topic, c in counts.items()
    }

    def predict(doc: Document) -> str:
        words = [w for w in _words(doc) if w in vocabulary]
        return max(log_prob, key=lambda topic: sum(log_prob[topic][w] for w in words))

    accuracy = sum(predict(d) == d.key for d in test) / len(test)
    assert accuracy > 0.9
