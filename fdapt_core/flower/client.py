"""The harness's client as a Flower `ClientApp`.

`query` answers the node's `partition-id` (the server maps partitions to nodes with it).
`train` takes the global model and the run's resolved config, and runs the harness's own
client round on this node's partition: the same seeded manifest, local loop, freeze plan and
upload codec as every other executor. It replies with the encoded upload (nothing for a
frozen block) and the client's record row.

A node holds only its own institution's documents. With each task the server sends its
tokenizer and the client's documents' ids (in the manifest's order) with a hash of their text;
the node reads its data-path, picks those documents, checks them, and packs them as the server
would (`assembly.build_node_client`), once per process (`flower.node`). A node missing a
document or holding other text refuses the run, saying which. Node config: `partition-id`
(required), and optionally `data-path` / `cache-dir`, where that institution keeps its documents and caches, and
`warm-s`: keep the training code, data and model loaded between messages in a warm worker
that waits that many seconds for the next one (`flower.worker`; a fresh ClientApp process
otherwise pays about 5 s a round on 2 cores).
"""
from __future__ import annotations

import json
import time

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from ..errors import FdaptError
from . import IMPORTS_STARTED, worker
from .frames import blob_record, load_state, record_blob, save_state
from .phases import NodeClock

app = ClientApp()

_IMPORTS_DONE = time.time()
_served = 0  # messages this process has answered (a fresh process: 0)


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


def config_problem(context: Context) -> str | None:
    """Why this node's config cannot serve a run (None: it can): a node the harness refuses
    says so in its reply, and the server ends the run in one line naming the node, where it
    used to fail every message and leave the run to go on without that client."""
    try:
        partition_id(context)
        warm_seconds(context)
    except FdaptError as exc:
        return f"{exc} (node {context.node_id})"
    return None


def refused(msg: Message, reason: str) -> Message:
    return Message(RecordDict({"refused": ConfigRecord({"reason": reason})}), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Which partition this node holds (or why its config cannot serve the run); with
    `release` (the run is over), its warm worker is stopped too."""
    problem = config_problem(context)
    if problem is not None:
        return refused(msg, problem)
    c = partition_id(context)
    if "release" in msg.content and warm_seconds(context):
        cache_dir = context.node_config.get("cache-dir", msg.content["release"]["cache_dir"])
        worker.release(worker.socket_path(context.node_id, c, str(cache_dir)))
    return Message(RecordDict({"node": ConfigRecord({"partition-id": c})}), reply_to=msg)


def warm_seconds(context: Context) -> float:
    """Node config `warm-s`: how long the node's warm worker waits for the next message
    (`flower.worker`); 0 or absent: every message trains in the ClientApp's own process."""
    raw = context.node_config.get("warm-s", 0)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if not value >= 0:
        raise FdaptError(f"Flower node config: 'warm-s' must be a number of seconds >= 0 "
                         f"(0: no warm worker), not {raw!r}")
    return value


@app.train()
def train(msg: Message, context: Context) -> Message:
    global _served
    problem = config_problem(context)
    if problem is not None:
        return refused(msg, problem)
    run = msg.content["run"]
    clock = NodeClock(run.get("sent_at"), IMPORTS_STARTED, _IMPORTS_DONE, fresh=_served == 0)
    _served += 1
    described = json.loads(run["task"])
    c = partition_id(context)
    if int(described["client"]) != c:
        raise FdaptError(f"this node holds partition {c}, but was sent client "
                         f"{described['client']}'s round")
    warm = warm_seconds(context)
    req = {"config": run["config"], "method": str(run["method"]), "task": run["task"],
           "share": run["share"], "client": c, "overrides": node_overrides(context)}
    blobs = {"global": record_blob(msg.content["global"]),
             **{f"state.{k}": v for k, v in load_state(context.state).items()}}
    if warm:
        t0 = time.perf_counter()
        cfg = json.loads(run["config"])
        path = worker.socket_path(context.node_id, c, str(context.node_config.get(
            "cache-dir", cfg["cache_dir"])))
        answer, out, started = worker.call(path, warm, req, blobs,
                                           float(cfg["dist"]["timeout_s"]))
        inner = answer.pop("phases", {})
        clock.add(inner)
        if started:
            clock.add({"worker_start_s": started})
        clock.add({"worker_s": time.perf_counter() - t0 - started - sum(inner.values())})
    else:
        with clock.phase("imports"):
            from . import node  # torch, transformers, the training code: a query needs none
        answer, out = node.handle(req, blobs, clock)
    if "refused" in answer:  # this node cannot train the server's run: say why
        return refused(msg, answer["refused"])
    save_state(context.state, {k.removeprefix("state."): v for k, v in out.items()
                               if k.startswith("state.")})
    content = RecordDict({"row": ConfigRecord({"row": json.dumps(answer["row"])})})
    if "upload" in out:
        content["upload"] = blob_record(out["upload"])
    content["phases"] = ConfigRecord({"phases": json.dumps(clock.done())})
    return Message(content, reply_to=msg)
