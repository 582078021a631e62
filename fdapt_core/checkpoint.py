"""Round checkpoints: global weights, trainer state and RNG, written atomically.

A checkpoint is a folder `round-NNNN/` (or `partial-NNNN/`, what an interrupted round had
finished) holding `model.safetensors` (the global parameters),
`state.safetensors` (every tensor of the trainer state: optimizer moments, RNG), and
`state.json` (everything else, with tensors replaced by references, and the sha256 of both
tensor files). It is written as `round-NNNN.tmp-*`, fsynced and renamed; `latest` names the
newest complete one. The two newest are kept, so a damaged latest can fall back.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import FdaptError
from .records import write_json_atomic


def flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON skeleton of `obj`; its tensors are moved into `tensors` under numbered names.

    Dict keys keep their type (optimizer states are keyed by int), tuples stay tuples."""
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().contiguous()
        return {"__tensor__": name}
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [flatten(v, tensors) for v in obj]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    return obj


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
        return {k: unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Checkpoints:
    """Save and load round checkpoints under one folder."""

    keep = 2

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def save(self, round_index: int, params: dict[str, torch.Tensor], state: dict) -> Path:
        """A complete round: the new global model and the trainer state after it."""
        final = self._write(f"round-{round_index:04d}", round_index, params, state)
        (self.folder / "latest.tmp").write_text(final.name)
        os.replace(self.folder / "latest.tmp", self.folder / "latest")
        shutil.rmtree(self.folder / f"partial-{round_index:04d}", ignore_errors=True)
        self._prune()
        return final

    def save_partial(self, round_index: int, state: dict) -> Path:
        """What an interrupted round had finished (its model is the previous round's)."""
        return self._write(f"partial-{round_index:04d}", round_index, {}, state)

    def load_partial(self, round_index: int) -> dict | None:
        folder = self.folder / f"partial-{round_index:04d}"
        if not folder.is_dir():
            return None
        try:
            return self._load(folder)[2]
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            warnings.warn(f"{folder.name} is damaged ({exc}); the round restarts", stacklevel=2)
            return None

    def _write(self, name: str, round_index: int, params: dict[str, torch.Tensor],
               state: dict) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / name
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}.tmp-", dir=self.folder))
        tensors: dict[str, torch.Tensor] = {}
        skeleton = flatten(state, tensors)
        save_file({k: v.detach().cpu().contiguous() for k, v in params.items()},
                  str(tmp / "model.safetensors"))
        save_file(tensors, str(tmp / "state.safetensors"))
        for f in ("model.safetensors", "state.safetensors"):
            with open(tmp / f, "rb") as fh:
                os.fsync(fh.fileno())
        meta = {"round": round_index, "state": skeleton,
                "sha256": {f: _sha256(tmp / f) for f in ("model.safetensors",
                                                         "state.safetensors")}}
        write_json_atomic(tmp / "state.json", meta)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(self.folder)
        return final

    def _complete(self) -> list[Path]:
        return sorted(p for p in self.folder.glob("round-[0-9][0-9][0-9][0-9]") if p.is_dir())

    def _prune(self) -> None:
        for old in self._complete()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        for tmp in self.folder.glob("*.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def load_latest(self) -> tuple[int, dict[str, torch.Tensor], dict] | None:
        """(round, params, state) of the newest intact checkpoint, or None if there is none."""
        if not self.folder.is_dir():
            return None
        for ckpt in reversed(self._complete()):
            try:
                return self._load(ckpt)
            except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
                warnings.warn(f"checkpoint {ckpt.name} is damaged ({exc}); trying the previous "
                              "one", stacklevel=2)
        return None

    def _load(self, ckpt: Path) -> tuple[int, dict[str, torch.Tensor], dict]:
        meta = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
        for name, digest in meta["sha256"].items():
            if _sha256(ckpt / name) != digest:
                raise ValueError(f"{name} checksum mismatch")
        params = load_file(str(ckpt / "model.safetensors"))
        tensors = load_file(str(ckpt / "state.safetensors"))
        return meta["round"], params, unflatten(meta["state"], tensors)


class ResumeError(FdaptError):
    """--resume was asked for a run that cannot be continued."""
