"""The harness's server as a Flower `ServerApp`, and the executor it trains rounds with.

`FlowerTransport` is one more transport of the harness's `Server`: the round, the strategy,
the freeze plans, the screen, held-out evaluation, checkpoints and the record are the
harness's own; only where a client's round runs changes. Each sampled client is sent the
global model and the run's config through the Flower `Grid`, to the node that holds its
partition; its reply goes back to the server in client order. A node that dies, errors or
does not answer within `dist.timeout_s` is `Lost` (a dropped client, `fault: lost`): the round
is aggregated from the others, or kept if fewer than `faults.min_clients` remain.

`app` (for `flwr run`) reads the run from the app's run config: `config` (a YAML path),
`method`, `set` (space-separated `key=value` overrides) and `resume`.
"""
from __future__ import annotations

import json
import shlex
import time
from logging import INFO
from pathlib import Path
from typing import Iterator, Optional, Sequence

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from ..config.run import load_config
from ..errors import FdaptError
from ..fl.context import Context as FlContext
from ..fl.messages import ClientUpdate, Lost, RoundTask
from ..fl.rows import ClientRow
from ..methods import parse_method
from ..records import write_json_atomic
from ..runs import run_dir
from ..session import run_session
from .support import check_resume
from .wire import json_record, message_bytes, record_encoded, tensors_record


class FlowerTransport:
    """Clients' rounds on the nodes of a Flower federation (simulated or deployed).

    Parameters:
        grid: the ServerApp's `Grid`.
        method: the run's method (`ffdapt-paper-int8`, ...), which each node builds its
            trainer for.
        timeout_s: how long a round waits for replies, and for the nodes to connect
            (dist.timeout_s, 300 s by default).
    """

    trains_here = False  # on the nodes

    def __init__(self, grid: Grid, method: str, timeout_s: float):
        self.grid, self.method, self.timeout_s = grid, method, timeout_s
        self.nodes: dict[int, int] = {}  # partition (client) -> node id

    def exchange_messages(self, msgs: dict, timeout: float) -> dict:
        """Send {key: message}; return {key: reply} for those answered within `timeout`
        (an error reply too: the node failed, or the SuperLink found it gone). When each
        reply arrived (wall clock) is kept in `self.arrived`."""
        keys = dict(zip(self.grid.push_messages(list(msgs.values())), msgs))
        replies: dict = {}
        self.arrived: dict = {}
        deadline = time.monotonic() + timeout
        while len(replies) < len(keys) and time.monotonic() < deadline:
            waiting = [i for i, k in keys.items() if k not in replies]
            for reply in self.grid.pull_messages(waiting):
                key = keys.get(reply.metadata.reply_to_message_id)
                if key is not None:
                    replies[key], self.arrived[key] = reply, time.time()
            time.sleep(0.05)
        return replies

    def connect(self, n_clients: int) -> dict[int, int]:
        """Ask every node which partition it holds, until each client has one (or time out)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            asked = {n: Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY)
                     for n in self.grid.get_node_ids() if n not in self.nodes.values()}
            for node, reply in self.exchange_messages(asked, min(30.0, self.timeout_s)).items():
                if not reply.has_error() and "refused" in reply.content:  # its own config
                    raise FdaptError(f"Flower: node {node} refused the run: "
                                     f"{reply.content['refused']['reason']}")
                if not reply.has_error():
                    self.nodes.setdefault(int(reply.content["node"]["partition-id"]), node)
            if all(c in self.nodes for c in range(n_clients)):
                return self.nodes
            if time.monotonic() > deadline:
                missing = sorted(set(range(n_clients)) - set(self.nodes))
                raise FdaptError(f"Flower: no node holds partition(s) {missing} after "
                                 f"{self.timeout_s:g} s (dist.timeout_s); start one SuperNode "
                                 f"per client with --node-config 'partition-id=<i>' (a "
                                 "SuperNode whose --node-config does not parse as TOML never "
                                 "starts: quote its strings; after a SuperLink restart, "
                                 "restart the SuperNodes too: they do not reconnect)")
            time.sleep(0.5)

    def bind(self, ctx: FlContext, client=None) -> None:
        """The run's config, codec and what each node needs from the server (its client's
        documents' ids and the tokenizer: `ctx.node_share`). The clients train on the nodes:
        no client half here."""
        self.ctx = ctx
        self.codec_name = ctx.cfg.fl.upload_codec
        self.config = json.dumps(ctx.cfg.to_dict())

    def exchange(self, tasks: Sequence[RoundTask]) -> Iterator[ClientUpdate | Lost]:
        """Each task to its client's node; the answers back in client order, a node that
        failed or did not answer as `Lost`."""
        ctx, t0 = self.ctx, time.perf_counter()
        self.phases: dict[str, float] = {}
        if not self.nodes:
            self.connect(ctx.cfg.fl.clients)
            self.phases["connect_s"] = time.perf_counter() - t0
        if not tasks:
            return
        t0 = time.perf_counter()
        down = tensors_record(tasks[0].global_params)
        share, msgs = ctx.node_share, {}
        for t in tasks:
            # what a node holding only its own documents needs: the tokenizer, the ids
            content = RecordDict({"global": down, "run": json_record(
                config=self.config, method=self.method, task=t.describe(),
                share={"tokenizer": share["tokenizer"],
                       "tokenizer_sha256": share["tokenizer_sha256"],
                       **share["clients"][t.client]}, sent_at=time.time())})
            msgs[t.client] = Message(content, dst_node_id=self.nodes[t.client],
                                     message_type=MessageType.TRAIN,
                                     group_id=f"round-{t.round}")
        bytes_down = message_bytes(next(iter(msgs.values())).content)
        t1 = time.perf_counter()
        self.phases["encode_s"] = t1 - t0
        replies = self.exchange_messages(msgs, self.timeout_s)
        t2 = time.perf_counter()
        self.phases["wait_s"] = t2 - t1
        for c, m in sorted(replies.items()):
            if not m.has_error() and "refused" in m.content:  # the node cannot train this run
                raise FdaptError(f"Flower: client {c}'s node refused the run: "
                                 f"{m.content['refused']['reason']}")
        failed = [m for m in replies.values() if m.has_error()]
        if len(failed) == len(tasks):  # not a fault: the clients cannot train
            raise FdaptError(f"Flower: every client of round {tasks[0].round + 1} failed; the "
                             f"first: {failed[0].error.reason}")
        for t in tasks:
            reply = replies.get(t.client)
            if reply is None or reply.has_error():
                yield Lost(t.client, f"no reply within dist.timeout_s ({self.timeout_s:g} s)"
                           if reply is None else f"the node failed: {reply.error.reason}")
                continue
            t0 = time.perf_counter()
            row = ClientRow.from_dict(json.loads(reply.content["row"]["row"]))
            row.flower_bytes_down = bytes_down
            row.flower_bytes_up = message_bytes(reply.content)
            row.node = node_phases(reply, self.arrived[t.client])
            enc = record_encoded(self.codec_name, reply.content["upload"]) \
                if "upload" in reply.content else None
            self.phases["decode_s"] = self.phases.get("decode_s", 0.0) \
                + time.perf_counter() - t0
            yield ClientUpdate(row, enc)

    def release(self) -> None:
        """The run is over: each node stops what it keeps warm for the run (`warm-s`), so
        no process of the harness outlives the run. A node that does not answer is left to
        its worker's idle timeout. It never fails the run: the record is already written,
        and an error here would hide the run's own."""
        if not self.nodes:
            return
        release = json_record(cache_dir=self.ctx.cfg.cache_dir)
        msgs = {c: Message(RecordDict({"release": release}), dst_node_id=n,
                           message_type=MessageType.QUERY) for c, n in self.nodes.items()}
        try:
            self.exchange_messages(msgs, min(30.0, self.timeout_s))
        except Exception as exc:  # noqa: BLE001 (the SuperLink gone, the grid closed)
            _say(f"fdapt {self.method}: the nodes' warm workers were not released ({exc}); "
                 "each exits after its warm-s")

    def reduce(self, strategy) -> dict:
        """The round's row gets the server's side of the exchange (`transport`: seconds
        connecting, encoding the tasks, waiting for the replies, decoding them)."""
        return {"transport": dict(getattr(self, "phases", {}))}

    def state_dict(self) -> dict:
        # what clients keep between rounds lives in the nodes' Flower state
        return {"client_opt": {}, "client_residual": {}}

    def load_state_dict(self, state: dict) -> None:
        pass


def node_phases(reply: Message, arrived: float) -> Optional[dict]:
    """The node's phases of this message (`flower.phases`), with the reply's way back
    (`return_s`: from leaving the node's handler to the server's pull)."""
    if "phases" not in reply.content:  # a node of an older harness
        return None
    phases = json.loads(reply.content["phases"]["phases"])
    replied = phases.pop("replied_at", None)
    if replied is not None:
        phases["return_s"] = arrived - replied
    return phases


class Progress:
    """The harness's progress lines in the ServerApp's log, which `flwr run --stream` shows:
    each round's held-out loss, time and accepted clients, then where the record is."""

    def __init__(self, method: str, record: Path):
        self.method, self.record = method, record

    def __getattr__(self, name):  # the other hooks: nothing to say
        return lambda *a, **k: None

    def round_start(self, round_index: int, n_rounds: int, clients: Sequence[int]) -> None:
        self.n_rounds = n_rounds
        _say(f"fdapt {self.method}: round {round_index + 1}/{n_rounds} sent to clients "
             f"{list(clients)}")

    def round_end(self, round_index: int, row: dict) -> None:
        lost = [c["client"] for c in row["clients"] if c.get("fault") == "lost"]
        _say(f"fdapt {self.method}: round {round_index + 1}/{self.n_rounds}: held-out loss "
             f"{row['eval_loss']:.4f} (ppl {row['eval_ppl']:.2f}), {row['wall_s']:.1f} s, "
             f"accepted {row.get('accepted')}" + (f", lost {lost}" if lost else "")
             + f"; record: {self.record}")


def _say(line: str) -> None:
    log(INFO, line)  # the ServerApp's log: flwr run --stream shows it


class RunFailed(FdaptError):
    """The run failed on something its user can fix; the message says what.

    Flower's ServerApp runner logs every exception with its traceback (`exc_info`), which
    buried the one line under a page of Flower's own frames. This error shows no traceback:
    it reports none (a traceback is for a bug, and this is not one). Flower still marks the
    run failed and `flwr run` exits non-zero."""

    @property
    def __traceback__(self):  # what logging's exc_info reads
        return None

    @__traceback__.setter
    def __traceback__(self, value):
        pass


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """`flwr run`: the run named by the app's run config, its record under output_dir."""
    rc = context.run_config
    path = Path(str(rc.get("config", "configs/default.yaml"))).expanduser()
    if not path.is_absolute() and not path.exists():  # the ServerApp runs in Flower's folder
        path = Path(__file__).resolve().parents[2] / path  # the harness's own checkout
    cfg = load_config(path,
                      [*shlex.split(str(rc.get("set", ""))), "dist.executor=flower"])
    method = str(rc.get("method", "fdapt"))
    record = run_dir(cfg, method).resolve() / "record.json"
    # where the caller that submitted this run (`simulation.run_flower`) wants the outcome:
    # the record itself, or the error, handed back rather than found by the file's age
    result = Path(str(rc["result"])) if rc.get("result") else None
    transport = FlowerTransport(grid, method, cfg.dist.timeout_s)
    try:
        check_resume(parse_method(method, cfg)[1], bool(rc.get("resume", False)))
        try:
            rec = run_session(cfg, method, bool(rc.get("resume", False)),
                              callbacks=Progress(method, record), transport=transport)
        finally:
            transport.release()
    except FdaptError as exc:  # one line first; Flower then marks the run failed
        _say(f"fdapt {method}: error: {exc}")
        if result is not None:
            write_json_atomic(result, {"status": "failed", "error": str(exc)})
        raise RunFailed(f"fdapt {method}: {exc}") from None
    except Exception as exc:  # a bug: its traceback stays; the caller still hears of it
        if result is not None:
            write_json_atomic(result, {"status": "failed",
                                       "error": f"{type(exc).__name__}: {exc}"})
        raise
    if result is not None:
        write_json_atomic(result, rec)
    _say(f"fdapt {method}: {rec['status']}, final held-out loss "
         f"{rec['final_eval']['loss']:.4f}; record: {record}")
