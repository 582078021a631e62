"""The run record: one JSON per run, written atomically, and the environment it ran in."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

SCHEMA_VERSION = 1
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: mkstemp makes 0600 files, records should be readable like others
PACKAGES = ("torch", "transformers", "datasets", "tokenizers", "safetensors", "numpy",
            "peft", "deepspeed", "fdapt-bench")


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def write_folder_atomic(folder: Path, write) -> None:
    """`write(tmp)` fills a folder beside `folder`, which then takes its place: a kill never
    leaves half a model folder."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def git_dirty(root: Path | None = None) -> bool | None:
    """Whether the training code (`fdapt_core/`) differs from the recorded commit, uncommitted
    changes or untracked files alike (None outside a git checkout): a record trained on
    changed code cannot be told apart by its commit alone."""
    root = root or Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", "fdapt_core"], cwd=root,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def environment(device: torch.device) -> dict:
    """Package versions, device and host facts that a reader needs to compare two records."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": _git_commit(),
        "git_dirty": git_dirty(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def loop_wall_s(rounds: list[dict]) -> float:
    """Wall seconds the clients' training loops held the rounds: their sum where the clients
    ran one after another, the slowest rank's share where ranks ran them side by side (the
    sum of every rank's loops would exceed the wall time)."""
    return sum(max(x["local_train_s"] for x in r["ranks"]) if r.get("ranks")
               else sum(c["wall_s"] for c in r["clients"]) for r in rounds)
