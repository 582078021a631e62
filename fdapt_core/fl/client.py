"""The client half of a federated round: a `RoundTask` in, a `ClientUpdate` out.

Everything the client needs from the server arrives in the task (the global weights, its
frozen set, the fault drawn for it, the proximal weight); the rest is its own: its blocks, the
run's config, and what it keeps between rounds (AdamW moments under `optimizer_reset:
persist`, the top-k codec's error feedback), per client id, so that one `Client` serves every
client of a sequential run on one model object. The server half (`server.Server`)
never reaches into it: it reads the update it is given, and checkpoints `state_dict()`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..checkpoint import ResumeError
from ..freeze.policies import apply_freeze
from .codecs import Codec, relative_error
from .context import Context
from .local import LocalStats, make_optimizer, train_steps
from .messages import ClientUpdate, RoundTask
from .params import load_moments, load_params, nbytes, save_moments
from .rows import ClientRow, client_row, step_flops
from .schedule import client_round_batches, client_weight, seed_client_round, steps_per_round


class Client:
    """Trains clients' rounds on the context's model. `dp`: the data-parallel helper of this
    rank's group (None: one process a client); `zero`: a DeepSpeed ZeRO trainer, or None."""

    def __init__(self, ctx: Context, codec: Codec, dp=None, zero=None):
        self.ctx, self.codec, self.dp, self.zero = ctx, codec, dp, zero
        self.opt_state: dict[int, dict] = {}  # optimizer_reset: persist, by client
        self.residual: dict[int, dict[str, torch.Tensor]] = {}  # topk error feedback

    def train(self, task: RoundTask) -> ClientUpdate:
        """Load the global model, train the round, encode what goes back."""
        ctx, cfg, client = self.ctx, self.ctx.cfg, task.client
        model, blocks = ctx.model, ctx.client_blocks[client]
        steps = steps_per_round(len(blocks), cfg)
        ctx.callbacks.client_start(client, steps)
        flops = step_flops(ctx, blocks, task.frozen)
        if task.fault == "drop":  # gone before it downloaded anything
            return ClientUpdate(dropped_row(ctx, task, "drop"), None)
        load_params(model, task.global_params)
        apply_freeze(model, task.plan)
        mask_gen = seed_client_round(cfg, client, task.round)
        batches = client_round_batches(cfg, client, len(blocks), task.round)  # its own epochs
        if self.zero is not None:  # a DeepSpeed ZeRO engine trains; the model takes its result
            self.zero.reset(task.global_params)
            st = self.zero.train(task.frozen, blocks, batches, steps, ctx.objective, mask_gen,
                                 ctx.callbacks.step)
            self.zero.copy_to(model)
        else:
            st = self.train_local(task, batches, steps, mask_gen)
        params = dict(model.named_parameters())
        # What crosses the network: the whole global model down (a LoRA base is already
        # there: its adapters); up, only what changed (frozen blocks stay home unless
        # fl.send_frozen), in the dtype it is held in.
        sent = {n: p for n, p in params.items()
                if n in task.global_params and (cfg.fl.send_frozen or p.requires_grad)}
        # encoded here (fl.upload_codec), decoded by the server
        encoded, residual = self.codec.encode(sent, task.global_params,
                                              self.residual.get(client))
        if residual is not None:
            self.residual[client] = residual
        row = client_row(ctx, client, st, task.plan, flops,
                         nbytes(task.global_params.values()), encoded.nbytes)
        row.weight, row.fault = client_weight(cfg, len(blocks)), task.fault
        row.bytes_up_dense = nbytes(sent.values())
        if self.codec.name != "none":
            row.codec_error = relative_error(self.codec.decode(encoded, task.global_params),
                                             sent, task.global_params)
        apply_freeze(model, None)
        return ClientUpdate(row, encoded)

    def train_local(self, task: RoundTask, batches, steps: int,
                    mask_gen: torch.Generator) -> LocalStats:
        """The plain loop with a fresh (or the client's persisted) AdamW and schedule.

        Persisted AdamW state is kept by parameter name, so a frozen set that changes from
        round to round gives every parameter its own moments back: one frozen this round keeps
        what it left with until it trains again."""
        ctx, cfg = self.ctx, self.ctx.cfg
        persist = cfg.train.optimizer_reset == "persist"
        total = steps * cfg.fl.rounds if persist else steps
        opt, sched = make_optimizer(ctx.model, cfg.train, total, ctx.device)
        kept = self.opt_state.get(task.client) if persist else None
        if kept is not None:
            load_moments(opt, ctx.model, kept["moments"])
            sched.load_state_dict(kept["sched"])
            # the schedule's state leaves the groups' learning rate at step 0's: set it
            for group, lr in zip(opt.param_groups, sched.get_last_lr()):
                group["lr"] = lr
        st = train_steps(ctx.model, ctx.client_blocks[task.client], batches,
                         optimizer=opt, scheduler=sched, cfg=cfg.train,
                         objective=ctx.objective,
                         mask_gen=mask_gen, device=ctx.device, on_step=ctx.callbacks.step,
                         dp=self.dp, prox_mu=task.prox_mu, prox_ref=task.global_params,
                         head=ctx.head)
        if persist:
            moments = dict(kept["moments"]) if kept is not None else {}
            moments.update(save_moments(opt, ctx.model))
            self.opt_state[task.client] = {"moments": moments, "sched": sched.state_dict()}
        return st

    # --- what it keeps between rounds --------------------------------------------------
    def states(self, clients: Sequence[int]) -> dict[str, dict]:
        """What these clients keep between rounds (to hand to another rank's copy)."""
        return {"opt": {c: self.opt_state[c] for c in clients if c in self.opt_state},
                "residual": {c: self.residual[c] for c in clients if c in self.residual}}

    def adopt_states(self, states: dict[str, dict]) -> None:
        """Take clients' states trained elsewhere (another rank's group)."""
        self.opt_state.update(states["opt"])
        self.residual.update(states["residual"])

    def state_dict(self) -> dict:
        return {"client_opt": self.opt_state, "client_residual": self.residual}

    def load_state_dict(self, state: dict) -> None:
        if any("moments" not in s for s in state["client_opt"].values()):
            raise ResumeError("--resume: the checkpoint holds the clients' optimizer state by "
                              "position (an older version), which cannot be matched to "
                              "parameters; start the run again without --resume")
        self.opt_state = dict(state["client_opt"])
        self.residual = dict(state.get("client_residual", {}))


def dropped_row(ctx: Context, task: RoundTask, fault: str,
                error: Optional[str] = None) -> ClientRow:
    """The row of a client that sent nothing back this round: a drawn `drop`, or (`lost`) a
    node of a real federation that died, errored or timed out."""
    blocks = ctx.client_blocks[task.client]
    row = client_row(ctx, task.client, LocalStats(), task.plan,
                     step_flops(ctx, blocks, task.frozen), 0, 0)
    row.weight, row.dropped, row.fault, row.error = \
        client_weight(ctx.cfg, len(blocks)), True, fault, error
    return row
