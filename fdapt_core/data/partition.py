"""Deal the documents of one corpus out to K federated clients.

Every partitioner returns, per client, a list of indices into the document sequence. The lists
are disjoint, cover every index exactly once (no method drops documents) and none is empty:
an empty client cannot train, so that is a `DataError` rather than a silent skip. The rules
below are exact because they reproduce the splits of a published FDAPT study; changing one
changes every downstream number.

`iid`
    Permute the indices with `numpy.random.default_rng(seed)` (unless `shuffle=False`), then cut
    the permutation into K contiguous chunks whose sizes differ by at most one, larger chunks
    first (the `numpy.array_split` rule). The shuffle matters because corpora are often stored
    sorted by category or date; cutting file order would make the "iid" split skewed. Each
    client's list keeps the permuted order.
`quantity`
    Linear quantity skew in file order: client n (1-based) gets n / (1 + 2 + ... + K) of the
    documents, so the largest client holds K times the smallest. Integer cut points
    b_k = (D * k(k+1)/2) // (K(K+1)/2) make the rule exact and free of rounding drift; client
    k-1 gets [b_{k-1}, b_k). No randomness: the skew is in size only, not in content.
`voc` / `len`
    Feature skew without labels: every document gets a scalar key from its text, the documents
    are stable-sorted ascending by key (ties keep file order) and the sorted list is cut by the
    `array_split` rule, so each client sees a contiguous band of the key. Each client's list is
    in ascending key order. With m = mean tokens per sentence and v = distinct tokens:
    `voc` key = m / v (long sentences from a small vocabulary sort last);
    `len` key = v / m ** 5 (the fifth power makes sentence length dominate).
    Tokenisation (an NLTK-like approximation that needs no downloads): the text is stripped and
    split into sentences on whitespace that follows `.`, `!` or `?` (empty pieces dropped); the
    tokens of a sentence are `re.findall(r"\\w+|[^\\w\\s]", sentence)`, case kept, so every
    punctuation mark is its own token. A document without tokens has no key: `DataError`.
`by_key`
    Every distinct `Document.key` goes wholly to one client (e.g. one MeSH category per
    hospital). The distinct values are sorted, shuffled with rng(seed), stable-sorted by
    document count descending, and each is given to the client with the fewest documents so
    far (ties to the lowest client index): a seeded, size-balanced greedy deal. The seed only
    decides among values of equal size.
`dirichlet`
    Label skew of tunable strength: for each distinct key value (sorted) draw proportions
    p ~ Dirichlet(alpha * 1_K), shuffle that value's documents and cut them at
    floor(cumsum(p) * count). Small alpha gives near one-hot clients, large alpha near iid. If
    a client ends empty the whole draw is repeated with the same generator (up to
    `DIRICHLET_MAX_REDRAWS` times) so the result stays a pure function of the seed.

`by_key`, `dirichlet` and `quantity` lists are in ascending index order.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fdapt_core.data.document import Document
from fdapt_core.errors import ConfigError, DataError


DIRICHLET_MAX_REDRAWS = 100
"""How many times `dirichlet` redraws after a draw that leaves a client empty."""

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_MANIFEST_RESERVED = ("method", "n_clients", "seed", "clients", "sizes", "sha256")


def partition(
    docs: Sequence[Document],
    n_clients: int,
    method: str,
    seed: int = 0,
    *,
    alpha: float = 0.5,
    shuffle: bool = True,
) -> list[list[int]]:
    """Split `docs` among `n_clients` clients by `method`; return each client's indices.

    All argument checks run before any work so a bad config fails fast with one message.
    `seed` is used by `iid` (when `shuffle`), `by_key` and `dirichlet`; `alpha` only by
    `dirichlet`; `shuffle` only by `iid`.
    """
    _check_arguments(docs, n_clients, method)
    if method == "dirichlet" and not alpha > 0:
        raise ConfigError(f"partition alpha must be > 0 for method 'dirichlet', got {alpha}")
    parts = SPLITTERS[method](docs, n_clients, seed, alpha, shuffle)
    _check_result(parts, len(docs), method)
    return parts


def manifest(
    docs: Sequence[Document],
    parts: Sequence[Sequence[int]],
    *,
    method: str,
    seed: int,
    **meta: Any,
) -> dict[str, Any]:
    """Describe a partition as a JSON-ready dict that names documents by id, not position.

    Ids survive re-reading the corpus in another order; `sha256` fingerprints the canonical
    JSON (sorted keys, no whitespace, UTF-8) of the per-client id lists alone, so two runs can
    be checked for identical splits whatever metadata they record. Extra `meta` (e.g. alpha,
    corpus name) is stored as given and must be JSON-serialisable.
    """
    clashes = sorted(set(meta) & set(_MANIFEST_RESERVED))
    if clashes:
        raise ConfigError(f"manifest metadata may not override reserved fields: {clashes}")
    clients = [[docs[i].id for i in part] for part in parts]
    return {
        "method": method,
        "n_clients": len(parts),
        "seed": seed,
        **meta,
        "clients": clients,
        "sizes": [len(ids) for ids in clients],
        "sha256": _sha256_of(clients),
    }


def text_stats(text: str) -> tuple[float, int]:
    """Return (mean tokens per sentence, distinct tokens) of `text`, the inputs of voc/len.

    Returns (0.0, 0) for a text without tokens; callers decide whether that is an error.
    """
    sentences = [s for s in _SENTENCE_SPLIT.split(text.strip()) if s]
    tokens_per_sentence = [_TOKEN.findall(s) for s in sentences]
    n_tokens = sum(len(tokens) for tokens in tokens_per_sentence)
    if n_tokens == 0:
        return 0.0, 0
    distinct = {token for tokens in tokens_per_sentence for token in tokens}
    return n_tokens / len(sentences), len(distinct)


def voc_key(doc: Document) -> float:
    """Sort key of the `voc` partitioner: mean tokens per sentence / distinct tokens."""
    mean_len, distinct = _stats_or_fail(doc)
    return mean_len / distinct


def len_key(doc: Document) -> float:
    """Sort key of the `len` partitioner: distinct tokens / (mean tokens per sentence) ** 5."""
    mean_len, distinct = _stats_or_fail(doc)
    return distinct / mean_len**5


_KEY_FUNCTIONS: dict[str, Callable[[Document], float]] = {"voc": voc_key, "len": len_key}


def _check_arguments(docs: Sequence[Document], n_clients: int, method: str) -> None:
    """Reject impossible requests before any (possibly slow) key computation."""
    if method not in PARTITIONERS:
        raise ConfigError(
            f"unknown partition method {method!r}; allowed: {', '.join(PARTITIONERS)}"
        )
    if isinstance(n_clients, bool) or not isinstance(n_clients, (int, np.integer)):
        raise ConfigError(f"n_clients must be an integer, got {n_clients!r}")
    if n_clients < 1:
        raise ConfigError(f"n_clients must be >= 1, got {n_clients}")
    if n_clients > len(docs):
        raise DataError(
            f"cannot partition {len(docs)} documents among {n_clients} clients: "
            "every client needs at least one document"
        )


def _check_result(parts: list[list[int]], n_docs: int, method: str) -> None:
    """Fail on an empty client; assert the lists form an exact cover (a bug otherwise)."""
    empty = [k for k, part in enumerate(parts) if not part]
    if empty:
        raise DataError(
            f"partition method {method!r} left client(s) {empty} empty with {n_docs} documents "
            f"and {len(parts)} clients; use fewer clients or more documents"
        )
    flat = sorted(i for part in parts for i in part)
    assert flat == list(range(n_docs)), "partition is not an exact cover of the documents"


def _array_split(order: Sequence[int], n_clients: int) -> list[list[int]]:
    """Cut `order` into contiguous chunks differing in size by at most one, larger first."""
    base, extra = divmod(len(order), n_clients)
    parts: list[list[int]] = []
    start = 0
    for k in range(n_clients):
        stop = start + base + (1 if k < extra else 0)
        parts.append([int(i) for i in order[start:stop]])
        start = stop
    return parts


def _iid(n_docs: int, n_clients: int, seed: int, shuffle: bool) -> list[list[int]]:
    order = np.random.default_rng(seed).permutation(n_docs) if shuffle else np.arange(n_docs)
    return _array_split(order.tolist(), n_clients)


def _quantity(n_docs: int, n_clients: int) -> list[list[int]]:
    total = n_clients * (n_clients + 1) // 2
    bounds = [0] + [(n_docs * (k * (k + 1) // 2)) // total for k in range(1, n_clients + 1)]
    return [list(range(bounds[k], bounds[k + 1])) for k in range(n_clients)]


def _stats_or_fail(doc: Document) -> tuple[float, int]:
    mean_len, distinct = text_stats(doc.text)
    if distinct == 0:
        raise DataError(f"document {doc.id!r} has no tokens; cannot compute its voc/len key")
    return mean_len, distinct


def _sorted_by_key(
    docs: Sequence[Document], n_clients: int, key: Callable[[Document], float]
) -> list[list[int]]:
    keys = [key(doc) for doc in docs]
    order = sorted(range(len(docs)), key=lambda i: (keys[i], i))
    return _array_split(order, n_clients)


def _indices_by_key(docs: Sequence[Document]) -> dict[str, list[int]]:
    """Group document indices by key (ascending within a group); every doc needs a key."""
    groups: dict[str, list[int]] = {}
    for i, doc in enumerate(docs):
        if doc.key is None:
            raise DataError(
                f"document {doc.id!r} lacks a key: the corpus has no key field configured, "
                "which the by_key and dirichlet partitioners need"
            )
        groups.setdefault(doc.key, []).append(i)
    return groups


def _by_key(docs: Sequence[Document], n_clients: int, seed: int) -> list[list[int]]:
    groups = _indices_by_key(docs)
    if len(groups) < n_clients:
        raise DataError(
            f"by_key partition needs at least one distinct key per client: {len(groups)} "
            f"distinct keys for {n_clients} clients would leave a client empty"
        )
    values = sorted(groups)
    shuffled = [values[i] for i in np.random.default_rng(seed).permutation(len(values))]
    shuffled.sort(key=lambda value: -len(groups[value]))  # stable: seed breaks size ties
    parts: list[list[int]] = [[] for _ in range(n_clients)]
    for value in shuffled:
        smallest = min(range(n_clients), key=lambda k: (len(parts[k]), k))
        parts[smallest].extend(groups[value])
    return [sorted(part) for part in parts]


def _dirichlet(
    docs: Sequence[Document], n_clients: int, seed: int, alpha: float
) -> list[list[int]]:
    groups = _indices_by_key(docs)
    rng = np.random.default_rng(seed)
    for _ in range(1 + DIRICHLET_MAX_REDRAWS):
        parts = _dirichlet_draw(groups, n_clients, rng, alpha)
        if all(parts):
            return parts
    raise DataError(
        f"dirichlet partition (alpha={alpha}) left a client empty in "
        f"{1 + DIRICHLET_MAX_REDRAWS} draws of {len(docs)} documents with "
        f"{len(groups)} distinct keys among {n_clients} clients; raise alpha or use fewer clients"
    )


def _dirichlet_draw(
    groups: dict[str, list[int]], n_clients: int, rng: np.random.Generator, alpha: float
) -> list[list[int]]:
    """One draw: per key value (sorted), proportions then a shuffled order, cut by floor."""
    parts: list[list[int]] = [[] for _ in range(n_clients)]
    for value in sorted(groups):
        members = groups[value]
        proportions = rng.dirichlet(np.full(n_clients, alpha, dtype=float))
        order = [members[i] for i in rng.permutation(len(members))]
        # Only the K-1 inner cut points come from the float sum: the last one is the count, so
        # rounding (cumsum ending at 0.9999...) can never drop a document.
        cuts = [min(len(order), math.floor(c * len(order))) for c in np.cumsum(proportions)[:-1]]
        bounds = [0, *cuts, len(order)]
        for k in range(n_clients):
            parts[k].extend(order[bounds[k] : bounds[k + 1]])
    return [sorted(part) for part in parts]


def _sha256_of(clients: list[list[str]]) -> str:
    canonical = json.dumps(clients, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# The partitioners, registered by name: (docs, n_clients, seed, alpha, shuffle) -> parts.
# `partition.method`'s choices and `partition` both read this table.
SPLITTERS: dict[str, Callable[..., list[list[int]]]] = {
    "iid": lambda docs, n, seed, alpha, shuffle: _iid(len(docs), n, seed, shuffle),
    "quantity": lambda docs, n, seed, alpha, shuffle: _quantity(len(docs), n),
    "voc": lambda docs, n, seed, alpha, shuffle: _sorted_by_key(docs, n, _KEY_FUNCTIONS["voc"]),
    "len": lambda docs, n, seed, alpha, shuffle: _sorted_by_key(docs, n, _KEY_FUNCTIONS["len"]),
    "by_key": lambda docs, n, seed, alpha, shuffle: _by_key(docs, n, seed),
    "dirichlet": lambda docs, n, seed, alpha, shuffle: _dirichlet(docs, n, seed, alpha),
}
PARTITIONERS: tuple[str, ...] = tuple(SPLITTERS)
"""Method names accepted by `partition`."""
