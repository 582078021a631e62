"""The executors, in one table: how a run is launched and where its clients train.

`dist.executor` names a row. Everything else asks the row what it needs to know (does every
rank of a torch.distributed world run it? do the clients train on nodes that hold their own
documents? which optional install does it need?), so no other file compares executor names,
and adding one is one row here plus its launcher and transport.

A launcher runs one method under the executor, `launch(cfg, method, resume, callbacks)`,
and returns the record. It is named by "module:function" and imported when a run starts, as
a plugin's entry point is: the Flower launcher needs an optional install.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Executor:
    name: str
    help: str
    launch: str  # "module:function" that runs one method under it
    ranks: bool = False  # every rank of a torch.distributed world runs it (torchrun)
    remote: bool = False  # clients train on nodes holding only their own documents
    extra: Optional[str] = None  # the optional install it needs (fdapt-bench[<extra>])
    extra_module: Optional[str] = None  # the module that install provides

    def launcher(self) -> Callable[..., dict]:
        module, function = self.launch.split(":")
        return getattr(importlib.import_module(module), function)


EXECUTORS: dict[str, Executor] = {e.name: e for e in (
    Executor("sequential", "every client in this process, one after another",
             "fdapt_core.session:run_session"),
    Executor("distributed", "over the torch.distributed world (launch with torchrun or "
             "`bench run --nproc N`)", "fdapt_core.runner:run_ranks", ranks=True),
    Executor("flower", "Flower's simulation runtime (`flwr run` against a local SuperLink), "
             "one virtual SuperNode per client", "fdapt_core.flower.simulation:run_flower",
             remote=True, extra="flower", extra_module="flwr"),
)}


def executor_of(cfg) -> Executor:
    """The row `cfg.dist.executor` names (validated against this table)."""
    return EXECUTORS[cfg.dist.executor]
