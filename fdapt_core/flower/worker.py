"""A node's warm worker (node config `warm-s`): the harness's training code, the node's
documents, model and FLOP counts kept loaded between a run's messages.

A SuperNode of Flower 1.42 answers every message from a fresh ClientApp process (a
long-lived ClientApp is an open request upstream), and a fresh process pays torch's and
transformers' imports, the node's set-up and the FLOP count again, every round: about 5 s
on 2 cores. With `warm-s=<seconds>` in the node config the ClientApp stays thin: it hands
the message's bytes to this worker over a Unix socket and returns its answer. The first
message starts the worker; it serves one message at a time, as the SuperNode sends them.

Its lifetime is the run's: the ServerApp releases it when the run ends (a last query to each
node), and it exits by itself when no message came for `warm-s` seconds, or when the process
that started its first ClientApp (the SuperNode's SuperExec) is gone. It runs in the
SuperNode's session, so stopping the node's session stops it too. The socket lives in a
folder only its user can enter.

    python -m fdapt_core.flower.worker SOCKET IDLE_S WATCH_PID [LOG]   (started by the ClientApp)
"""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Optional

from ..errors import FdaptError
from . import frames
from .phases import NodeClock

START_TIMEOUT_S = 180.0  # a worker's start: the imports and the interpreter, on a busy host
_started: list[subprocess.Popen] = []  # this process's workers, reaped once they exit


def socket_path(node_id: int, partition: int, cache_dir: str) -> Path:
    """The worker's socket of this node, partition and cache: short (a Unix socket's path
    has a limit of about 100 bytes), in a folder of this user's only."""
    folder = Path(tempfile.gettempdir()) / f"fdapt-node-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
        raise FdaptError(f"{folder}: the warm worker's folder must be this user's alone "
                         "(mode 700); remove it, or set warm-s=0 in the node config")
    where = os.path.abspath(cache_dir)
    key = hashlib.sha256(f"{node_id}-{partition}-{where}".encode()).hexdigest()[:16]
    return folder / f"{key}.sock"


def call(path: Path, idle_s: float, header: dict, blobs: dict[str, bytes],
         timeout_s: float) -> tuple[dict, dict[str, bytes], float]:
    """Send one message's parts to the worker at `path` (started first if none listens);
    (its answer, its blobs, the seconds spent starting it: 0 when it was warm)."""
    started = 0.0
    sock = _connect(path)
    if sock is None:
        t0 = time.perf_counter()
        sock = _start(path, idle_s)
        started = time.perf_counter() - t0
    with sock:
        sock.settimeout(timeout_s)
        frames.send(sock, header, blobs)
        answer, out = frames.recv(sock)
    if "error" in answer:
        if answer.get("kind") == "fdapt":  # something its user can fix: say it as it is
            raise FdaptError(answer["error"])
        raise RuntimeError(f"the node's warm worker failed: {answer['error']}\n"
                           + answer.get("traceback", ""))
    return answer, out, started


def release(path: Path) -> bool:
    """Stop the worker at `path` (the run is over); False: none was listening."""
    sock = _connect(path)
    if sock is None:
        return False
    with sock:
        sock.settimeout(30.0)
        frames.send(sock, {"stop": True}, {})
        frames.recv(sock)
    return True


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        return sock
    except OSError:  # none listens (never started, idled out, or killed)
        sock.close()
        return None


def _start(path: Path, idle_s: float) -> socket.socket:
    """A worker for `path`, in this process's session (the SuperNode's), watching this
    process's parent (the SuperNode's SuperExec, which outlives this message)."""
    path.unlink(missing_ok=True)  # a dead worker's socket
    _started[:] = [p for p in _started if p.poll() is None]  # no exited child left unreaped
    log = path.with_name(f"{path.stem}.{time.time_ns()}.log")  # its own: removed if empty
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fdapt_core.flower.worker", str(path),
                                 str(idle_s), str(os.getppid()), str(log)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    _started.append(proc)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the node's warm worker exited ({proc.returncode}) as it "
                               f"started; its log ({log}):\n{log.read_text()[-2000:]}")
        sock = _connect(path)
        if sock is not None:
            return sock
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the node's warm worker did not listen within {START_TIMEOUT_S:g} s")


def serve(path: Path, idle_s: float, watch_pid: int, log: Optional[Path] = None) -> None:
    """Answer messages until told to stop (the run is over), none came for `idle_s`
    seconds, or `watch_pid` is gone; then remove its `log` if nothing was written to it
    (one empty file a worker piled up in the node's folder)."""
    from . import node  # the training code, imported once for the worker's life

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = path.with_name(f"{path.name}.{os.getpid()}")
    listener.bind(str(tmp))
    os.chmod(tmp, 0o600)
    ino = os.stat(tmp).st_ino
    listener.listen(1)
    os.replace(tmp, path)  # listening before it is found
    listener.settimeout(1.0)
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_s and _alive(watch_pid):
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(None)
                try:
                    header, blobs = frames.recv(conn)
                except (ConnectionError, ValueError):  # a caller gone, or not ours: next
                    continue
                if header.get("stop"):  # the run is over (`release`)
                    frames.send(conn, {}, {})
                    break
                clock = NodeClock(None, 0.0, 0.0, fresh=False)
                try:
                    answer, out = node.handle(header, blobs, clock)
                    answer["phases"] = clock.phases
                except FdaptError as exc:
                    answer, out = {"error": str(exc), "kind": "fdapt"}, {}
                except Exception as exc:  # noqa: BLE001 (a bug: the node reports it failed)
                    answer, out = {"error": f"{type(exc).__name__}: {exc}", "kind": "bug",
                                   "traceback": traceback.format_exc()}, {}
                frames.send(conn, answer, out)
            last = time.monotonic()
    finally:
        listener.close()
        try:
            if path.stat().st_ino == ino:  # still ours (not a newer worker's)
                path.unlink()
        except OSError:
            pass
        try:
            if log is not None and log.stat().st_size == 0:
                log.unlink()
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's (a reused pid)
        return True


if __name__ == "__main__":
    serve(Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]),
          Path(sys.argv[4]) if len(sys.argv) > 4 else None)
