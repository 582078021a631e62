"""Collectives run on the world's device and hand results back where the caller keeps them.

NCCL takes CUDA tensors only. Without a GPU, the stand-in for "a device that is not the CPU"
is torch's lazy-tensor device (CPU-backed, so values can be checked), and the torch.distributed
calls are replaced by a recorder that notes what reaches them and sums as two identical ranks
would (× 2).
"""
from __future__ import annotations

import re

import pytest
import torch
import torch.distributed as dist
from torch import nn

from conftest import ROOT
from fdapt_core.dist.data_parallel import group_dp
from fdapt_core.dist.transport import merge_strategy
from fdapt_core.dist.world import World
from fdapt_core.fl.fedavg import FedAvg


@pytest.fixture(scope="module")
def lazy():
    ts = pytest.importorskip("torch._lazy.ts_backend")
    ts.init()
    return torch.device("lazy", 0)


class Recorder:
    """torch.distributed's collectives, one process pretending to be two identical ranks."""

    def __init__(self, monkeypatch):
        self.tensors: list[tuple[torch.device, torch.dtype]] = []
        self.calls: list[tuple[str, dict]] = []
        monkeypatch.setattr(dist, "all_reduce", self.all_reduce)
        monkeypatch.setattr(dist, "all_gather_object", self.all_gather_object)
        monkeypatch.setattr(dist, "broadcast_object_list", self.broadcast_object_list)
        monkeypatch.setattr(dist, "barrier", self.barrier)

    def all_reduce(self, tensor, op=None, group=None, async_op=False):
        self.tensors.append((tensor.device, tensor.dtype))
        tensor.mul_(2)

    def all_gather_object(self, out, obj, group=None):
        self.calls.append(("all_gather_object", {}))
        out[:] = [obj] * len(out)

    def broadcast_object_list(self, box, src=0, group=None, device=None):
        self.calls.append(("broadcast_object_list", {"src": src}))

    def barrier(self, group=None, async_op=False, device_ids=None):
        self.calls.append(("barrier", {"device_ids": device_ids}))


def world_on(device, group_size=1) -> World:
    return World(rank=0, size=2, local_rank=0, local_size=2, device=device, backend="nccl",
                 group_size=group_size, group_index=0, group_rank=0)


def test_the_merge_sums_on_the_worlds_device_and_keeps_its_sums_where_they_were(
        lazy, monkeypatch):
    rec = Recorder(monkeypatch)
    g = {"a": torch.zeros(3), "b": torch.ones(2, 2)}
    up = {"a": torch.tensor([1.0, 2.0, 3.0]), "b": torch.full((2, 2), 5.0)}
    fedavg = FedAvg()
    fedavg.begin_round(g)
    fedavg.accumulate(0, up, 3.0)
    merge_strategy(world_on(lazy), fedavg, lead=True)
    # the weight totals (built on the CPU) and the float64 sums all went through the world's
    # device; the two ranks' sums are back on the CPU, still float64
    assert rec.tensors and all(d == lazy and t == torch.float64 for d, t in rec.tensors)
    assert all(s.device.type == "cpu" and s.dtype == torch.float64
               for s in fedavg._sum.values())
    assert fedavg._total_w == 6.0
    new = fedavg.finish()
    for k in g:  # two identical ranks: the mean is the one upload
        assert new[k].device.type == "cpu" and new[k].dtype == torch.float32
        assert torch.equal(new[k], up[k])


@pytest.mark.parametrize("whole_world", [False, True])
def test_data_parallel_gradients_and_loss_sums_on_the_worlds_device(lazy, monkeypatch,
                                                                     whole_world):
    rec = Recorder(monkeypatch)
    dp = group_dp(world_on(lazy, group_size=2), whole_world=whole_world)
    net = nn.Linear(3, 2)
    net(torch.ones(1, 3)).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    dp.all_reduce_grads(list(net.parameters()))
    loss = torch.tensor(1.5)
    total = dp.all_reduce_scalar(loss)
    assert [d for d, _ in rec.tensors] == [lazy, lazy]
    for p, g in zip(net.parameters(), grads):
        assert p.grad.device.type == "cpu" and torch.equal(p.grad, 2 * g)
    assert total.device.type == "cpu" and float(total) == 3.0 and float(loss) == 1.5


def test_one_flat_reduce_of_mixed_dtypes_gives_each_back_as_it_was(lazy, monkeypatch):
    from fdapt_core.dist.collectives import all_reduce

    rec = Recorder(monkeypatch)
    sent = []
    a, b = torch.arange(4.0).reshape(2, 2), torch.tensor([0.1, 0.2], dtype=torch.float64)
    out = all_reduce([a, b], lazy, count=lambda purpose, n: sent.append((purpose, n)),
                     purpose="test")
    assert rec.tensors == [(lazy, torch.float64)]  # float32 travels exactly in float64
    assert [(t.device.type, t.dtype, t.shape) for t in out] == \
        [("cpu", torch.float32, (2, 2)), ("cpu", torch.float64, (2,))]
    assert torch.equal(out[0], 2 * a) and torch.equal(out[1], 2 * b)
    assert sent == [("test", 6 * 8)]
    assert all_reduce([], lazy) == [] and rec.tensors == [(lazy, torch.float64)]


def test_object_collectives_and_the_barrier_go_through_the_helpers(monkeypatch):
    from fdapt_core.dist.collectives import broadcast_object, gather_objects

    rec = Recorder(monkeypatch)
    world = world_on(torch.device("cuda", 1))  # a device object only: nothing runs on it
    assert gather_objects(world, {"x": 1}) == [{"x": 1}, {"x": 1}]
    assert broadcast_object(world, "rank 0's") == "rank 0's"
    assert broadcast_object(None, 7) == 7  # no world: nothing to send
    world.barrier()
    assert rec.calls == [("all_gather_object", {}), ("broadcast_object_list", {"src": 0}),
                         ("barrier", {"device_ids": [1]})]


def test_no_collective_is_called_outside_the_helpers():
    """A new `dist.all_reduce(...)` elsewhere would skip the move to the world's device."""
    calls = re.compile(r"\bdist\.(all_reduce|all_gather\w*|broadcast\w*|reduce\w*|barrier|"
                       r"gather\w*|scatter\w*|send|recv|isend|irecv)\(")
    found = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "fdapt_core").rglob("*.py")
                   if p.name != "collectives.py" and calls.search(p.read_text()))
    assert found == [], found


def test_an_upload_held_on_the_cpu_folds_into_sums_on_the_models_device(lazy):
    """The distributed executor keeps uploads on the CPU while the norm screen waits for the
    whole round; the running sums live with the parameters."""
    g = {"a": torch.zeros(3).to(lazy)}
    fedavg = FedAvg()
    fedavg.begin_round(g)
    fedavg.accumulate(0, {"a": torch.tensor([1.0, 2.0, 3.0])}, 2.0)
    new = fedavg.finish()
    assert new["a"].device == lazy and torch.equal(new["a"].cpu(), torch.tensor([1.0, 2.0, 3.0]))
