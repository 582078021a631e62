"""The unit of text every reader yields and every partitioner deals out."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """One document of the corpus.

    `id` is unique within a corpus and is what partition manifests list; `key` is an optional
    label (e.g. a MeSH category or a synthetic topic) that the `by_key` and `dirichlet`
    partitioners split on.
    """

    id: str
    text: str
    key: str | None = None
