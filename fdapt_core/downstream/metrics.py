"""Scores for the downstream tasks, computed by `evaluate` modules shipped in this package.

Each score comes from `evaluate.load(<folder>)` of a metric module under `metric_modules/`
(`seqeval_f1`, `f1`, `accuracy`): thin scripts over seqeval and scikit-learn that load from
the installed package, with no network and at the versions pip records. `evaluate.load("f1")`
would instead fetch a script from the Hugging Face hub at run time, which offline and air-gapped
machines cannot reach and which this project does not pin. `load_metric` also takes a folder
path or a hub id, for a metric this package does not ship, where a hub or its cache is
reachable.

Tagging (`ner_scores`):
  * ``precision``, ``recall``, ``f1``: entity level, micro-averaged over all entity types
    (seqeval's default mode, the lenient conlleval rules: an ``I-`` tag without a preceding
    ``B-`` still starts an entity). An entity counts as right only if its type and both
    boundaries match exactly.
  * ``accuracy``: the fraction of tokens whose tag is right, ``O`` tokens included (so it is
    high even for a model that finds no entity; report it beside F1, never instead of it).

Classification (`classification_scores`):
  * ``accuracy``: the fraction of examples whose label is right.
  * ``macro_f1``: the unweighted mean of the per-class F1 over ``labels``, so that rare
    classes weigh as much as frequent ones.
  * ``micro_f1``: F1 of the pooled true positives, false positives and false negatives of the
    classes in ``labels`` but not in ``exclude``. This is how the relation-extraction
    literature reports ChemProt (the negative class ``false`` excluded): predicting the
    negative class for a true relation is a false negative, predicting a relation for a
    negative pair is a false positive, and right negatives earn nothing. With nothing
    excluded and every prediction in ``labels``, it equals accuracy.

Every score uses ``zero_division=0``: a class that is never predicted (or never true) scores
0 instead of raising a warning, so small evaluation sets give numbers, not noise.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import evaluate

from ..errors import ConfigError

MODULES = Path(__file__).resolve().parent / "metric_modules"
SHIPPED = ("seqeval_f1", "f1", "accuracy")


@functools.lru_cache(maxsize=None)
def load_metric(name: str):
    """The `evaluate` module for a shipped metric's name, a metric folder or a hub id.

    Loaded once per process (a load re-reads and hashes the script); kept in memory, so that
    concurrent runs share no cache file. An id that cannot be loaded (no hub and no cached
    copy, no such folder) raises ConfigError naming it.
    """
    path = str(MODULES / name) if name in SHIPPED else name
    try:
        return evaluate.load(path, keep_in_memory=True)
    except (OSError, ValueError) as exc:  # evaluate: FileNotFoundError; a hub: connection errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"metric {name!r}: cannot load it ({first}); shipped: "
                          f"{', '.join(SHIPPED)}") from None


def ner_scores(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict[str, float]:
    """Entity-level ``precision``, ``recall``, ``f1`` and token ``accuracy`` of IOB2 tags.

    Raises ValueError if the two lists differ in sentences or in tokens of a sentence, or
    hold no token at all: an aligned prediction per token is the caller's job, and a silent
    truncation would give wrong scores.
    """
    _check_aligned(true_tags, pred_tags)
    return load_metric("seqeval_f1").compute(predictions=pred_tags, references=true_tags)


def _check_aligned(true_tags: list[list[str]], pred_tags: list[list[str]]) -> None:
    if len(true_tags) != len(pred_tags):
        raise ValueError(f"{len(true_tags)} true sentences but {len(pred_tags)} predicted")
    for index, (true, pred) in enumerate(zip(true_tags, pred_tags)):
        if len(true) != len(pred):
            raise ValueError(f"sentence {index}: {len(true)} true tags but {len(pred)} "
                             "predicted")
    if not any(true_tags):
        raise ValueError("no tokens to score")


def classification_scores(y_true: list[str], y_pred: list[str], labels: list[str],
                          exclude: Sequence[str] = ()) -> dict[str, float]:
    """``accuracy``, ``macro_f1`` over ``labels`` and ``micro_f1`` over labels not excluded.

    An ``exclude`` name that is not in ``labels`` is ignored, not an error: a dataset version
    without a negative class (the 13-class ChemProt files carry no ``false``) then scores
    micro-F1 over all its classes. Checking the name against the training labels belongs to
    config loading, before any training, not here after it. Raises ValueError for lists of
    different lengths or empty ones, or when ``exclude`` leaves no label.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predicted")
    if not y_true:
        raise ValueError("no examples to score")
    kept = [name for name in labels if name not in exclude]
    if not kept:
        raise ValueError(f"exclude {list(exclude)} leaves no label to score")
    f1 = load_metric("f1")
    return {
        **load_metric("accuracy").compute(predictions=y_pred, references=y_true),
        "macro_f1": f1.compute(predictions=y_pred, references=y_true, labels=list(labels),
                               average="macro")["f1"],
        "micro_f1": f1.compute(predictions=y_pred, references=y_true, labels=kept,
                               average="micro")["f1"],
    }
