"""Partitioners: exact-cover invariants, the study's exact rules, and user-facing errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fdapt_core.data.document import Document
from fdapt_core.data.partition import (
    PARTITIONERS,
    len_key,
    manifest,
    partition,
    text_stats,
    voc_key,
)
from fdapt_core.errors import ConfigError, DataError

KEYS = ("cardio", "onco", "neuro", "derm")
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa")


def _synthetic_docs(n: int = 60) -> list[Document]:
    """Docs whose sentence length, vocabulary and key all vary with the index."""
    docs = []
    for i in range(n):
        sentence_len = 2 + i % 7
        n_sentences = 1 + i % 4
        sentences = [
            " ".join(WORDS[(i * 3 + s + w * (1 + i % 3)) % 10] for w in range(sentence_len)) + "."
            for s in range(n_sentences)
        ]
        key = KEYS[(i + i // 7) % 4]
        docs.append(Document(id=f"doc{i:03d}", text=" ".join(sentences), key=key))
    return docs


DOCS = _synthetic_docs()


def _assert_exact_cover(parts: list[list[int]], n_docs: int) -> None:
    flat = [i for part in parts for i in part]
    assert sorted(flat) == list(range(n_docs))
    assert len(flat) == len(set(flat))
    assert all(parts)


@pytest.mark.parametrize("method", PARTITIONERS)
@pytest.mark.parametrize("n_clients", [1, 3, 4])
def test_every_method_is_a_deterministic_exact_cover(method: str, n_clients: int) -> None:
    parts = partition(DOCS, n_clients, method, seed=7)
    assert len(parts) == n_clients
    _assert_exact_cover(parts, len(DOCS))
    assert partition(DOCS, n_clients, method, seed=7) == parts


@pytest.mark.parametrize("method", ["iid", "dirichlet"])
def test_seeded_methods_change_with_the_seed(method: str) -> None:
    assert partition(DOCS, 3, method, seed=0) != partition(DOCS, 3, method, seed=1)


def test_iid_is_a_seeded_permutation_cut_by_array_split() -> None:
    perm = np.random.default_rng(5).permutation(len(DOCS))
    expected = [chunk.tolist() for chunk in np.array_split(perm, 7)]
    assert partition(DOCS, 7, "iid", seed=5) == expected


def test_iid_without_shuffle_is_array_split_of_file_order() -> None:
    docs = DOCS[:10]
    assert partition(docs, 3, "iid", shuffle=False) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    expected = [chunk.tolist() for chunk in np.array_split(np.arange(len(DOCS)), 8)]
    assert partition(DOCS, 8, "iid", seed=3, shuffle=False) == expected


@pytest.mark.parametrize(
    ("n_docs", "n_clients", "sizes"),
    [
        (36, 8, [1, 2, 3, 4, 5, 6, 7, 8]),
        (100, 4, [10, 20, 30, 40]),
        (10, 3, [1, 4, 5]),  # bounds 10*1//6 = 1, 10*3//6 = 5, 10
    ],
)
def test_quantity_is_linear_skew_in_file_order(
    n_docs: int, n_clients: int, sizes: list[int]
) -> None:
    docs = [Document(id=str(i), text="x.") for i in range(n_docs)]
    parts = partition(docs, n_clients, "quantity")
    assert [len(p) for p in parts] == sizes
    assert [i for p in parts for i in p] == list(range(n_docs))  # contiguous, file order


def test_quantity_too_few_docs_for_the_smallest_client_is_a_data_error() -> None:
    docs = [Document(id=str(i), text="x.") for i in range(8)]
    with pytest.raises(DataError, match=r"client\(s\) \[0, 1\] empty with 8 documents and 8"):
        partition(docs, 8, "quantity")  # (8 * 1) // 36 == 0, (8 * 3) // 36 == 0


# Hand-worked voc/len keys (m = mean tokens per sentence, v = distinct tokens):
#   d0 "The cat sat. The cat ran."  tokens 4+4, 2 sentences: m=4, v=5 (The cat sat ran .)
#   d1 "Hello world!"               tokens 3, 1 sentence:    m=3, v=3
#   d2 "A b c d e f g h. I j."      tokens 9+3, 2 sentences: m=6, v=11
#   d3 "Yes? No! Maybe."            tokens 2+2+2:            m=2, v=6
# voc = m/v:     d0 0.8, d1 1.0, d2 6/11=0.5454..., d3 2/6=0.333...  -> order d3 d2 d0 d1
# len = v/m**5:  d0 5/1024=0.00488, d1 3/243=0.01235, d2 11/7776=0.00141, d3 6/32=0.1875
#                                                                     -> order d2 d0 d1 d3
HAND_DOCS = [
    Document(id="d0", text="The cat sat. The cat ran."),
    Document(id="d1", text="  Hello world!  "),
    Document(id="d2", text="A b c d e f g h. I j."),
    Document(id="d3", text="Yes? No! Maybe."),
]


def test_text_stats_and_keys_match_hand_computation() -> None:
    assert [text_stats(d.text) for d in HAND_DOCS] == [(4.0, 5), (3.0, 3), (6.0, 11), (2.0, 6)]
    assert [voc_key(d) for d in HAND_DOCS] == pytest.approx([0.8, 1.0, 6 / 11, 1 / 3])
    assert [len_key(d) for d in HAND_DOCS] == pytest.approx([5 / 1024, 3 / 243, 11 / 7776, 0.1875])


def test_voc_and_len_sort_ascending_and_cut() -> None:
    assert partition(HAND_DOCS, 2, "voc") == [[3, 2], [0, 1]]
    assert partition(HAND_DOCS, 4, "voc") == [[3], [2], [0], [1]]
    assert partition(HAND_DOCS, 2, "len") == [[2, 0], [1, 3]]
    assert partition(HAND_DOCS, 3, "len") == [[2, 0], [1], [3]]


def test_voc_ties_keep_file_order() -> None:
    docs = [Document(id=f"t{i}", text="Same words here.") for i in range(4)]
    assert partition(docs, 2, "voc") == [[0, 1], [2, 3]]


def test_voc_document_without_tokens_is_named() -> None:
    docs = [*HAND_DOCS, Document(id="blank", text="   \n ")]
    with pytest.raises(DataError, match="'blank'"):
        partition(docs, 2, "len")


def _keyed(sizes: dict[str, int]) -> list[Document]:
    docs = []
    for key, size in sizes.items():
        docs += [Document(id=f"{key}{j}", text="x.", key=key) for j in range(size)]
    return docs


def test_by_key_hand_case_balances_sizes() -> None:
    docs = _keyed({"a": 5, "b": 4, "c": 3, "d": 2})
    # Descending sizes a5 b4 c3 d2: a -> client 0 (5), b -> 1 (4), c -> 1 (7), d -> 0 (7).
    for seed in range(5):  # all sizes differ, so the seed cannot matter
        parts = partition(docs, 2, "by_key", seed=seed)
        assert [sorted({docs[i].key for i in p}) for p in parts] == [["a", "d"], ["b", "c"]]
        assert [len(p) for p in parts] == [7, 7]


def test_by_key_keeps_each_key_on_one_client() -> None:
    parts = partition(DOCS, 3, "by_key", seed=2)
    owners: dict[str | None, set[int]] = {}
    for k, part in enumerate(parts):
        assert part == sorted(part)
        for i in part:
            owners.setdefault(DOCS[i].key, set()).add(k)
    assert all(len(clients) == 1 for clients in owners.values())
    assert set(owners) == set(KEYS)


def test_by_key_seed_breaks_size_ties() -> None:
    docs = _keyed({"a": 2, "b": 2, "c": 2, "d": 2})
    layouts = {
        tuple(tuple(sorted({docs[i].key for i in p})) for p in partition(docs, 2, "by_key", seed=s))
        for s in range(20)
    }
    assert len(layouts) > 1
    assert all(len(layout) == 2 and all(len(group) == 2 for group in layout) for layout in layouts)


def test_dirichlet_lists_are_ascending_and_alpha_controls_skew() -> None:
    for alpha in (0.1, 100.0):
        parts = partition(DOCS, 3, "dirichlet", seed=4, alpha=alpha)
        _assert_exact_cover(parts, len(DOCS))
        assert all(p == sorted(p) for p in parts)


def test_dirichlet_gives_up_after_redraws() -> None:
    docs = _keyed({"a": 2})
    with pytest.raises(DataError, match=r"101 draws of 2 documents with 1 distinct keys among 2"):
        partition(docs, 2, "dirichlet", alpha=1e-4)


def test_more_clients_than_documents() -> None:
    with pytest.raises(DataError, match=r"4 documents among 5 clients"):
        partition(HAND_DOCS, 5, "iid")


def test_by_key_fewer_keys_than_clients() -> None:
    with pytest.raises(DataError, match=r"4 distinct keys for 5 clients"):
        partition(DOCS, 5, "by_key")


@pytest.mark.parametrize("method", ["by_key", "dirichlet"])
def test_missing_key_names_the_document(method: str) -> None:
    docs = [*_keyed({"a": 3}), Document(id="orphan", text="x.")]
    with pytest.raises(DataError, match=r"'orphan' lacks a key.*no key field configured"):
        partition(docs, 2, method)


def test_unknown_method_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"'random'.*iid, quantity, voc, len, by_key, dirichlet"):
        partition(DOCS, 2, "random")


@pytest.mark.parametrize("n_clients", [0, -1])
def test_n_clients_below_one(n_clients: int) -> None:
    with pytest.raises(ConfigError, match=f"n_clients must be >= 1, got {n_clients}"):
        partition(DOCS, n_clients, "iid")


@pytest.mark.parametrize("alpha", [0.0, -0.5])
def test_dirichlet_alpha_must_be_positive(alpha: float) -> None:
    with pytest.raises(ConfigError, match=f"alpha must be > 0.*got {alpha}"):
        partition(DOCS, 2, "dirichlet", alpha=alpha)


def test_manifest_names_ids_and_hash_is_stable() -> None:
    parts = partition(HAND_DOCS, 2, "voc")
    first = manifest(HAND_DOCS, parts, method="voc", seed=0, corpus="hand")
    again = manifest(HAND_DOCS, [list(p) for p in parts], method="voc", seed=0, corpus="hand")
    assert first == again
    assert first["clients"] == [["d3", "d2"], ["d0", "d1"]]
    assert first["sizes"] == [2, 2]
    assert first["n_clients"] == 2 and first["corpus"] == "hand"
    json.dumps(first)  # JSON-ready
    # The hash covers the id lists only, not the metadata.
    assert manifest(HAND_DOCS, parts, method="x", seed=9)["sha256"] == first["sha256"]


def test_manifest_hash_changes_with_a_client_list() -> None:
    base = manifest(HAND_DOCS, [[3, 2], [0, 1]], method="voc", seed=0)["sha256"]
    assert manifest(HAND_DOCS, [[3], [2, 0, 1]], method="voc", seed=0)["sha256"] != base
    assert manifest(HAND_DOCS, [[2, 3], [0, 1]], method="voc", seed=0)["sha256"] != base


def test_manifest_rejects_reserved_metadata() -> None:
    with pytest.raises(ConfigError, match="sizes"):
        manifest(HAND_DOCS, [[0, 1, 2, 3]], method="iid", seed=0, sizes=[1])
