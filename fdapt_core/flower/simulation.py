"""`dist.executor: flower`: the run through Flower's Simulation Engine, in this process.

The harness's `ServerApp` main runs the round engine with a `FlowerExecutor` in the engine's
server thread; each client is a virtual SuperNode (`partition-id` = the client) whose
`ClientApp` runs in a Ray worker of this machine. The record is the harness's record, each
client row adding the bytes Flower carried (`flower_bytes_down`, `flower_bytes_up`).
"""
from __future__ import annotations

import logging
import os

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from ..methods import check
from .support import check_resume
from .client import app as client_app
from .server import FlowerExecutor


def run_flower(cfg, method: str, resume: bool, callbacks, run_fn) -> dict:
    """Run `method` with every client a simulated Flower node; return the record."""
    _, resolved, _ = check(cfg, method)  # everything a run refuses, before Ray starts
    check_resume(resolved, resume)
    result: dict = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            result["record"] = run_fn(cfg, method, resume, callbacks,
                                      executor=FlowerExecutor(grid, method, cfg.dist.timeout_s))
        except BaseException as exc:  # noqa: BLE001 (raised again in the caller's thread)
            result["error"] = exc

    workers = max(1, min(cfg.fl.clients, os.cpu_count() or 1))
    logging.getLogger("flwr").setLevel(logging.WARNING)
    run_simulation(server_app, client_app, num_supernodes=cfg.fl.clients, backend_config={
        # one CPU a worker, so as many clients train at once as there are cores
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": workers, "include_dashboard": False,
                      "logging_level": logging.ERROR, "log_to_driver": False}})
    if "error" in result:
        raise result["error"]
    return result["record"]
