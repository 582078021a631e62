"""`dist.executor: flower`: the run as a Flower app on Flower's simulation runtime.

Flower's supported way to simulate (since `run_simulation` was deprecated) is `flwr run`
against a SuperLink started with `--simulation`. This starts one on a free loopback port with
a Flower home of its own, submits the harness's app (`flower_app/`: the ServerApp of
`flower.server`, the ClientApp of `flower.client`) with the run's resolved config, and waits.
Each client is a virtual SuperNode (`partition-id` = the client) whose ClientApp runs in a Ray
worker, one CPU each. The ServerApp runs the harness's round loop and writes the record, as
in a deployment; each client row adds the bytes Flower carried (`flower_bytes_down`,
`flower_bytes_up`). The harness's progress lines from the ServerApp's log are relayed to
stderr; the whole log stays in the temporary home until the run ends, and its tail is in the
error when a run fails without a record.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

import yaml

from ..errors import FdaptError
from ..methods import check
from .local_deployment import BIN, stop, superlink, wait_up
from .support import check_resume

ROOT = Path(__file__).resolve().parents[2]  # the harness's checkout: flower_app/ is there
APP = ROOT / "flower_app"


def run_flower(cfg, method: str, resume: bool = False, callbacks=None) -> dict:
    """Run `method` with every client a simulated Flower node; return the record.

    `callbacks` are not called: the round loop runs in Flower's simulation process, whose
    progress lines are relayed instead."""
    _, resolved, _ = check(cfg, method)  # everything a run refuses, before Flower starts
    check_resume(resolved, resume)
    if not (APP / "pyproject.toml").is_file():
        raise FdaptError(f"dist.executor: flower runs the Flower app in {APP.name}/ of the "
                         "harness's checkout, which this installation lacks (install it "
                         "from a checkout: pip install -e '.[flower]')")
    workers = max(1, min(cfg.fl.clients, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="fdapt-flower-") as tmp:
        home = Path(tmp)
        run_yaml = home / "run.yaml"  # the resolved config the ServerApp loads
        result = home / "result.json"  # where the ServerApp hands back the record (or error)
        run_yaml.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        link, port, env = superlink(home / "flwr", ROOT, home / "superlink.log",
                                    simulation=True)
        tail: deque[str] = deque(maxlen=40)
        try:
            wait_up(port, link)
            run_config = " ".join([f"config={json.dumps(str(run_yaml))}",
                                   f"method={json.dumps(method)}",
                                   f"result={json.dumps(str(result))}",
                                   f"resume={str(bool(resume)).lower()}"])
            # one CPU a worker, so as many clients train at once as there are cores
            federation = " ".join([f"num-supernodes={cfg.fl.clients}",
                                   "client-resources-num-cpus=1",
                                   "client-resources-num-gpus=0.0",
                                   f"init-args-num-cpus={workers}",
                                   'init-args-logging-level="ERROR"',
                                   "init-args-log-to-driver=false"])
            with subprocess.Popen([str(BIN / "flwr"), "run", str(APP), "local", "--stream",
                                   "--run-config", run_config,
                                   "--federation-config", federation],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) as run:
                for line in run.stdout:
                    tail.append(line.rstrip())
                    if "fdapt " in line:  # the harness's own progress lines
                        print(line.rstrip(), file=sys.stderr, flush=True)
        except RuntimeError as exc:
            raise FdaptError(f"dist.executor: flower: {exc}; the SuperLink's log:\n"
                             + (home / "superlink.log").read_text()[-4000:]) from None
        finally:
            stop(link)
        rec = _read_result(result)
        if rec is None:
            raise FdaptError("dist.executor: flower: the simulation ended without a record; "
                             "the end of Flower's log:\n" + "\n".join(tail))
    if rec.get("status") not in ("finished", "degraded"):  # degraded: its record says why
        raise FdaptError(f"dist.executor: flower: the run {rec.get('status')}: "
                         f"{rec.get('error', 'no error recorded')}")
    return rec


def _read_result(path: Path) -> dict | None:
    """What the ServerApp handed back: the run's record, or its error (None: nothing)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
