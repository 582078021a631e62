"""Per-example outcomes of a downstream test set, kept beside the run record for paired
statistics (`fdapt_core/stats.py`).

- NER: per test sentence, the entity counts (tp, fp, fn) as seqeval finds entities (span and
  type must both match). Summed, they give seqeval's micro precision, recall and F1.
- Classification: per test example, the true and the predicted label (indices into `labels`).
  Any headline metric (accuracy, micro-F1 over the labels not excluded, macro-F1) is
  recomputed from them on any resample of the examples.

The file, `<run>/downstream/<task>.outcomes.json`, holds one entry per fine-tuning seed; a
model's score on a resample is the mean over its fine-tuning seeds, as the record's is.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from seqeval.metrics.sequence_labeling import get_entities

from ..records import write_text_atomic


def entity_counts(true_tags: list[list[str]], pred_tags: list[list[str]]) -> list[list[int]]:
    """Per sentence [tp, fp, fn] of entities."""
    out = []
    for true, pred in zip(true_tags, pred_tags):
        t, p = set(get_entities(true)), set(get_entities(pred))
        out.append([len(t & p), len(p - t), len(t - p)])
    return out


def outcome(task, labels: list[str], examples: list, preds: list) -> dict:
    """One fine-tuning seed's per-example outcome on the test set."""
    if task.type == "token_classification":
        return {"counts": entity_counts([e.tags for e in examples],
                                        [[labels[i] for i in p] for p in preds])}
    return {"pred": [int(i) for i in preds]}


def describe(task, labels: list[str], examples: list) -> dict:
    """What the per-seed outcomes need to be scored: the kind, labels and true labels."""
    if task.type == "token_classification":
        return {"kind": "entity_counts", "metric": task.metric, "n": len(examples)}
    index = {name: i for i, name in enumerate(labels)}
    out = {"kind": "labels", "metric": task.metric, "n": len(examples), "labels": labels,
           "exclude": list(task.exclude_labels), "true": [index[e.label] for e in examples]}
    if task.unit_markers:
        out["units"] = units_of([e.text for e in examples], task.unit_markers)
    return out


def units_of(texts: list[str], markers: list[str]) -> list[int]:
    """Per example, the index of its sentence: its text with the markers removed (and spaces
    collapsed), numbered in order of first appearance. ChemProt marks one chemical-protein
    pair per example, so one sentence with several pairs is several examples."""
    ids: dict[str, int] = {}
    out = []
    for text in texts:
        for m in markers:
            text = text.replace(m, " ")
        out.append(ids.setdefault(" ".join(text.split()), len(ids)))
    return out


def unit_resample_weights(desc: dict, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """`weights[b, x]` for `resamples` resamples of the test set by its units (`desc["units"]`,
    a sentence whose examples go in and out together), or by example where it has none."""
    n = desc["n"]
    units = desc.get("units")
    if units is None:
        return resample_weights(n, rng.integers(0, n, (resamples, n)))
    units = np.asarray(units)
    k = int(units.max()) + 1
    return resample_weights(k, rng.integers(0, k, (resamples, k)))[:, units]


def score(desc: dict, seed_outcome: dict, idx: Optional[np.ndarray] = None) -> float:
    """The task's headline metric (a fraction) of one seed's outcome on examples `idx`."""
    if desc["kind"] == "entity_counts":
        c = np.asarray(seed_outcome["counts"], dtype=np.int64)
        tp, fp, fn = (c if idx is None else c[idx]).sum(axis=0)
        if desc["metric"] == "f1":
            return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0
        raise ValueError(f"metric {desc['metric']!r} cannot be recomputed from entity counts")
    true = np.asarray(desc["true"])
    pred = np.asarray(seed_outcome["pred"])
    if idx is not None:
        true, pred = true[idx], pred[idx]
    return classification_metric(desc["metric"], true, pred, len(desc["labels"]),
                                 [desc["labels"].index(x) for x in desc["exclude"]
                                  if x in desc["labels"]])


def classification_metric(metric: str, true: np.ndarray, pred: np.ndarray, n_labels: int,
                          excluded: Sequence[int] = ()) -> float:
    """accuracy, micro_f1 over the labels not excluded, or macro_f1 over all labels, as
    scikit-learn computes them (an absent class scores 0 in the macro mean)."""
    if metric == "accuracy":
        return float((true == pred).mean())
    tp = np.bincount(true[true == pred], minlength=n_labels).astype(float)
    pred_n = np.bincount(pred, minlength=n_labels).astype(float)
    true_n = np.bincount(true, minlength=n_labels).astype(float)
    if metric == "micro_f1":
        kept = np.ones(n_labels, bool)
        kept[list(excluded)] = False
        denom = pred_n[kept].sum() + true_n[kept].sum()
        return float(2 * tp[kept].sum() / denom) if denom else 0.0
    if metric == "macro_f1":
        denom = pred_n + true_n
        f1 = np.divide(2 * tp, denom, out=np.zeros(n_labels), where=denom > 0)
        return float(f1.mean())
    raise ValueError(f"metric {metric!r} cannot be recomputed from labels")


def resample_weights(n: int, rows: np.ndarray) -> np.ndarray:
    """`weights[b, x]`: how often example x is drawn in resample b (`rows[b]`, indices), so
    that a sum over a resample is one matrix product for every resample at once."""
    weights = np.zeros((len(rows), n))
    np.add.at(weights, (np.arange(len(rows))[:, None], rows), 1.0)
    return weights


def resampled_scores(desc: dict, seed_outcome: dict, weights: np.ndarray) -> np.ndarray:
    """`score(desc, seed_outcome, idx_b)` for every resample b of `resample_weights` at once:
    each metric is a function of per-example counts, summed with the weights (integers, so
    the sums are exact and the scores equal the loop's)."""
    if desc["kind"] == "entity_counts":
        if desc["metric"] != "f1":
            raise ValueError(f"metric {desc['metric']!r} cannot be recomputed from entity "
                             "counts")
        tp, fp, fn = (weights @ np.asarray(seed_outcome["counts"], dtype=float)).T
        denom = 2 * tp + fp + fn
        return np.divide(2 * tp, denom, out=np.zeros(len(tp)), where=tp > 0)
    true, pred = np.asarray(desc["true"]), np.asarray(seed_outcome["pred"])
    k = len(desc["labels"])
    hit = true == pred
    if desc["metric"] == "accuracy":
        return weights @ hit.astype(float) / weights.sum(axis=1)
    eye = np.eye(k)
    tp, pred_n, true_n = weights @ (eye[true] * hit[:, None]), weights @ eye[pred], \
        weights @ eye[true]
    if desc["metric"] == "micro_f1":
        kept = np.ones(k, bool)
        kept[[desc["labels"].index(x) for x in desc["exclude"] if x in desc["labels"]]] = False
        denom = pred_n[:, kept].sum(axis=1) + true_n[:, kept].sum(axis=1)
        return np.divide(2 * tp[:, kept].sum(axis=1), denom, out=np.zeros(len(denom)),
                         where=denom > 0)
    if desc["metric"] == "macro_f1":
        denom = pred_n + true_n
        return np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0).mean(axis=1)
    raise ValueError(f"metric {desc['metric']!r} cannot be recomputed from labels")


def mean_score(outcomes: dict, idx: Optional[np.ndarray] = None) -> float:
    """The score over fine-tuning seeds, as the record's mean."""
    return float(np.mean([score(outcomes, s, idx) for s in outcomes["seeds"]]))


def path_of(run: Path, task_name: str) -> Path:
    return run / "downstream" / f"{task_name}.outcomes.json"


def save(run: Path, task_name: str, task_hash: str, outcomes: dict) -> None:
    """Written compactly (no indentation): a few integers per test example and seed."""
    write_text_atomic(path_of(run, task_name), json.dumps(
        {**outcomes, "task": task_name, "task_hash": task_hash}, separators=(",", ":")) + "\n")


def load(run: Path, task_name: str, task_hash: Optional[str] = None) -> Optional[dict]:
    """A run's outcomes of a task (None if absent, unreadable or of other task settings)."""
    try:
        data = json.loads(path_of(run, task_name).read_text())
    except (OSError, ValueError):
        return None
    if task_hash is not None and data.get("task_hash") != task_hash:
        return None
    return data
