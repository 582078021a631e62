"""A deterministic WordPiece vocabulary learner for the preset tokenizers.

Why not `tokenizers.trainers.WordPieceTrainer`: its BPE merge loop breaks ties between pairs of
equal count by the pairs' token ids, and it hands out the ids of the ``##x`` continuation pieces
while iterating a Rust `HashMap` of words whose hasher is seeded at random in every process. So
the same texts give a different vocabulary (not only other ids: other tokens) in every fresh
process, and with it different model numbers; no thread setting changes that.

This learner runs the same algorithm (the BPE-style merge learning that `WordPieceTrainer` runs,
with ``##`` continuation pieces) with every order made explicit:

* words are counted with the tokenizer's own normalizer and pre-tokenizer (pure functions), and
  then handled in sorted order;
* ids: the special tokens in the order given, the characters of the corpus by code point, the
  ``##`` continuation characters by code point, then merged tokens in the order learnt;
* the next merge is the pair with the highest count; ties go to the lexicographically smallest
  (left token, right token) strings;
* learning stops when the vocabulary has `vocab_size` entries or no pair is left.

The result depends only on the texts, `vocab_size` and the special tokens: not on the process,
PYTHONHASHSEED, the thread count or the machine. Pure Python; the real OHSUMED corpus (9.4 MB of
text, 40 k distinct words) takes a few seconds at 30 k tokens.

`BUILDER_VERSION` goes into the tokenizer cache folder's name: bump it whenever a change here
could change a vocabulary, so that no cached tokenizer from an older builder is reused.
"""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from typing import Iterable, Mapping, Sequence

BUILDER_VERSION = 1
CONTINUATION_PREFIX = "##"


def count_words(texts: Iterable[str], normalizer, pre_tokenizer) -> Counter:
    """How often each pre-tokenized word occurs in `texts`, as the tokenizer will see them."""
    words: list[str] = []
    for text in texts:
        words.extend(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    return Counter(words)


def learn_vocab(word_counts: Mapping[str, int], vocab_size: int,
                special_tokens: Sequence[str] = (),
                prefix: str = CONTINUATION_PREFIX) -> list[str]:
    """The WordPiece vocabulary, in id order, learnt from `word_counts` (word → count).

    The special tokens, every character (word-initial and ``##`` continuation form) and merged
    tokens up to `vocab_size` entries in all (the characters are kept even past it, as
    `WordPieceTrainer` keeps them)."""
    vocab: list[str] = []
    index: dict[str, int] = {}

    def add(token: str) -> int:
        if token not in index:
            index[token] = len(vocab)
            vocab.append(token)
        return index[token]

    for token in special_tokens:
        add(token)
    items = sorted((w, int(n)) for w, n in word_counts.items() if w and n > 0)
    for ch in sorted({ch for w, _ in items for ch in w}):
        add(ch)
    for ch in sorted({ch for w, _ in items for ch in w[1:]}):
        add(prefix + ch)
    words = [[index[w[0]]] + [index[prefix + ch] for ch in w[1:]] for w, _ in items]
    counts = [n for _, n in items]

    # pair → total count, and pair → the words that may hold it (a superset: kept lazily)
    pair_count: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, (sym, n) in enumerate(zip(words, counts)):
        for pair in zip(sym, sym[1:]):
            pair_count[pair] += n
            where[pair].add(wi)
    # Max-heap on count, ties by the pair's strings: (-count, left, right, left id, right id).
    # An entry is stale when its count is no longer the pair's count; every change of a count
    # pushes a fresh entry, so skipping stale entries is exact.
    heap = [(-n, vocab[a], vocab[b], a, b) for (a, b), n in pair_count.items()]
    heapq.heapify(heap)
    cut = len(prefix)
    while len(vocab) < vocab_size and heap:
        neg, left, right, a, b = heapq.heappop(heap)
        if pair_count.get((a, b), 0) != -neg:
            continue
        # `right` is never word-initial, so always carries the prefix
        new = add(left + right[cut:])
        delta: dict[tuple[int, int], int] = defaultdict(int)
        for wi in where.pop((a, b)):
            sym, n = words[wi], counts[wi]
            out: list[int] = []
            i, last = 0, len(sym) - 1
            while i <= last:
                if i < last and sym[i] == a and sym[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(sym[i])
                    i += 1
            if len(out) == len(sym):
                continue  # a stale entry of `where`: the pair had left this word
            for pair in zip(sym, sym[1:]):
                delta[pair] -= n
            for pair in zip(out, out[1:]):
                delta[pair] += n
                if new in pair:
                    where[pair].add(wi)
            words[wi] = out
        for pair, d in delta.items():
            if d:
                m = pair_count[pair] + d
                pair_count[pair] = m
                if m > 0:
                    heapq.heappush(heap, (-m, vocab[pair[0]], vocab[pair[1]], *pair))
    return vocab
