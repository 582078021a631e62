"""What travels in Flower messages: tensors, encoded uploads and record rows.

Tensors go as raw bytes in their own dtype (bfloat16 included, which NumPy cannot hold), one
`Array` each, so the bytes Flower counts are the bytes the harness counts plus the keys. An
encoded upload's parts are keyed `<name>#<i>`. Rows and the run's config travel as JSON in a
`ConfigRecord`.
"""
from __future__ import annotations

import json
from typing import Mapping, Optional

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from ..fl.codecs import Encoded

STYPE = "torch.raw"  # our serialisation: the tensor's bytes, little-endian, row-major


def to_array(t: torch.Tensor) -> Array:
    t = t.detach().to("cpu").contiguous()
    return Array(dtype=str(t.dtype).removeprefix("torch."), shape=tuple(t.shape), stype=STYPE,
                 data=t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def from_array(a: Array) -> torch.Tensor:
    if a.stype != STYPE:
        raise ValueError(f"an array serialised as {a.stype!r}, not {STYPE!r}")
    dtype = getattr(torch, a.dtype)
    if not a.data:
        return torch.empty(tuple(a.shape), dtype=dtype)
    flat = torch.frombuffer(bytearray(a.data), dtype=torch.uint8)
    return flat.view(dtype).reshape(tuple(a.shape)).clone()


def tensors_record(tensors: Mapping[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord({k: to_array(v) for k, v in tensors.items()})


def record_tensors(rec: ArrayRecord) -> dict[str, torch.Tensor]:
    return {k: from_array(a) for k, a in rec.items()}


def encoded_record(enc: Encoded) -> ArrayRecord:
    return ArrayRecord({f"{k}#{i}": to_array(t) for k, ts in enc.parts.items()
                        for i, t in enumerate(ts)})


def record_encoded(codec: str, rec: ArrayRecord) -> Encoded:
    parts: dict[str, list[torch.Tensor]] = {}
    for key, a in rec.items():
        name, _, i = key.rpartition("#")
        parts.setdefault(name, []).append((int(i), from_array(a)))
    return Encoded(codec, {k: tuple(t for _, t in sorted(v)) for k, v in parts.items()})


def json_record(**values) -> ConfigRecord:
    """Values that are not Flower scalars (rows, configs) as JSON strings."""
    return ConfigRecord({k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
                         for k, v in values.items()})


STATE = "fdapt.client"  # the prefix of a node's records in its Flower context.state


def save_client_state(state: RecordDict, client: int, kept: dict[str, dict]) -> None:
    """Write what client `client` keeps between rounds (`Client.states([client])`: AdamW
    moments and schedule under optimizer_reset: persist, the top-k residual) into a node's
    Flower `context.state`, which Flower keeps for the node across the run's rounds."""
    opt, residual = kept["opt"].get(client), kept["residual"].get(client)
    if opt is not None:
        state[f"{STATE}.moments"] = tensors_record(
            {f"{name}|{k}": v for name, m in opt["moments"].items() for k, v in m.items()})
        state[f"{STATE}.sched"] = json_record(sched=opt["sched"])
    if residual is not None:
        state[f"{STATE}.residual"] = tensors_record(residual)


def load_client_state(state: RecordDict, client: int) -> dict[str, dict]:
    """What `save_client_state` wrote, as `Client.adopt_states` takes it (empty: nothing kept
    yet, the client's first round)."""
    out: dict[str, dict] = {"opt": {}, "residual": {}}
    if f"{STATE}.moments" in state:
        moments: dict[str, dict] = {}
        for key, t in record_tensors(state[f"{STATE}.moments"]).items():
            name, _, k = key.rpartition("|")
            moments.setdefault(name, {})[k] = t
        out["opt"][client] = {"moments": moments,
                              "sched": json.loads(state[f"{STATE}.sched"]["sched"])}
    if f"{STATE}.residual" in state:
        out["residual"][client] = record_tensors(state[f"{STATE}.residual"])
    return out


def message_bytes(content: Optional[RecordDict]) -> int:
    """The bytes of a message's records as Flower's `message_size_mod` counts them."""
    return 0 if content is None else sum(r.count_bytes() for r in content.values())
