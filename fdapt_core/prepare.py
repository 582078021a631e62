"""Everything a run needs, read, built and checked before anything is written: documents →
validation split → partition → tokenizer → packed blocks → held-out sample → model.

Everything that can fail on the user's input (config, corpus, partition, model path) fails in
`prepare`, before anything is written under the run's folder.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from .adapters import attach
from .config.run import RunConfig
from .data.corpus import read_hf, read_jsonl, read_text
from .data.document import Document
from .data.heldout import ScoredHeldOut, select_heldout
from .executors import executor_of
from .data.packing import TokenizedCorpus, pack, tokenize_corpus
from .data.partition import manifest as make_manifest
from .data.partition import partition
from .data.synthetic import generate as generate_synthetic
from .errors import ConfigError, DataError, ModelError
from .methods import check
from .model import build_model, build_tokenizer, resolve_objective, tokenizer_sha256
from .seeding import derive


def resolve_data_path(path: str) -> Path:
    """A relative data path: as given, else under $FDAPT_DATA_DIR, else ../shared/data."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    roots = [os.environ.get("FDAPT_DATA_DIR"),
             str(Path(__file__).resolve().parents[2] / "shared" / "data")]
    for root in filter(None, roots):
        candidate = Path(root) / path
        if candidate.exists():
            return candidate
        # configs name files as "corpus/x.jsonl"; accept "../shared/data/corpus/x.jsonl" too
        for i in range(len(p.parts)):
            tail = Path(*p.parts[i:])
            if (Path(root) / tail).exists():
                return Path(root) / tail
    return p


def load_documents(cfg: RunConfig) -> list[Document]:
    d = cfg.data
    if d.source == "synthetic":
        s = d.synthetic
        docs = generate_synthetic(n_docs=s.n_docs, n_topics=s.n_topics, seed=s.seed)
    elif d.source == "text":
        docs = read_text(resolve_data_path(d.path), per=d.text_per)
    elif d.source == "jsonl":
        docs = read_jsonl(resolve_data_path(d.path), d.text_fields, d.id_field, d.key_field)
    elif d.source == "hf_disk":
        path = resolve_data_path(d.path)
        if not path.is_dir():
            raise DataError(f"data.path: {path}: no such dataset folder")
        docs = read_hf(str(path), d.split, d.text_fields, d.id_field, d.key_field)
    else:  # hf_hub
        docs = read_hf(d.path, d.split, d.text_fields, d.id_field, d.key_field)
    for doc in docs:
        if len(doc.text) > d.max_doc_chars:
            raise DataError(f"{d.path or 'corpus'}: document {doc.id} has {len(doc.text):,} "
                            f"characters, more than data.max_doc_chars={d.max_doc_chars:,} "
                            "(a file without line breaks?)")
    if d.max_docs is not None and d.max_docs < len(docs):
        # A seeded sample kept in file order: corpora stored sorted by topic (OHSUMED is)
        # would otherwise lose whole topics to a plain head cut.
        rng = np.random.default_rng(derive(cfg.seed, "subset"))
        docs = [docs[i] for i in sorted(rng.choice(len(docs), d.max_docs, replace=False))]
    return docs


def split_validation(n_docs: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) document indices; validation is a seeded sample, both sorted."""
    n_val = min(n_docs - 1, max(1, round(fraction * n_docs))) if fraction > 0 else 0
    rng = np.random.default_rng(derive(seed, "validation"))
    val = sorted(int(i) for i in rng.choice(n_docs, size=n_val, replace=False))
    val_set = set(val)
    return [i for i in range(n_docs) if i not in val_set], val


@dataclass
class Prepared:
    """Everything a run needs, built and checked before anything is written."""

    cfg: RunConfig
    method: str
    objective: str  # "mlm" or "clm"
    docs: list[Document]
    train_idx: list[int]
    val_idx: list[int]
    parts: list[list[int]]  # indices into docs
    manifest: dict
    tokenizer: object
    tokens: TokenizedCorpus
    client_blocks: list[torch.Tensor]
    heldout: ScoredHeldOut  # the held-out blocks scored and the documents they hold
    model: nn.Module  # with LoRA: the base with adapters injected
    adapters: Optional[nn.Module]  # the PeftModel around `model` (peft.method: lora), or None
    device: torch.device
    prepare_wall_s: float


def ranks_here(cfg: RunConfig) -> int:
    """This run's processes on this host: a distributed run's local ranks, else one."""
    if not executor_of(cfg).ranks:
        return 1
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def run_threads(cfg: RunConfig) -> int:
    """The CPU threads a run trains with: `train.threads`, else the host's cores (shared among
    a distributed run's ranks on this host).

    Never a figure of the moment (it once was the cores shared among the fdapt runs alive at
    the start): the thread count changes the order of floating-point sums (1 and 2 threads
    part by 6e-7 after five rounds of the default run), so a count that followed the host's
    state made a plain rerun, or a resumed one, differ from the first. Other runs alive on the
    host slow this one instead: the record counts them (`other_fdapt_runs_at_start`) and flags
    its times as contended (`profiling.host`)."""
    return cfg.train.threads or max(1, (os.cpu_count() or 1) // ranks_here(cfg))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: {name!r} is not a device (auto, cpu, cuda, cuda:N)") \
            from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} asked for, but CUDA is not available")
    return device


def check_writable(key: str, folder: Path) -> None:
    """Refuse a folder this process cannot write into (it, or the nearest part of its path
    that exists), naming the config key."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{key}: {folder} cannot be made: {probe} is not a folder")
    try:
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as exc:
        raise ConfigError(f"{key}: {folder} is not writable ({exc.strerror or exc}); "
                          f"point {key} at a folder you can write") from None


def prepare(cfg: RunConfig, method: str, device: Optional[torch.device] = None) -> Prepared:
    t0 = time.perf_counter()
    method, cfg, objective = check(cfg, method)  # before any tokenizer or cache is written
    for key in ("output_dir", "cache_dir"):  # a read-only folder found before anything is built
        check_writable(key, Path(getattr(cfg, key)))
    device = device or resolve_device(cfg.train.device)
    torch.set_num_threads(run_threads(cfg))
    docs = load_documents(cfg)
    train_idx, val_idx = split_validation(len(docs), cfg.data.val_fraction, cfg.seed)
    train_docs = [docs[i] for i in train_idx]
    if cfg.fl.clients > len(train_docs):
        raise DataError(f"fl.clients ({cfg.fl.clients}) is more than the {len(train_docs)} "
                        "training documents")
    local_parts = partition(train_docs, cfg.fl.clients, cfg.partition.method, cfg.seed,
                            alpha=cfg.partition.alpha, shuffle=cfg.partition.shuffle)
    parts = [[train_idx[i] for i in p] for p in local_parts]
    man = make_manifest(train_docs, local_parts, method=cfg.partition.method, seed=cfg.seed,
                        validation=[docs[i].id for i in val_idx])
    cache = Path(cfg.cache_dir)
    tokenizer = build_tokenizer(cfg.model, [d.text for d in train_docs], cache)
    if objective == "mlm" and tokenizer.mask_token_id is None:
        raise ModelError("model: the tokenizer has no mask token, which the masked-LM "
                         "objective needs; set model.objective: clm for a decoder")
    tokens = tokenize_corpus(docs, tokenizer, cache)
    L = cfg.data.max_seq_length
    client_blocks = [pack(tokens, p, L) for p in parts]
    for c, b in enumerate(client_blocks):
        if len(b) == 0:
            n_tok = int(sum(tokens.doc_lengths()[i] for i in parts[c]))
            raise DataError(f"client {c} has {n_tok} tokens, fewer than one block of "
                            f"data.max_seq_length={L}; use fewer clients or shorter blocks")
    # a seeded sample stratified by key, whatever the file order: the same for every method
    heldout = select_heldout(tokens, val_idx, [d.key for d in docs], L, cfg.eval.max_blocks,
                             np.random.default_rng(derive(cfg.seed, "heldout-sample")))
    man["heldout_scored"] = [docs[i].id for i in heldout.doc_indices]
    if len(val_idx) and len(heldout.blocks) == 0:
        raise DataError(f"the held-out documents hold fewer than data.max_seq_length={L} "
                        "tokens; raise data.val_fraction")
    model = build_model(cfg.model, tokenizer, L, cfg.seed)
    model, adapters = attach(cfg.peft, model)  # adapters seeded by the model's seed too
    model = model.to(device)
    objective = resolve_objective(cfg.model, model)
    return Prepared(cfg, method, objective, docs, train_idx, val_idx, parts, man, tokenizer,
                    tokens, client_blocks, heldout, model, adapters, device,
                    time.perf_counter() - t0)


def documents_sha256(docs: list[Document]) -> str:
    """A hash of documents' ids and text, in order: a node holding a client's documents
    checks that they are the server's."""
    h = hashlib.sha256()
    for d in docs:
        h.update(json.dumps([d.id, d.text]).encode())
    return h.hexdigest()


def document_sha256(doc: Document) -> str:
    """A hash of one document's id and text."""
    return hashlib.sha256(json.dumps([doc.id, doc.text]).encode()).hexdigest()


def tokenizer_files(tokenizer) -> dict[str, str]:
    """The tokenizer as files (name → base64 of the bytes), to travel to a node."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: base64.b64encode(p.read_bytes()).decode()
                for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def node_share(prep: Prepared) -> dict:
    """What a node that holds only its own documents needs from the server: the tokenizer
    (the preset one is learnt from the whole training text, which no node has) and, per
    client, its documents' ids in the manifest's order with a hash of their text."""
    return {"tokenizer": tokenizer_files(prep.tokenizer),
            "tokenizer_sha256": tokenizer_sha256(prep.tokenizer),
            "clients": [{"ids": [prep.docs[i].id for i in part],
                         "sha256": documents_sha256([prep.docs[i] for i in part]),
                         # per document, so that a node can name the first that differs
                         "doc_sha256": [document_sha256(prep.docs[i])[:16] for i in part]}
                        for part in prep.parts]}


def data_summary(prep: Prepared) -> dict:
    lengths = prep.tokens.doc_lengths()
    return {
        "source": prep.cfg.data.source,
        "synthetic": prep.cfg.data.source == "synthetic",
        "documents": len(prep.docs), "train_documents": len(prep.train_idx),
        "validation_documents": len(prep.val_idx),
        "train_tokens": int(sum(lengths[i] for i in prep.train_idx)),
        "validation_blocks": len(prep.heldout.blocks),
        # what the held-out loss is computed on: documents scored, per key where there is one
        "heldout_scored": {"documents": len(prep.heldout.doc_indices),
                           "by_key": prep.heldout.key_counts([d.key for d in prep.docs])},
        "tokenized_from_cache": prep.tokens.from_cache,
        "clients": [{"client": c, "documents": len(p), "blocks": len(b)}
                    for c, (p, b) in enumerate(zip(prep.parts, prep.client_blocks))],
    }
