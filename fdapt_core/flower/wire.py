"""What travels in Flower messages: tensors, encoded uploads and record rows.

A message's tensors travel as one safetensors blob in one `Array` (`flower.frames`:
bfloat16 included, which NumPy cannot hold). The bytes Flower counts are the bytes the
harness counts plus the blob's header (each tensor's name, dtype, shape and offsets). An
encoded upload's parts are named `<name>#<i>` in the blob. Rows and the run's config travel
as JSON in a `ConfigRecord`.
"""
from __future__ import annotations

import json
from typing import Mapping, Optional

import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..fl.codecs import Encoded
from .frames import blob_record, record_blob


def to_blob(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """The tensors as safetensors bytes (on CPU, contiguous; a tensor that shares storage
    with another, as tied weights do, is copied: the format holds each storage once)."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        t = v.detach().to("cpu").contiguous()
        if t.numel() and t.untyped_storage().data_ptr() in seen:
            t = t.clone()
        if t.numel():
            seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return st_save(out)


def from_blob(data: bytes) -> dict[str, torch.Tensor]:
    return st_load(bytes(data))


def tensors_record(tensors: Mapping[str, torch.Tensor]) -> ArrayRecord:
    return blob_record(to_blob(tensors))


def record_tensors(rec: ArrayRecord) -> dict[str, torch.Tensor]:
    return from_blob(record_blob(rec))


def encoded_blob(enc: Encoded) -> bytes:
    return to_blob({f"{k}#{i}": t for k, ts in enc.parts.items() for i, t in enumerate(ts)})


def encoded_record(enc: Encoded) -> ArrayRecord:
    return blob_record(encoded_blob(enc))


def record_encoded(codec: str, rec: ArrayRecord) -> Encoded:
    parts: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for key, t in record_tensors(rec).items():
        name, _, i = key.rpartition("#")
        parts.setdefault(name, []).append((int(i), t))
    return Encoded(codec, {k: tuple(t for _, t in sorted(v)) for k, v in parts.items()})


def json_record(**values) -> ConfigRecord:
    """Values that are not Flower scalars (rows, configs) as JSON strings."""
    return ConfigRecord({k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
                         for k, v in values.items()})


def state_blobs(client: int, kept: dict[str, dict]) -> dict[str, bytes]:
    """What client `client` keeps between rounds (`Client.states([client])`: AdamW moments
    and schedule under optimizer_reset: persist, the top-k residual) as named blobs, which a
    node keeps in its Flower `context.state` across the run's rounds (`frames.save_state`)."""
    opt, residual = kept["opt"].get(client), kept["residual"].get(client)
    out = {}
    if opt is not None:
        out["moments"] = to_blob({f"{name}|{k}": v for name, m in opt["moments"].items()
                                  for k, v in m.items()})
        out["sched"] = json.dumps(opt["sched"]).encode()
    if residual is not None:
        out["residual"] = to_blob(residual)
    return out


def blobs_state(client: int, blobs: Mapping[str, bytes]) -> dict[str, dict]:
    """What `state_blobs` wrote, as `Client.adopt_states` takes it (empty: nothing kept
    yet, the client's first round)."""
    out: dict[str, dict] = {"opt": {}, "residual": {}}
    if "moments" in blobs:
        moments: dict[str, dict] = {}
        for key, t in from_blob(blobs["moments"]).items():
            name, _, k = key.rpartition("|")
            moments.setdefault(name, {})[k] = t
        out["opt"][client] = {"moments": moments, "sched": json.loads(blobs["sched"])}
    if "residual" in blobs:
        out["residual"][client] = from_blob(blobs["residual"])
    return out


def message_bytes(content: Optional[RecordDict]) -> int:
    """The bytes of a message's records as Flower's `message_size_mod` counts them."""
    return 0 if content is None else sum(r.count_bytes() for r in content.values())
