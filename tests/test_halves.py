"""The round as two halves that exchange one message each way: the client half does what its
`RoundTask` says (not what its own config would decide), and the task survives the wire."""
from __future__ import annotations

import json

import torch

from fdapt_core.assembly import build_context
from fdapt_core.fl.client import Client
from fdapt_core.fl.codecs import Codec
from fdapt_core.fl.context import NoCallbacks
from fdapt_core.fl.messages import RoundTask
from fdapt_core.freeze.policies import PlanMaker
from fdapt_core.prepare import prepare
from fdapt_core.runs import run_dir


def _client(cfg, method="fdapt"):
    prep = prepare(cfg, method)
    ctx = build_context(prep, run_dir(prep.cfg, method), NoCallbacks(), None)
    return Client(ctx, Codec(prep.cfg.fl.upload_codec, prep.cfg.fl.topk_fraction))


def test_the_client_half_freezes_what_the_task_says(tiny):
    """fdapt's config freezes nothing; a task that freezes block 0 and the embeddings is
    obeyed: those tensors neither move nor travel, and the row says so."""
    client = _client(tiny("fl.rounds=1"))
    model = client.ctx.model
    plan = PlanMaker(model)([0], True)
    start = client.ctx.global_params()
    update = client.train(RoundTask(0, 1, start, plan, None, 0.0))
    assert update.row.frozen_blocks == [0] and update.row.frozen_embeddings
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], start[n]) for n in plan.names)
    assert any(not torch.equal(after[n], start[n]) for n in start if n not in plan.names)
    assert plan.names.isdisjoint(update.encoded.parts)  # frozen tensors stay home


def test_a_dropped_task_trains_nothing(tiny):
    client = _client(tiny("fl.rounds=1"))
    start = client.ctx.global_params()
    update = client.train(RoundTask(0, 0, start, None, "drop", 0.0))
    assert update.encoded is None and update.row.dropped and update.row.steps == 0
    assert all(torch.equal(p, start[n]) for n, p in client.ctx.model.named_parameters())


def test_a_round_task_survives_the_wire(tiny):
    client = _client(tiny("fl.rounds=1"))
    plan = PlanMaker(client.ctx.model)([1, 2], False)
    task = RoundTask(3, 1, client.ctx.global_params(), plan, "scale", 0.05)
    back = RoundTask.from_description(json.loads(json.dumps(task.describe())),
                                      task.global_params)
    assert back == task
