"""Bytes as a node's thin ClientApp handles them, without torch: the one-blob records of
Flower messages, the client state a node keeps in its Flower `context.state`, and the
length-prefixed frames between the ClientApp and the node's warm worker (`flower.worker`).

A message's tensors travel as one safetensors blob in one `Array` (`flower.wire` makes and
reads the blob): Flower moves every `Array` as objects of its own, each a request between
SuperLink, SuperNode and ClientApp, so one Array per tensor cost a loopback round seconds.
"""
from __future__ import annotations

import json
import socket
import struct

from flwr.app import Array, ArrayRecord, RecordDict

STYPE = "safetensors"  # how a record's blob is serialised
KEY = "tensors"  # the one Array of a tensor record
STATE = "fdapt.client"  # the prefix of a node's records in its Flower context.state


def blob_record(blob: bytes) -> ArrayRecord:
    return ArrayRecord({KEY: Array(dtype="uint8", shape=(len(blob),), stype=STYPE, data=blob)})


def record_blob(rec: ArrayRecord) -> bytes:
    a = rec[KEY]
    if a.stype != STYPE:
        raise ValueError(f"tensors serialised as {a.stype!r}, not {STYPE!r} (node and server "
                         "run different versions of the harness?)")
    return bytes(a.data)


def load_state(state: RecordDict) -> dict[str, bytes]:
    """What a node's client kept between rounds, as named blobs (empty: its first round)."""
    prefix = f"{STATE}."
    return {k.removeprefix(prefix): record_blob(v) for k, v in state.items()
            if k.startswith(prefix)}


def save_state(state: RecordDict, parts: dict[str, bytes]) -> None:
    for name, blob in parts.items():
        state[f"{STATE}.{name}"] = blob_record(blob)


# --- frames: a JSON header and named byte strings, each length-prefixed ----------------
_LEN = struct.Struct("<Q")


def send(sock: socket.socket, header: dict, blobs: dict[str, bytes]) -> None:
    head = json.dumps({**header, "_blobs": [[k, len(v)] for k, v in blobs.items()]}).encode()
    sock.sendall(_LEN.pack(len(head)) + head)
    for v in blobs.values():
        sock.sendall(v)


def recv(sock: socket.socket) -> tuple[dict, dict[str, bytes]]:
    header = json.loads(_exactly(sock, _LEN.unpack(_exactly(sock, _LEN.size))[0]))
    blobs = {k: _exactly(sock, n) for k, n in header.pop("_blobs")}
    return header, blobs


def _exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError(f"the other side closed after {got} of {n} bytes")
        got += k
    return bytes(buf)
