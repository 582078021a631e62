"""A Flower node's side of a round: the work behind the ClientApp's `train`
(`flower.client`), imported only when a train message comes (a query needs none of it).

The node builds its client half once per process: the server's tokenizer (written once
under the node's cache, checked by hash), its own documents from its data-path (checked
against the server's hashes), the model. Then each message: decode the global model, load
what the client keeps between rounds, count the step's FLOPs, train, save the state, encode
the reply. A SuperNode starts a fresh process for every message, so each of these is paid
every round; the clock (`flower.phases`) says how much.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..assembly import NodeDataError, build_node_client
from ..config.run import build_config
from ..errors import FdaptError
from ..fl.client import Client
from ..fl.messages import RoundTask
from ..fl.rows import step_flops
from ..model import load_tokenizer, tokenizer_sha256
from .phases import NodeClock
from .wire import blobs_state, encoded_blob, from_blob, state_blobs

_built: dict[tuple, Client] = {}  # (config hash, method, node overrides) -> its client


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
               share: dict, clock: NodeClock) -> Client:
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
        with clock.phase("tokenizer"):
            tokenizer = node_tokenizer(share["tokenizer"], share["tokenizer_sha256"],
                                       cfg.cache_dir)
        _built[key], phases = build_node_client(cfg, method, client, share["ids"],
                                                share["sha256"], tokenizer,
                                                share.get("doc_sha256"))
        clock.add(phases)
    return _built[key]


def handle(req: dict, blobs: dict[str, bytes], clock: NodeClock
           ) -> tuple[dict, dict[str, bytes]]:
    """Client `req["client"]`'s round on this node, from a train message's parts (`req`: the
    run's config, method, task and what the server shares with this client, and the node's
    overrides; `blobs`: the global model and the state kept, `state.<name>`). Returns the
    reply's parts: `{"row": ...}` and the upload and state blobs, or `{"refused": why}`
    when this node cannot train the server's run. The same in the ClientApp's process and
    in a warm worker's (`flower.worker`)."""
    c = int(req["client"])
    try:
        client = client_for(json.loads(req["config"]), str(req["method"]), req["overrides"],
                            c, json.loads(req["share"]), clock)
    except NodeDataError as exc:  # this node cannot train the server's run: say why
        return {"refused": str(exc)}, {}
    device = client.ctx.device
    with clock.phase("decode"):
        global_params = {k: v.to(device) for k, v in from_blob(blobs["global"]).items()}
        task = RoundTask.from_description(json.loads(req["task"]), global_params)
    # what this client keeps between rounds lives in the node's Flower state: a node may
    # answer each message from a fresh process, and Flower keeps context.state for the run
    with clock.phase("state"):
        client.adopt_states(blobs_state(c, {k.removeprefix("state."): v
                                            for k, v in blobs.items()
                                            if k.startswith("state.")}))
    with clock.phase("flops"):  # counted once per process (a fresh process: every round)
        step_flops(client.ctx, client.ctx.client_blocks[c], task.frozen)
    with clock.phase("train"):
        update = client.train(task)
    with clock.phase("state"):
        out = {f"state.{k}": v for k, v in state_blobs(c, client.states([c])).items()}
    with clock.phase("reply"):
        if update.encoded is not None:
            out["upload"] = encoded_blob(update.encoded)
    return {"row": update.row.to_dict()}, out
