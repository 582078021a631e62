"""The server of a federated run: the one owner of the round (Flower's Strategy plus the
history).

A round reads top to bottom in `train_round`:

    tasks = configure(r)                   # sample clients, write each one's RoundTask
    for answer in transport.exchange(tasks):
        on_update(answer)                  # decode, screen, fold (ClientUpdate | Lost | Relayed)
    finish(r, transport.reduce(strategy))  # aggregate into the new global model

then the shared loop (`engine.RoundLoop`) evaluates, checkpoints and records the row. The
transport only moves tasks and answers (`fl/transport.py`, `dist/transport.py`,
`flower/server.py`); nothing of the round's order is written anywhere else.

Answers may arrive in any order (a torch.distributed group's own clients first, the others'
rows after the gather); the screen still judges them in client order, as it compares each
update's norm with those accepted before it. An upload that must wait for its turn is copied
off the model, which the transport's next client overwrites.
"""
from __future__ import annotations

import math
import time
from typing import Optional, Union

import torch

from ..freeze.policies import FreezePlan, FreezeSchedule
from ..interrupt import StopRequested
from .client import dropped_row
from .codecs import Codec
from .context import Context
from .engine import RoundLoop, TrainingError
from .faults import Faults
from .fedavg import FedAvg
from .messages import ClientUpdate, Lost, Relayed, RoundTask
from .params import load_params, to_cpu
from .rows import ClientRow, RoundRow
from .schedule import round_plans, sample_clients

Answer = Union[ClientUpdate, Lost, Relayed]


class Server(RoundLoop):
    """FedAvg rounds over K clients; `plans.plan(i, r)` is client i's frozen set in round r.

    Parameters:
        ctx: the run's shared parts (model = the global model, held-out set, checkpoints).
        plans: a FreezeSchedule (per client and round), a static list (one per client), or
            None (nothing frozen).
        strategy: how accepted uploads become the next global model (FedAvg, FedAdam, ...).
        transport: what carries tasks to the clients and their answers back.
        codec: the upload codec (`fl.upload_codec`) the clients encode with.
    """

    def __init__(self, ctx: Context, plans: Optional[FreezeSchedule | list[FreezePlan]],
                 strategy: FedAvg, transport, codec: Codec):
        super().__init__(ctx)
        self.plans = FreezeSchedule.of(plans)
        self.strategy, self.transport, self.codec = strategy, transport, codec
        self.faults = Faults(ctx.cfg.faults, ctx.cfg.seed, window=2 * ctx.cfg.fl.clients)
        self.pending: Optional[dict] = None  # a partial-round checkpoint to continue from
        # this round's book-keeping: set by configure, emptied by finish
        self.tasks: dict[int, RoundTask] = {}
        self.order: list[int] = []  # clients still to settle, in client order
        self.waiting: dict[int, tuple[ClientRow, Optional[dict[str, torch.Tensor]]]] = {}
        self.rows: list[ClientRow] = []  # settled rows, in client order
        self.global_params: dict[str, torch.Tensor] = {}

    # --- the round ---------------------------------------------------------------------
    def train_round(self, r: int) -> RoundRow:
        tasks = self.configure(r)
        t0 = time.perf_counter()
        try:
            for answer in self.transport.exchange(tasks):
                self.on_update(answer)
        except StopRequested:
            self.save_partial(r)
            raise
        extra = self.transport.reduce(self.strategy)
        return self.finish(r, time.perf_counter() - t0, extra)

    def configure(self, r: int) -> list[RoundTask]:
        """This round's tasks: the sampled clients (less those a resumed partial round already
        finished), each with the global model, its frozen set, its drawn fault and the
        strategy's proximal weight."""
        ctx, cfg = self.ctx, self.ctx.cfg
        clients = sample_clients(cfg, r)
        ctx.callbacks.round_start(r, cfg.fl.rounds, clients)
        self.global_params = ctx.global_params()
        self.strategy.begin_round(self.global_params)
        self.rows, self.waiting = [], {}
        if self.pending is not None and self.pending["round"] == r:  # resume inside a round
            self.rows = [ClientRow.from_dict(d) for d in self.pending["rows"]]
            self.strategy.load_partial_state(self.pending["strategy"])
            self.load_state(self.pending["trainer"])
            self.pending = None
        done = {row.client for row in self.rows}
        self.order = [c for c in clients if c not in done]
        self.tasks = {c: self.task(r, c) for c in self.order}
        return [self.tasks[c] for c in self.order]

    def task(self, r: int, client: int) -> RoundTask:
        """The server's instructions to `client` for round r (faults.*: simulated)."""
        plan = self.plans.plan(client, r) if self.plans is not None else None
        return RoundTask(r, client, self.global_params, plan, self.faults.draw(r, client),
                         self.strategy.prox_mu)

    def on_update(self, answer: Answer) -> None:
        """Take one client's answer: decode and screen its upload on its own (the row gets
        `rejected` and `update_norm`), fold it in at once where the screen needs no history,
        then settle every row whose turn has come."""
        c = answer.client
        if isinstance(answer, Lost):
            row, upload = dropped_row(self.ctx, self.tasks[c], "lost", answer.why), None
        elif isinstance(answer, Relayed):
            row, upload = answer.row, None
        else:
            row, upload = answer.row, self.receive(answer)
            if upload is not None and row.rejected is None and not self.faults.needs_history:
                # judged on its own: any order folds the same, and nothing is held
                self.strategy.accumulate(c, upload, row.weight)
                upload = None
        if row.rejected is not None:
            upload = None  # never folded: nothing to hold
        if upload is not None and self.order and self.order[0] != c:
            upload = to_cpu(upload)  # it waits for its turn; the next client reuses the model
        self.waiting[c] = (row, upload)
        while self.order and self.order[0] in self.waiting:
            self.settle(*self.waiting.pop(self.order.pop(0)))

    def receive(self, update: ClientUpdate) -> Optional[dict[str, torch.Tensor]]:
        """Decode an upload, (faults: corrupt it as the network or client would), and screen
        it on its own. None: the client dropped."""
        if update.encoded is None:
            return None
        row = update.row
        received = self.codec.decode(update.encoded, self.global_params)
        upload = self.faults.corrupt(row.fault, received, self.global_params) if row.fault \
            else received
        row.rejected, norm = self.faults.check(upload, self.global_params)
        row.update_norm = norm if math.isfinite(norm) else None
        if row.rejected is None and row.steps > 0 and not math.isfinite(row.loss):
            row.rejected = f"the training loss is {row.loss}: nothing was learned"
        return upload

    def settle(self, row: ClientRow, upload: Optional[dict[str, torch.Tensor]]) -> None:
        """The screen's verdict on one client, in client order: the row's final `rejected`;
        an accepted norm joins the screen's history before the next client is judged, and an
        accepted upload held here is folded into the strategy."""
        if not (row.dropped or row.rejected):
            row.rejected = self.faults.judge(row.update_norm)
            if row.rejected is None:
                self.faults.accept(row.update_norm)
                if upload is not None:
                    self.strategy.accumulate(row.client, upload, row.weight)
        self.rows.append(row)
        self.ctx.callbacks.client_end(row.client, row.to_dict())

    def finish(self, r: int, train_s: float, extra: Optional[dict]) -> RoundRow:
        """The new global model from the accepted uploads (or the old one, when fewer than
        `faults.min_clients` were accepted: the round changes nothing rather than trusting
        one or two), and the round's row."""
        if self.order:
            raise RuntimeError(f"round {r + 1}: no answer from clients {self.order}")
        trained = [row for row in self.rows if not row.dropped and row.steps > 0]
        if trained and not any(math.isfinite(row.loss) for row in trained):
            # not a client's fault the screen can reject: nothing can train (a tokenizer of
            # special tokens only masks nothing; a learning rate that diverges everywhere)
            raise TrainingError(f"round {r + 1}: every client's training loss is "
                                f"{trained[0].loss} (clients {[x.client for x in trained]}); "
                                "check the tokenizer (model.tokenizer), lower train.lr (now "
                                f"{self.ctx.cfg.train.lr:g}) or set train.max_grad_norm")
        t_agg = time.perf_counter()
        accepted = list(self.strategy.accepted)
        aggregated = len(accepted) >= self.ctx.cfg.faults.min_clients
        load_params(self.ctx.model,
                    self.strategy.finish() if aggregated else self.global_params)
        rows = self.rows
        return RoundRow(r, rows, train_wall_s=train_s,
                        aggregate_wall_s=time.perf_counter() - t_agg, accepted=accepted,
                        aggregated=aggregated, dropped=[s.client for s in rows if s.dropped],
                        rejected={str(s.client): s.rejected for s in rows if s.rejected},
                        **(extra or {}))

    def save_partial(self, r: int) -> None:
        """Keep the clients this round has settled; the interrupted one starts over (a
        distributed run never leaves a partial round: its ranks stop at different steps)."""
        if self.ctx.world is not None:
            return
        self.ctx.checkpoints.save_partial(r, {"round": r,
                                              "rows": [row.to_dict() for row in self.rows],
                                              "strategy": self.strategy.partial_state(),
                                              "trainer": self.state()})

    # --- FLOPs counted ahead, resume and checkpoints -----------------------------------
    def planned_counts(self, start_round):
        if not self.transport.trains_here:  # the nodes count their own
            return
        for _, c, plan in round_plans(self.ctx.cfg, self.plans, start_round):
            yield self.ctx.client_blocks[c], plan.names if plan else frozenset()

    def resume(self) -> int:
        start = super().resume()
        self.pending = self.ctx.checkpoints.load_partial(start) if self.ctx.world is None \
            else None
        return start

    def state(self) -> dict:
        return {"strategy": self.strategy.state_dict(), **self.transport.state_dict(),
                "accepted_norms": list(self.faults.accepted_norms)}

    def load_state(self, state: dict) -> None:
        self.strategy.load_state_dict(state["strategy"])
        self.transport.load_state_dict(state)
        self.faults.accepted_norms = list(state.get("accepted_norms", []))
