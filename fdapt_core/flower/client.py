"""The harness's client as a Flower `ClientApp`.

`query` answers the node's `partition-id` (the server maps partitions to nodes with it).
`train` takes the global model and the run's resolved config, and runs the harness's own
client round on this node's partition: the same seeded manifest, local loop, freeze plan and
upload codec as every other executor. It replies with the encoded upload (nothing for a
frozen block) and the client's record row.

A node builds the run once (data, tokenizer, model) and keeps it for the run's rounds. Node
config: `partition-id` (required), and optionally `data-path` / `cache-dir`, where an
institution's copy of the corpus and its caches live on that machine.
"""
from __future__ import annotations

import json
import os

import torch

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from ..assembly import build_context
from ..config import build_config
from ..fl.client import Client
from ..fl.codecs import Codec
from ..fl.context import NoCallbacks
from ..fl.messages import RoundTask
from ..prepare import prepare
from ..runs import run_dir
from ..errors import FdaptError
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


def client_for(cfg_dict: dict, method: str, overrides: list[str]) -> Client:
    """This node's client half for the run, built once (prepare → context → client): no
    strategy, fault screen or freeze schedule; the server sends what they decide."""
    cfg = build_config(cfg_dict, overrides)
    key = (cfg.hash(), method, tuple(overrides))
    if key not in _built:
        _built.clear()  # one run at a time per node: free the last one's model and data
        prep = prepare(cfg, method)
        if cfg.train.threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
            # a worker given its share of the host's cores (Ray sets it from num_cpus)
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        ctx = build_context(prep, run_dir(prep.cfg, method), NoCallbacks(), None)
        _built[key] = Client(ctx, Codec(prep.cfg.fl.upload_codec, prep.cfg.fl.topk_fraction))
    return _built[key]


def mismatch(server: dict, node: dict) -> str | None:
    """Why this node cannot train the server's run, or None: its documents must split into
    the server's partition manifest, and its tokenizer must give the server's ids. A node
    whose data-path holds only its own institution's documents re-splits them (holding some
    out and partitioning the rest again) and learns another vocabulary: its updates would land
    on the wrong rows of the embeddings while the run reports itself finished."""
    if server.get("manifest_sha256") != node.get("manifest_sha256"):
        return ("this node's corpus gives another partition manifest than the server's "
                f"(manifest sha256 {str(node.get('manifest_sha256'))[:12]} here, "
                f"{str(server.get('manifest_sha256'))[:12]} on the server): its data-path must "
                "hold the whole corpus the server was given, in the same order (a node holding "
                "only its own documents is not supported yet)")
    if server.get("tokenizer_sha256") != node.get("tokenizer_sha256"):
        return ("this node's tokenizer differs from the server's (sha256 "
                f"{str(node.get('tokenizer_sha256'))[:12]} here, "
                f"{str(server.get('tokenizer_sha256'))[:12]} on the server): the same text "
                "would get other ids")
    return None


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
    client = client_for(json.loads(run["config"]), str(run["method"]), node_overrides(context))
    refusal = mismatch(json.loads(run["fingerprint"]) if "fingerprint" in run else {},
                       client.ctx.fingerprint or {})
    if refusal:
        return Message(RecordDict({"refused": ConfigRecord({"reason": refusal})}),
                       reply_to=msg)
    device = client.ctx.device
    global_params = {k: v.to(device) for k, v in record_tensors(msg.content["global"]).items()}
    # what this client keeps between rounds lives in the node's Flower state: a node may
    # answer each message from a fresh process, and Flower keeps context.state for the run
    c = int(described["client"])
    client.adopt_states(load_client_state(context.state, c))
    update = client.train(RoundTask.from_description(described, global_params))
    save_client_state(context.state, c, client.states([c]))
    content = RecordDict({"row": json_record(row=update.row)})
    if update.encoded is not None:
        content["upload"] = encoded_record(update.encoded)
    return Message(content, reply_to=msg)
