"""One run, end to end: data → partition → tokenizer → blocks → model → rounds → record.

`run` picks the executor the config names: this process (sequential), the ranks of a
torch.distributed world (`dist.launch`), or Flower's simulation runtime (`flower.simulation`). Each
of them runs `session.run_session`, which builds the run through `assembly` from what
`prepare` read. Everything that can fail on the user's input fails in `prepare`, before
anything is written under the run's folder (`runs.run_dir`).
"""
from __future__ import annotations

from .config.run import RunConfig
from .dist.launch import run_distributed
from .executors import executor_of
from .profiling.host import RunRegistry
from .session import run_session


def run(cfg: RunConfig, method: str, resume: bool = False, callbacks=None) -> dict:
    """Train one method under the executor `dist.executor` names (`executors.EXECUTORS`);
    return its record (also written to <run dir>/record.json).

    Under the distributed executor every rank of the torch.distributed world calls this;
    rank 0 alone evaluates and writes, and a rank that fails names itself and its client."""
    with RunRegistry():  # other runs on this host see this one when they pick threads
        return executor_of(cfg).launcher()(cfg, method, resume, callbacks)


def run_ranks(cfg: RunConfig, method: str, resume: bool = False, callbacks=None) -> dict:
    """This rank's part of a distributed run: join the world, then the same session."""
    return run_distributed(cfg, method, resume, callbacks, run_session)
