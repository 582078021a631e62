"""One run, end to end: data → partition → tokenizer → blocks → model → rounds → record.

`run` picks the executor the config names: this process (sequential), the ranks of a
torch.distributed world (`dist.launch`), or Flower's simulation runtime (`flower.simulation`). Each
of them runs `session.run_session`, which builds the run through `assembly` from what
`prepare` read. Everything that can fail on the user's input fails in `prepare`, before
anything is written under the run's folder (`runs.run_dir`).
"""
from __future__ import annotations

from .config import RunConfig
from .dist.launch import run_distributed
from .profiling.host import RunRegistry
from .session import run_session


def run(cfg: RunConfig, method: str, resume: bool = False, callbacks=None) -> dict:
    """Train one method; return its record (also written to <run dir>/record.json).

    With `dist.executor: distributed` every rank of the torch.distributed world calls this;
    rank 0 alone evaluates and writes, and a rank that fails names itself and its client."""
    with RunRegistry():  # other runs on this host see this one when they pick threads
        if cfg.dist.executor == "distributed":
            return run_distributed(cfg, method, resume, callbacks, run_session)
        if cfg.dist.executor == "flower":
            from .flower.simulation import run_flower  # flwr and Ray: the optional extra

            return run_flower(cfg, method, resume, callbacks)
        return run_session(cfg, method, resume, callbacks)
