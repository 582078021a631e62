"""The harness's server as a Flower `ServerApp`, and the executor it trains rounds with.

`FlowerExecutor` is one more executor of the round engine: the round loop, the strategy, the
freeze plans, the screen, held-out evaluation, checkpoints and the record are the harness's
own; only where a client's round runs changes. Each sampled client is sent the global model
and the run's config through the Flower `Grid`, to the node that holds its partition; its
reply is decoded and screened in client order, as the sequential executor does. A node that
dies, errors or does not answer within `dist.timeout_s` is a dropped client (`fault: lost`):
the round is aggregated from the others, or kept if fewer than `faults.min_clients` remain.

`app` (for `flwr run`) reads the run from the app's run config: `config` (a YAML path),
`method`, `set` (space-separated `key=value` overrides) and `resume`.
"""
from __future__ import annotations

import json
import shlex
import time
from logging import INFO
from pathlib import Path
from typing import Iterator, Sequence

import torch
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from ..config import load_config
from ..errors import FdaptError
from ..fl.messages import ClientUpdate
from ..methods import parse_method
from ..runs import run_dir
from ..session import run_session
from .support import check_resume
from .wire import json_record, message_bytes, record_encoded, tensors_record


class FlowerExecutor:
    """Clients' rounds on the nodes of a Flower federation (simulated or deployed).

    Parameters:
        grid: the ServerApp's `Grid`.
        method: the run's method (`ffdapt-paper-int8`, ...), which each node builds its
            trainer for.
        timeout_s: how long a round waits for replies, and for the nodes to connect
            (dist.timeout_s, 300 s by default).
    """

    name = "flower"
    trains_here = False  # on the nodes

    def __init__(self, grid: Grid, method: str, timeout_s: float):
        self.grid, self.method, self.timeout_s = grid, method, timeout_s
        self.nodes: dict[int, int] = {}  # partition (client) -> node id

    def exchange(self, msgs: dict, timeout: float) -> dict:
        """Send {key: message}; return {key: reply} for those answered within `timeout`
        (an error reply too: the node failed, or the SuperLink found it gone)."""
        keys = dict(zip(self.grid.push_messages(list(msgs.values())), msgs))
        replies: dict = {}
        deadline = time.monotonic() + timeout
        while len(replies) < len(keys) and time.monotonic() < deadline:
            waiting = [i for i, k in keys.items() if k not in replies]
            for reply in self.grid.pull_messages(waiting):
                key = keys.get(reply.metadata.reply_to_message_id)
                if key is not None:
                    replies[key] = reply
            time.sleep(0.1)
        return replies

    def connect(self, n_clients: int) -> dict[int, int]:
        """Ask every node which partition it holds, until each client has one (or time out)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            asked = {n: Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY)
                     for n in self.grid.get_node_ids() if n not in self.nodes.values()}
            for node, reply in self.exchange(asked, min(30.0, self.timeout_s)).items():
                if not reply.has_error():
                    self.nodes.setdefault(int(reply.content["node"]["partition-id"]), node)
            if all(c in self.nodes for c in range(n_clients)):
                return self.nodes
            if time.monotonic() > deadline:
                missing = sorted(set(range(n_clients)) - set(self.nodes))
                raise FdaptError(f"Flower: no node holds partition(s) {missing} after "
                                 f"{self.timeout_s:g} s (dist.timeout_s); start one SuperNode "
                                 f"per client with --node-config 'partition-id=<i>' (after a "
                                 "SuperLink restart, restart the SuperNodes too: they do not "
                                 "reconnect)")
            time.sleep(0.5)

    def run_round(self, trainer, r: int, clients: Sequence[int],
                  global_params: dict[str, torch.Tensor]) -> Iterator[dict]:
        ctx = trainer.ctx
        if not self.nodes:
            self.connect(ctx.cfg.fl.clients)
        down = tensors_record(global_params)
        config = json.dumps(ctx.cfg.to_dict())
        msgs, tasks = {}, {c: trainer.task(r, c, global_params) for c in clients}
        share = ctx.node_share
        for c in clients:
            # what a node holding only its own documents needs: the tokenizer, the ids
            content = RecordDict({"global": down, "run": json_record(
                config=config, method=self.method, task=tasks[c].describe(),
                share={"tokenizer": share["tokenizer"],
                       "tokenizer_sha256": share["tokenizer_sha256"],
                       **share["clients"][c]})})
            msgs[c] = Message(content, dst_node_id=self.nodes[c],
                              message_type=MessageType.TRAIN, group_id=f"round-{r}")
        bytes_down = message_bytes(next(iter(msgs.values())).content) if msgs else 0
        replies = self.exchange(msgs, self.timeout_s)
        for c, m in sorted(replies.items()):
            if not m.has_error() and "refused" in m.content:  # the node cannot train this run
                raise FdaptError(f"Flower: client {c}'s node refused the run: "
                                 f"{m.content['refused']['reason']}")
        failed = [m for m in replies.values() if m.has_error()]
        if clients and len(failed) == len(clients):  # not a fault: the clients cannot train
            raise FdaptError(f"Flower: every client of round {r + 1} failed; the first: "
                             f"{failed[0].error.reason}")
        for c in clients:  # in client order, as the sequential executor screens
            ctx.callbacks.client_start(c, trainer.local_steps(c))
            reply = replies.get(c)
            if reply is None or reply.has_error():
                why = f"no reply within dist.timeout_s ({self.timeout_s:g} s)" \
                    if reply is None else f"the node failed: {reply.error.reason}"
                row, upload = trainer.dropped_row(tasks[c], "lost", why), None
            else:
                row = json.loads(reply.content["row"]["row"])
                enc = record_encoded(trainer.codec.name, reply.content["upload"]) \
                    if "upload" in reply.content else None
                upload = trainer.receive(ClientUpdate(row, enc), global_params)
                row.update(flower_bytes_down=bytes_down,
                           flower_bytes_up=message_bytes(reply.content))
            trainer.settle(row, upload)
            ctx.callbacks.client_end(c, row)
            yield row


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
    try:
        check_resume(parse_method(method, cfg)[1], bool(rc.get("resume", False)))
        rec = run_session(cfg, method, bool(rc.get("resume", False)),
                          callbacks=Progress(method, record),
                          executor=FlowerExecutor(grid, method, cfg.dist.timeout_s))
    except FdaptError as exc:  # one line first; Flower then marks the run failed
        _say(f"fdapt {method}: error: {exc}")
        raise
    _say(f"fdapt {method}: {rec['status']}, final held-out loss "
         f"{rec['final_eval']['loss']:.4f}; record: {record}")
