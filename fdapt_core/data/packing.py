"""Tokenize documents once (with `datasets`, cached as an Arrow file), then pack any subset into blocks.

Packing follows run_mlm's `group_texts`: the token ids of a shard's documents (each with its
[CLS] … [SEP]) are concatenated in order and cut into blocks of `block_size`; the remainder
shorter than a block is dropped. Tokenizing is the slow part, so it happens once per
(corpus, tokenizer) and lands in an Arrow file; packing a shard is a NumPy slice and concat.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import torch

from .document import Document


@dataclass
class TokenizedCorpus:
    """Every document's token ids, flat, with `offsets[i]:offsets[i+1]` for document i."""

    flat: np.ndarray
    offsets: np.ndarray
    cache_file: str | None = None
    from_cache: bool = False

    def doc_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def _fingerprint(docs: Sequence[Document], tokenizer) -> str:
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    h.update(tokenizer.backend_tokenizer.to_str().encode() if hasattr(tokenizer, "backend_tokenizer")
             else repr(sorted(tokenizer.get_vocab().items())).encode())
    for d in docs:
        h.update(d.text.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def tokenize_corpus(docs: Sequence[Document], tokenizer, cache_dir: Path | None,
                    num_proc: int | None = None) -> TokenizedCorpus:
    """Token ids of every document, from the cache when this corpus was seen before.

    A cached corpus is read with pyarrow alone (memory-mapped): a fresh process (a Flower
    node answers each round from one) then never imports `datasets` for it."""
    path = None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = cache_dir / f"tokens-{_fingerprint(docs, tokenizer)}.arrow"
        if path.exists():
            return _flatten(_read_arrow(path), str(path), True)
    import datasets  # only to tokenize (a cached corpus needs pyarrow alone)

    datasets.disable_progress_bars()

    def encode(batch: dict) -> dict:
        return {"input_ids": tokenizer(batch["text"], add_special_tokens=True,
                                       return_attention_mask=False,
                                       return_token_type_ids=False)["input_ids"]}

    ds = datasets.Dataset.from_dict({"text": [d.text for d in docs]})
    tmp = None if path is None else str(path) + f".tmp{os.getpid()}"
    ds = ds.map(encode, batched=True, batch_size=256, remove_columns=["text"],
                cache_file_name=tmp, num_proc=num_proc)
    if path is not None:
        os.replace(tmp, path)  # renamed whole, so a killed run leaves no half cache
        return _flatten(_read_arrow(path), str(path), False)
    return _flatten(ds.data.table, None, False)


def _read_arrow(path: Path) -> pa.Table:
    """A cache file as `datasets` writes it (an Arrow IPC stream), memory-mapped."""
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all()


def _flatten(table: pa.Table, cache_file: str | None, from_cache: bool) -> TokenizedCorpus:
    col = table.column("input_ids").combine_chunks()
    flat = col.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    offsets = col.offsets.to_numpy().astype(np.int64)
    offsets = offsets - offsets[0]
    return TokenizedCorpus(flat=flat, offsets=offsets, cache_file=cache_file,
                           from_cache=from_cache)


def pack(corpus: TokenizedCorpus, doc_indices: Sequence[int], block_size: int) -> torch.Tensor:
    """Blocks [n, block_size] (int64) from the documents `doc_indices`, in that order."""
    if len(doc_indices) == 0:
        return torch.empty((0, block_size), dtype=torch.long)
    starts, ends = corpus.offsets[:-1], corpus.offsets[1:]
    idx = np.asarray(doc_indices, dtype=np.int64)
    ids = np.concatenate([corpus.flat[s:e] for s, e in zip(starts[idx], ends[idx])])
    n = len(ids) // block_size
    return torch.from_numpy(ids[: n * block_size].astype(np.int64)).view(n, block_size)
