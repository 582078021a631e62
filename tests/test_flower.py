"""The harness as a Flower federation: what travels, simulation parity, lost nodes."""
from __future__ import annotations

import itertools

import pytest
import torch

pytest.importorskip("flwr")

from flwr.app import Context, Error, Message, RecordDict  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from conftest import silo_corpus  # noqa: E402
from fdapt_core.errors import ConfigError, FdaptError  # noqa: E402
from fdapt_core.fl.codecs import CODECS, Codec  # noqa: E402
from fdapt_core.flower import client as flower_client  # noqa: E402
from fdapt_core.flower import node as flower_node  # noqa: E402
from fdapt_core.flower.server import FlowerTransport  # noqa: E402
from fdapt_core.flower.wire import (encoded_record, record_encoded,  # noqa: E402
                                    record_tensors, tensors_record)
from fdapt_core.session import run_session  # noqa: E402
from fdapt_core.runner import run


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """What Flower's ServerApp runtime sets before a ServerApp runs (a Message reads the run
    id from it): the in-process grid below stands in for that runtime. Without it a test run
    alone failed, and passed only after a simulation had left it set."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


def test_wire_carries_every_codec_and_dtype_exactly():
    g = {"w": torch.randn(6, 5), "b": torch.randn(7)}
    sent = {k: v + 0.01 * torch.randn_like(v) for k, v in g.items()}
    for name in CODECS:
        codec = Codec(name, 0.3)
        enc, _ = codec.encode(sent, g)
        rec = encoded_record(enc)
        back = codec.decode(record_encoded(name, rec), g)
        assert all(torch.equal(back[k], codec.decode(enc, g)[k]) for k in g)
        # Flower's count: the encoded bytes plus the blob's header (each part's name, dtype,
        # shape and offsets), nothing more
        n_parts = sum(len(ts) for ts in enc.parts.values())
        assert enc.nbytes < rec.count_bytes() <= enc.nbytes + 16 + 96 * n_parts
        assert len(rec) == 1  # one Array: Flower moves each as requests of its own
    tied = torch.randn(4, 4)
    ts = {"bf16": torch.randn(3, 2).bfloat16(),
          "int8": torch.randint(-5, 5, (4,), dtype=torch.int8), "empty": torch.zeros(0),
          "step": torch.tensor(3.0),  # 0-dim: an AdamW step count
          "emb": tied, "head": tied}  # tied weights: one storage under two names
    back = record_tensors(tensors_record(ts))
    assert all(torch.equal(back[k], t) and back[k].dtype == t.dtype for k, t in ts.items())


def _weights(rec_dir):
    return load_file(str(rec_dir / "model" / "model.safetensors"))


@pytest.mark.slow
def test_simulation_matches_sequential_and_counts_flower_bytes(tiny, tmp_path, monkeypatch):
    """Flower's simulation runtime (`flwr run` against a SuperLink in simulation mode, Ray
    workers) against the sequential executor: freezing and an upload codec, so what travels
    differs from the model. Flower's deprecated `run_simulation` is not what runs it."""
    import flwr.simulation

    from fdapt_core.flower import simulation

    def deprecated(*a, **k):
        raise AssertionError("the deprecated flwr.simulation.run_simulation was called")

    monkeypatch.setattr(flwr.simulation, "run_simulation", deprecated)
    monkeypatch.setattr(simulation, "run_simulation", deprecated, raising=False)
    sets = ["freeze.policy=bottom", "freeze.k=1"]
    seq = run(tiny(*sets, "name=seq"), "ffdapt-int8")
    fl = run(tiny(*sets, "name=fl", "dist.executor=flower"), "ffdapt-int8")
    a = _weights(tmp_path / "results" / "seq" / "ffdapt-int8")
    b = _weights(tmp_path / "results" / "fl" / "ffdapt-int8")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
    assert fl["config"]["dist"]["executor"] == "flower"
    for rs, rf in zip(seq["rounds"], fl["rounds"]):
        for cs, cf in zip(rs["clients"], rf["clients"]):
            # the harness's count is the same; Flower's adds the keys, the run's config down
            # and the client's row up, never less than what was encoded
            assert (cs["bytes_up"], cs["bytes_down"]) == (cf["bytes_up"], cf["bytes_down"])
            assert cf["bytes_up"] < cf["flower_bytes_up"] < cf["bytes_up"] * 1.2 + 20_000
            assert cf["bytes_down"] < cf["flower_bytes_down"]
            assert cf["bytes_up_dense"] < cf["bytes_down"]  # the frozen block stayed home


class LocalGrid:
    """A stand-in for the SuperLink's Grid: each node runs the ClientApp in this process; a
    node in `dead` answers as the SuperLink does for a node that stopped sending heartbeats."""

    def __init__(self, n_nodes: int, dead=(), node_config=None, fresh_process=False):
        self.ids = {1000 + i: i for i in range(n_nodes)}  # node id -> partition id
        self.dead, self.pending, self.count = set(dead), {}, itertools.count()
        self.node_config = node_config or {}  # partition id -> more node config
        self.contexts = {}  # node id -> its Context, kept for the run as a SuperNode keeps it
        # each message answered as from a fresh ClientApp process: nothing built is kept
        self.fresh_process = fresh_process

    def get_node_ids(self):
        return list(self.ids)

    def push_messages(self, messages):
        out = []
        for m in messages:
            mid = f"m{next(self.count)}"
            m.metadata.__dict__["_message_id"] = mid  # what the SuperLink stamps
            self.pending[mid] = m
            out.append(mid)
        return out

    def pull_messages(self, ids):
        for mid in ids:
            m = self.pending.pop(mid)
            node = m.metadata.dst_node_id
            if self.ids[node] in self.dead and m.metadata.message_type == "train":
                yield Message(Error(code=1, reason="Node Unavailable"), reply_to=m)
                continue
            ctx = self.contexts.setdefault(node, Context(
                run_id=1, node_id=node, node_config={"partition-id": self.ids[node],
                                                     **self.node_config.get(self.ids[node], {})},
                state=RecordDict(), run_config={}))
            if self.fresh_process:
                flower_node._built.clear()
            yield flower_client.app(m, ctx)


@pytest.mark.slow
def test_a_lost_node_is_a_dropped_client_and_the_round_goes_on(tiny):
    cfg = tiny("fl.clients=3", "name=lost", "dist.executor=flower")
    rec = run_session(cfg, "fdapt", transport=FlowerTransport(LocalGrid(3, dead={1}), "fdapt", 10))
    for r in rec["rounds"]:
        lost = r["clients"][1]
        assert lost["dropped"] and lost["fault"] == "lost" and "Node Unavailable" in lost["error"]
        assert r["accepted"] == [0, 2] and r["aggregated"]
        assert all(c["flower_bytes_up"] > c["bytes_up"] for c in r["clients"] if c is not lost)
    # lost in every round: the run went on without it, and says so (it said "finished")
    assert rec["status"] == "degraded" and rec["final_eval"]["loss"] < rec["initial_eval"]["loss"]
    assert rec["degraded"].startswith("client(s) [1] lost in every round")
    assert "Node Unavailable" in rec["degraded"]
    from fdapt_core.runs import run_state  # a complete record: reused, reported, not retrained

    assert run_state(cfg, "fdapt")[0] == "finished"
    # a federation where no client can train is broken, not faulty: the run says so
    with pytest.raises(FdaptError, match="every client of round 1 failed"):
        run_session(tiny("fl.clients=2", "name=dead", "dist.executor=flower"), "fdapt",
             transport=FlowerTransport(LocalGrid(2, dead={0, 1}), "fdapt", 10))


@pytest.mark.parametrize("sets, method", [(["train.optimizer_reset=persist"], "fdapt"),
                                          ([], "fdapt-topk")])
@pytest.mark.slow
def test_client_state_lives_in_the_nodes_flower_state(tiny, tmp_path, sets, method):
    """Persisted AdamW moments and the top-k codec's error feedback kept by each node in its
    Flower `context.state`, every message answered as from a fresh process: the same weights
    as the sequential executor within 1e-5 (without the node state: 0.06 and 0.07 apart,
    checked)."""
    sets = [*sets, "fl.rounds=3", "fl.clients=2"]
    run(tiny(*sets, "name=seq"), method)
    grid = LocalGrid(2, fresh_process=True)
    rec = run_session(tiny(*sets, "name=fl", "dist.executor=flower"), method,
                      transport=FlowerTransport(grid, method, 10))
    a = _weights(tmp_path / "results" / "seq" / method)
    b = _weights(tmp_path / "results" / "fl" / method)
    assert rec["status"] == "finished"
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
    assert all("fdapt.client.moments" in c.state or "fdapt.client.residual" in c.state
               for c in grid.contexts.values())


def test_a_flower_run_with_client_state_is_not_resumed(tiny):
    with pytest.raises(ConfigError, match="starts empty"):
        run(tiny("train.optimizer_reset=persist", "dist.executor=flower"), "fdapt", resume=True)


@pytest.mark.slow
def test_nodes_holding_only_their_own_documents_train_the_sequential_run(tiny, tmp_path):
    """Each node's data-path holds its institution's documents alone (in its own order); the
    server sends the tokenizer and the ids, and keeps the held-out set: the weights equal the
    sequential executor's within 1e-5. (Such a node used to re-split its documents and learn
    its own vocabulary, and the run ended "finished".)"""
    _, sets, files = silo_corpus(tmp_path, tiny, ["fl.rounds=2"])
    run(tiny(*sets, "name=seq"), "ffdapt")
    grid = LocalGrid(2, node_config={c: {"data-path": str(f)} for c, f in files.items()},
                     fresh_process=True)
    rec = run_session(tiny(*sets, "name=silo", "dist.executor=flower"), "ffdapt",
                      transport=FlowerTransport(grid, "ffdapt", 10))
    assert rec["status"] == "finished"
    a = _weights(tmp_path / "results" / "seq" / "ffdapt")
    b = _weights(tmp_path / "results" / "silo" / "ffdapt")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5


@pytest.mark.slow
def test_a_node_missing_a_document_or_holding_other_text_refuses(tiny, tmp_path):
    import json

    _, sets, files = silo_corpus(tmp_path, tiny)
    lines = files[0].read_text().splitlines()
    files[0].write_text("\n".join(lines[1:]) + "\n")  # one document gone
    grid = LocalGrid(2, node_config={c: {"data-path": str(f)} for c, f in files.items()})
    with pytest.raises(FdaptError, match="client 0's node refused.*missing"):
        run_session(tiny(*sets, "name=gone", "dist.executor=flower"), "fdapt",
                    transport=FlowerTransport(grid, "fdapt", 10))
    rec = json.loads((tmp_path / "results" / "gone" / "fdapt" / "record.json").read_text())
    assert rec["status"] == "failed" and "missing" in rec["error"]
    first = json.loads(lines[0])
    files[0].write_text("\n".join([json.dumps({**first, "text": first["text"] + " edited"}),
                                   *lines[1:]]) + "\n")
    flower_node._built.clear()
    grid = LocalGrid(2, node_config={c: {"data-path": str(f)} for c, f in files.items()})
    # the message names the node's file and the first id whose text differs (it named none)
    with pytest.raises(FdaptError, match=rf"client 0's node refused.*{files[0]}.*other text"
                                         rf".*first under id '{first['id']}'"):
        run_session(tiny(*sets, "name=edited", "dist.executor=flower"), "fdapt",
                    transport=FlowerTransport(grid, "fdapt", 10))


@pytest.mark.parametrize("warm", [-1, "abc"])
def test_a_node_config_the_harness_refuses_ends_the_run_in_one_line(tiny, tmp_path, warm):
    """`warm-s=-1` on one node: the run went on without that client (`lost` every round) and
    finished `degraded`; now the node's reply names itself and the key, and the run fails."""
    import json

    grid = LocalGrid(2, node_config={1: {"warm-s": warm}})
    with pytest.raises(FdaptError, match=r"node 1001 refused the run: .*'warm-s' must be a "
                                         rf"number of seconds >= 0 .*not {warm!r} \(node 1001\)"):
        run_session(tiny("name=badnode", "dist.executor=flower"), "fdapt",
                    transport=FlowerTransport(grid, "fdapt", 10))
    rec = json.loads((tmp_path / "results" / "badnode" / "fdapt" / "record.json").read_text())
    assert rec["status"] == "failed" and "warm-s" in rec["error"]


def test_nodes_sharing_a_cache_do_not_undo_each_others_tokenizer_write(tiny, tmp_path):
    """Two nodes of one host (a simulation's Ray workers) write the server's tokenizer into
    the same cache at once: neither may delete the folder the other is filling. (Before, each
    wrote into `<name>.tmp` after removing it: a simulation failed one run in three with
    'Directory not empty'.)"""
    from fdapt_core.prepare import node_share, prepare

    share = node_share(prepare(tiny(), "fdapt"))
    cache = tmp_path / "node-cache"
    folder = cache / f"node-tokenizer-{share['tokenizer_sha256'][:16]}"
    other = folder.with_name(folder.name + ".tmp")  # the other node's write, under way
    other.mkdir(parents=True)
    (other / "half-written.json").write_text("{}")
    tok = flower_node.node_tokenizer(share["tokenizer"], share["tokenizer_sha256"],
                                       str(cache))
    assert (other / "half-written.json").exists()
    assert tok("a sentence")["input_ids"]
    # and the second writer, finding the folder there, loads it as it is
    again = flower_node.node_tokenizer(share["tokenizer"], share["tokenizer_sha256"],
                                         str(cache))
    assert again.get_vocab() == tok.get_vocab()
    assert sorted(p.name for p in cache.iterdir()) == sorted([folder.name, other.name])


def test_a_node_whose_cached_tokenizer_differs_rebuilds_it_from_the_servers_bytes(tiny, tmp_path):
    """Node 1's cache held a folder of the right name whose tokenizer.json had 2 ids swapped:
    the node was lost in every round ("transformers versions differ?") and the run said
    "finished". The node now rebuilds the folder from the bytes the server sent."""
    import json

    from fdapt_core.model import tokenizer_sha256
    from fdapt_core.prepare import node_share, prepare

    share = node_share(prepare(tiny(), "fdapt"))
    cache = tmp_path / "node-cache"
    first = flower_node.node_tokenizer(share["tokenizer"], share["tokenizer_sha256"],
                                         str(cache))
    folder = cache / f"node-tokenizer-{share['tokenizer_sha256'][:16]}"
    spec = json.loads((folder / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = sorted(vocab)[10:12]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    tok = flower_node.node_tokenizer(share["tokenizer"], share["tokenizer_sha256"],
                                       str(cache))
    assert tokenizer_sha256(tok) == share["tokenizer_sha256"] == tokenizer_sha256(first)
    assert json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"][a] != vocab[a]
    # a damaged file (not JSON) is rebuilt too
    (folder / "tokenizer.json").write_text('{1: 2}')
    tok = flower_node.node_tokenizer(share["tokenizer"], share["tokenizer_sha256"],
                                       str(cache))
    assert tokenizer_sha256(tok) == share["tokenizer_sha256"]


def test_a_refused_run_ends_the_serverapp_in_one_line_without_a_traceback(
        tiny, tmp_path, cache_dir):
    """A node refusing the run (its data-path holds another client's file) ended the ServerApp
    with the right message and then a page of traceback, "Exit Code: 201". Flower logs every
    exception with its traceback; the harness's `RunFailed` carries none, the record says
    failed, and the caller that submitted the run gets the error back."""
    import io
    import json
    import logging

    from flwr.common.logger import FLOWER_LOGGER, log

    from fdapt_core.flower import server
    from tests.conftest import TINY

    _, sets, files = silo_corpus(tmp_path, tiny)
    swapped = {0: {"data-path": str(files[1])}, 1: {"data-path": str(files[0])}}
    out, result = tmp_path / "results", tmp_path / "result.json"
    overrides = [*TINY, f"output_dir={out}", f"cache_dir={cache_dir}", *sets, "name=swap"]
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={
        "config": "configs/default.yaml", "method": "fdapt", "resume": False,
        "set": " ".join(f"'{o}'" for o in overrides), "result": str(result)})
    with pytest.raises(server.RunFailed) as caught:
        server.main(LocalGrid(2, node_config=swapped), context)
    assert "client 0's node refused the run" in str(caught.value)
    buf = io.StringIO()  # as Flower's runner logs what main raised
    handler = logging.StreamHandler(buf)
    FLOWER_LOGGER.addHandler(handler)
    try:
        log(logging.ERROR, "%s raised an exception", "ServerApp", exc_info=caught.value)
    finally:
        FLOWER_LOGGER.removeHandler(handler)
    assert "Traceback" not in buf.getvalue() and "refused the run" in buf.getvalue()
    assert json.loads(result.read_text())["status"] == "failed"
    rec = json.loads((out / "swap" / "fdapt" / "record.json").read_text())
    assert rec["status"] == "failed" and "refused" in rec["error"]


def test_a_bug_in_the_serverapp_still_reaches_the_caller_that_submitted_the_run(
        tiny, tmp_path, cache_dir):
    """Not a user's error (a RuntimeError, a torch error): its traceback stays, and the result
    file still tells `run_flower` what happened (it said "ended without a record")."""
    import json

    from fdapt_core.flower import server
    from tests.conftest import TINY

    class Broken(LocalGrid):
        def push_messages(self, messages):
            raise RuntimeError("the grid went away")

    result = tmp_path / "result.json"
    overrides = [*TINY, f"output_dir={tmp_path / 'results'}", f"cache_dir={cache_dir}"]
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={
        "config": "configs/default.yaml", "method": "fdapt", "resume": False,
        "set": " ".join(f"'{o}'" for o in overrides), "result": str(result)})
    with pytest.raises(RuntimeError, match="the grid went away"):
        server.main(Broken(2), context)
    got = json.loads(result.read_text())
    assert got["status"] == "failed" and got["error"] == "RuntimeError: the grid went away"


def _worker_pid(path) -> int:
    """The pid of the warm worker listening at `path` (the peer of a connection to it)."""
    import socket
    import struct

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        return struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                struct.calcsize("3i")))[0]


@pytest.mark.slow
def test_a_warm_worker_trains_the_sequential_run_and_keeps_what_a_fresh_process_rebuilt(
        tiny, tmp_path):
    """Node config `warm-s`: the ClientApp hands each message to a worker that keeps the
    training code, documents and model loaded (a fresh ClientApp process paid ~5 s a round
    for them). Same weights as the sequential executor, client state (persisted AdamW)
    included; the worker started once per node; its set-up paid in the first round only."""
    import os
    import signal
    import time

    from fdapt_core.flower import worker

    _, sets, files = silo_corpus(tmp_path, tiny, ["fl.rounds=3", "train.optimizer_reset=persist"])
    run(tiny(*sets, "name=seq"), "fdapt")
    grid = LocalGrid(2, node_config={c: {"data-path": str(f), "warm-s": 60}
                                     for c, f in files.items()}, fresh_process=True)
    cfg = tiny(*sets, "name=warm", "dist.executor=flower")
    transport = FlowerTransport(grid, "fdapt", 60)
    paths = [worker.socket_path(n, c, cfg.cache_dir) for n, c in grid.ids.items()]
    try:
        rec = run_session(cfg, "fdapt", transport=transport)
        pids = [_worker_pid(p) for p in paths]  # one worker a node, alive between rounds
        a = _weights(tmp_path / "results" / "seq" / "fdapt")
        b = _weights(tmp_path / "results" / "warm" / "fdapt")
        assert rec["status"] == "finished"
        assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
        for r, row in enumerate(rec["rounds"]):
            for c in row["clients"]:
                node = c["node"]
                assert node["worker_s"] >= 0 and node["train_s"] >= c["wall_s"]
                # started, and the node's data and model built, in the first round only
                assert ("worker_start_s" in node) == (r == 0) == ("model_s" in node)
        assert all("fdapt.client.moments" in x.state for x in grid.contexts.values())
        # the run is over: the ServerApp releases the workers, and none outlives the run
        transport.release()
        for pid, path in zip(pids, paths):
            for _ in range(100):
                if not os.path.exists(f"/proc/{pid}") or \
                        open(f"/proc/{pid}/stat").read().split()[2] == "Z":
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"warm worker {pid} still runs after the release")
            assert not path.exists()
            # and its log, empty, is gone with it (empty logs piled up in the folder)
            assert not list(path.parent.glob(f"{path.stem}*.log"))
    finally:
        for path in paths:
            if path.exists():
                os.kill(_worker_pid(path), signal.SIGKILL)
            path.unlink(missing_ok=True)
            for log in path.parent.glob(f"{path.stem}*.log"):
                log.unlink(missing_ok=True)


@pytest.mark.slow
def test_a_warm_worker_exits_when_idle_or_when_its_node_is_gone(tmp_path):
    import subprocess
    import sys
    import time

    from fdapt_core.flower import worker

    node = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    procs = {}
    for name, idle in (("idle", 1.0), ("orphan", 120.0)):
        path = worker.socket_path(1, 0, str(tmp_path / name))
        procs[name] = (subprocess.Popen([sys.executable, "-m", "fdapt_core.flower.worker",
                                         str(path), str(idle), str(node.pid)]), path)
    try:
        deadline = time.monotonic() + 120
        while not all(p.exists() for _, p in procs.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert procs["idle"][0].wait(30) == 0 and not procs["idle"][1].exists()
        assert procs["orphan"][0].poll() is None  # its node is alive: it waits
        node.kill()
        node.wait()
        assert procs["orphan"][0].wait(30) == 0 and not procs["orphan"][1].exists()
    finally:
        node.kill()
        for p, _ in procs.values():
            p.kill()


def test_releasing_the_warm_workers_never_fails_a_finished_run():
    """The release follows the record: a SuperLink already gone must not turn a finished run
    into an error (its workers then exit after their warm-s)."""
    from types import SimpleNamespace

    class Gone:
        def push_messages(self, messages):
            raise ConnectionError("the SuperLink is gone")

    transport = FlowerTransport(Gone(), "fdapt", 10)
    transport.nodes = {0: 1000}
    transport.ctx = SimpleNamespace(cfg=SimpleNamespace(cache_dir="cache"))
    transport.release()  # raised ConnectionError before
