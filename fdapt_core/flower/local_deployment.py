"""Processes of a Flower deployment on this machine (a SuperLink, SuperNodes, `flwr run`):
a free loopback port, a command started in a session of its own (so that stopping it takes
the ClientApp processes it started), and stopping one. Used by the loopback measurement
(scripts/flower_loopback.py) and the deployment test."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent  # where the flower extra installs its commands


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    """`args[0]` from this Python's bin folder, its output to `log`, in its own session."""
    return subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop(p: subprocess.Popen) -> None:
    """Kill the process and its session (what it started with it)."""
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


def superlink(home: Path, root: Path, log: Path,
              simulation: bool = False) -> tuple[subprocess.Popen, int, dict]:
    """A SuperLink on a free loopback port, with a Flower home (`home`) whose `local`
    connection points at it; (the process, its port, the environment every other command of
    this deployment runs in: the home, this Python's bin folder, `root` on the import path,
    no telemetry). With `simulation`, the SuperLink runs each run in Flower's simulation
    runtime (virtual SuperNodes on Ray) instead of waiting for SuperNodes to connect."""
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:{port}"\n'
        'insecure = true\n')
    args = ["flower-superlink", "--insecure", "--disable-runtime-dependency-installation",
            "--port", str(port), *(["--simulation"] if simulation else [])]
    return start(args, log, env), port, env


def wait_up(port: int, link: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Until the SuperLink at `port` accepts connections; raise if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if link.poll() is not None:
            raise RuntimeError(f"the SuperLink exited with code {link.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the SuperLink did not listen on port {port} within {timeout_s:g} s")
