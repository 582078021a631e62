"""The head warm-up of a study (`bench study`): retrained in a fresh checkout (its weights are
not committed) and checked against the held-out loss it reached before; its line in the report."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

from rich.console import Console

err = Console(stderr=True)


def record_loss(run: Path) -> Optional[float]:
    from fdapt_core.records import read_json

    try:
        return read_json(run / "record.json")["final_eval"]["loss"]
    except (OSError, ValueError, KeyError):
        return None


def record_sha(run: Path) -> Optional[str]:
    from fdapt_core.records import read_json

    try:
        return read_json(run / "record.json").get("model_sha256")
    except (OSError, ValueError):
        return None


def model_sha(run: Path) -> Optional[str]:
    path = run / "model" / "model.safetensors"
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_warmup_again(run: Path, before: Optional[float],
                        before_sha: Optional[str] = None) -> None:
    """A warm-up trained again (its weights were not committed) must end where it ended
    before, or cells trained before and after would start from different models: the
    record keeps the hash of the weights it saved (`model_sha256`) and every earlier
    held-out loss, a retrained model is checked against the recorded hash, and the report
    names a difference."""
    from fdapt_core.records import read_json, write_json_atomic

    rec = read_json(run / "record.json")
    sha = model_sha(run)
    if sha is not None:
        rec["model_sha256"] = sha
    if before is not None:
        rec["earlier_final_losses"] = [*rec.get("earlier_final_losses", []), before]
    write_json_atomic(run / "record.json", rec)
    if before_sha is not None and sha is not None and sha != before_sha:
        err.print(f"[yellow]warning:[/yellow] the head warm-up trained again saved other "
                  f"weights (sha256 {sha[:12]}, recorded {before_sha[:12]}): cells trained "
                  "before start from another model")
    elif before_sha is not None and sha == before_sha:
        err.print("head warm-up trained again: its weights match the recorded sha256 "
                  f"{sha[:12]}", highlight=False)
    if before is not None and abs(rec["final_eval"]["loss"] - before) > 1e-6:
        err.print(f"[yellow]warning:[/yellow] the head warm-up trained again ended at held-out "
                  f"loss {rec['final_eval']['loss']:.6f}, not {before:.6f}: cells trained "
                  "before start from another model (the report says so)")


def warmup_setup(run: Path) -> list[str]:
    """The head warm-up's line in the report's setup: its steps, cost and what it did to the
    held-out loss, kept apart from the methods' costs."""
    from fdapt_core.records import read_json

    rec = read_json(run / "record.json")
    t = rec.get("totals") or {}
    return [f"- **head warm-up** (the start of `general` and every method, its cost not in "
            f"theirs): the start model's LM head alone trained, body and embeddings frozen, "
            f"{t.get('steps', 0):,} steps, {t.get('tokens', 0):,} tokens, "
            f"{(t.get('wall_s') or 0) / 60:.1f} min"
            + (f", {t['train_flops']:.3g} FLOPs" if t.get("train_flops") else "") + "; "
            f"held-out loss {rec['initial_eval']['loss']:.3f} → {rec['final_eval']['loss']:.3f}"
            f" (perplexity {rec['initial_eval']['ppl']:,.0f} → {rec['final_eval']['ppl']:,.0f})"
            + _retrained(rec)]


def _retrained(rec: dict) -> str:
    """The warm-up's retraining in later sessions (its weights are not committed)."""
    earlier = rec.get("earlier_final_losses") or []
    if not earlier:
        return ""
    same = all(abs(x - rec["final_eval"]["loss"]) <= 1e-6 for x in earlier)
    return (f"; trained again {len(earlier)}× in later sessions, "
            + ("ending at the same held-out loss each time" if same else
               "**ending at another held-out loss** (" + ", ".join(f"{x:.6f}" for x in earlier)
               + "): cells trained in different sessions started from different models"))
