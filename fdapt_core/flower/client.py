"""The harness's client as a Flower `ClientApp`.

`query` answers the node's `partition-id` (the server maps partitions to nodes with it).
`train` takes the global model and the run's resolved config, and runs the harness's own
client round on this node's partition: the same seeded manifest, local loop, freeze plan and
upload codec as every other executor. It replies with the encoded upload (nothing for a
frozen block) and the client's record row.

A node holds only its own institution's documents. With each task the server sends its
tokenizer and the client's documents' ids (in the manifest's order) with a hash of their text;
the node reads its data-path, picks those documents, checks them, and packs them as the server
would (`assembly.build_node_client`), once per run. A node missing a document or holding other
text refuses the run, saying which. Node config: `partition-id` (required), and optionally
`data-path` / `cache-dir`, where that institution keeps its documents and caches.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from pathlib import Path


from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from ..assembly import NodeDataError, build_node_client
from ..config import build_config
from ..errors import FdaptError
from ..fl.client import Client
from ..fl.messages import RoundTask
from ..model import load_tokenizer, tokenizer_sha256
from .wire import (encoded_record, json_record, load_client_state, record_tensors,
                   save_client_state)

app = ClientApp()

_built: dict[tuple, Client] = {}  # (config hash, method, node overrides) -> its client


def partition_id(context: Context) -> int:
    try:
        return int(context.node_config["partition-id"])
    except (KeyError, TypeError, ValueError):
        raise FdaptError("Flower node config: 'partition-id' (an integer, the client this node "
                         "trains) is missing or not an integer") from None


def node_overrides(context: Context) -> list[str]:
    """`key=value` overrides from the node config (where this institution keeps its files)."""
    keys = {"data-path": "data.path", "cache-dir": "cache_dir"}
    return [f"{key}={context.node_config[k]}" for k, key in keys.items()
            if k in context.node_config]


def node_tokenizer(files: dict[str, str], sha256: str, cache_dir: str):
    """The server's tokenizer, written once under this node's cache and loaded from there.

    A cached folder whose tokenizer is not the server's (edited, damaged, or left by another
    version) is rebuilt from the bytes the server sent; only a tokenizer that still loads
    otherwise from those very bytes is refused, and that is the transformers version."""
    folder = Path(cache_dir) / f"node-tokenizer-{sha256[:16]}"
    if folder.is_dir():
        tokenizer = _load_checked(folder, sha256)
        if tokenizer is not None:
            return tokenizer
        # not the server's: set it aside (another node may be reading it) and write afresh
        stale = folder.with_name(f"{folder.name}.stale-{os.getpid()}")
        try:
            os.rename(folder, stale)
            shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass
    for _ in range(2):  # twice: another node may have set aside the folder this one just wrote
        _write_tokenizer(folder, files)
        tokenizer = _load_checked(folder, sha256)
        if tokenizer is not None:
            return tokenizer
    raise FdaptError("the server's tokenizer, written from the bytes it sent, loads "
                     "otherwise on this node: the transformers or tokenizers versions "
                     "of node and server differ; install the server's")


def _write_tokenizer(folder: Path, files: dict[str, str]) -> None:
    """Several nodes on one host (a simulation's workers, a loopback deployment) may share the
    cache and write at once: each fills a folder of its own, and the first rename wins (the
    folder is named by its content's hash, so the others drop theirs)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f"{folder.name}.tmp-"))
    for name, data in files.items():
        (tmp / name).write_bytes(base64.b64decode(data))
    try:
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_checked(folder: Path, sha256: str):
    """The tokenizer in `folder` if it is the server's (by its hash), else None."""
    try:
        tokenizer = load_tokenizer(str(folder), own=True)
    except Exception:  # noqa: BLE001 (tokenizers raises a bare Exception on a damaged file)
        return None
    return tokenizer if tokenizer_sha256(tokenizer) == sha256 else None


def client_for(cfg_dict: dict, method: str, overrides: list[str], client: int,
               share: dict) -> Client:
    """This node's client half for the run, built once: its own documents (the manifest's ids
    for `client`, read from its data-path), the server's tokenizer, the model. No held-out
    set, strategy, fault screen or freeze schedule: the server keeps them and its task says
    what they decide."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and \
            cfg_dict.get("train", {}).get("threads") is None:
        # a worker given its share of the host's cores (Ray sets it from num_cpus)
        overrides = [*overrides, f"train.threads={os.environ['OMP_NUM_THREADS']}"]
    cfg = build_config(cfg_dict, overrides)
    key = (cfg.hash(), method, tuple(overrides), client)
    if key not in _built:
        # one run at a time per process: free another run's clients (a simulation worker
        # serving several clients of this run keeps each, and their FLOP counts)
        for old in [k for k in _built if k[:3] != key[:3]]:
            del _built[old]
        tokenizer = node_tokenizer(share["tokenizer"], share["tokenizer_sha256"],
                                   cfg.cache_dir)
        _built[key] = build_node_client(cfg, method, client, share["ids"], share["sha256"],
                                        tokenizer, share.get("doc_sha256"))
    return _built[key]


@app.query()
def query(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"node": ConfigRecord({"partition-id": partition_id(context)})}),
                   reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    run = msg.content["run"]
    described = json.loads(run["task"])
    if int(described["client"]) != partition_id(context):
        raise FdaptError(f"this node holds partition {partition_id(context)}, but was sent "
                         f"client {described['client']}'s round")
    c = int(described["client"])
    try:
        client = client_for(json.loads(run["config"]), str(run["method"]),
                            node_overrides(context), c, json.loads(run["share"]))
    except NodeDataError as exc:  # this node cannot train the server's run: say why
        return Message(RecordDict({"refused": ConfigRecord({"reason": str(exc)})}),
                       reply_to=msg)
    device = client.ctx.device
    global_params = {k: v.to(device) for k, v in record_tensors(msg.content["global"]).items()}
    # what this client keeps between rounds lives in the node's Flower state: a node may
    # answer each message from a fresh process, and Flower keeps context.state for the run
    client.adopt_states(load_client_state(context.state, c))
    update = client.train(RoundTask.from_description(described, global_params))
    save_client_state(context.state, c, client.states([c]))
    content = RecordDict({"row": json_record(row=update.row.to_dict())})
    if update.encoded is not None:
        content["upload"] = encoded_record(update.encoded)
    return Message(content, reply_to=msg)
