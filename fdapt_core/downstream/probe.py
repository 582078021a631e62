"""A linear probe: logistic regression on a model's frozen features, in place of fine-tuning.

Fine-tuning moves every weight, and its seed (head, dropout, data order) moves the score by
more than a short DAPT does (the deciding study: fine-tuning seed variance 4.5–9.5 points² on
ChemProt against 0–0.5 between pretraining seeds). A probe reads what pretraining put into the
representation and nothing else: the encoder stays as DAPT left it, the classifier is convex
and its fit deterministic, so the score's noise is the test set's and the pretraining seed's.

Features: a sequence is the mean of its last hidden states over its tokens; a word is its
first word-piece's last hidden state (a word cut off by truncation is predicted `O`, as in
fine-tuning). Standardised on the training split, then scikit-learn's `LogisticRegression`
for each inverse regularisation in `C_GRID`; the best on dev (or in 5-fold cross-validation on
the training examples, or one C fixed in advance: the task's `probe_select`) is scored on test.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from transformers import AutoModel
from transformers.utils import logging as hf_logging

from . import outcomes
from .decoders import is_decoder, task_tokenizer
from .encoding import batch, encode_texts, encode_tokens, score_predictions
from .tasks import TaskConfig

# inverse regularisation strengths tried, the best on dev kept. 0.001 was added after the
# pilot (results/studies/pilot-probe/) picked its lowest value, 0.01, in 16 of 24 fits:
# the best strength could lie below the grid
C_GRID = (0.001, 0.01, 0.1, 1.0)
BATCH = 32


def _features(model, items: list[dict], pad: int, token_level: bool,
              device: torch.device) -> list[np.ndarray]:
    """Per example: its pooled vector, or one vector per word on its first piece."""
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(items), BATCH):
            chunk = items[i:i + BATCH]
            b = batch(chunk, pad, token_level)
            mask = b["attention_mask"].to(device)
            hidden = model(input_ids=b["input_ids"].to(device),
                           attention_mask=mask).last_hidden_state.float()
            if token_level:
                for j, x in enumerate(chunk):
                    out.append(hidden[j, [pos for pos, _ in x["first"]]].cpu().numpy())
            else:
                m = mask.unsqueeze(-1).float()
                out.extend(((hidden * m).sum(1) / m.sum(1)).cpu().numpy())
    return out


def _stack(items: list[dict], feats: list[np.ndarray], token_level: bool):
    """The design matrix and its labels (token level: one row per kept word)."""
    if not token_level:
        return np.stack(feats), np.array([x["label"] for x in items])
    rows = [f for f in feats if len(f)]
    labels = [x["labels"][pos] for x in items for pos, _ in x["first"]]
    return np.concatenate(rows), np.array(labels)


def _predict(clf, scaler, items: list[dict], feats: list[np.ndarray], token_level: bool,
             outside: int) -> list:
    if not token_level:
        return [int(v) for v in clf.predict(scaler.transform(np.stack(feats)))]
    preds = []
    for x, f in zip(items, feats):
        words = [outside] * x["n_words"]  # words cut off by truncation: O
        if len(f):
            for (_, w), v in zip(x["first"], clf.predict(scaler.transform(f))):
                words[w] = int(v)
        preds.append(words)
    return preds


def probe_once(model_dir: Path, task: TaskConfig, data, seed: int,
               device: torch.device) -> dict:
    """One probe: features of every split, a logistic regression per C, the dev-best on test.
    Returns what `finetune.finetune_once` returns (`dev_by_epoch` holds dev per C)."""
    t0 = time.perf_counter()
    token_level = task.type == "token_classification"
    tokenizer, separator = task_tokenizer(model_dir, is_decoder(model_dir), task.type)
    enc = (lambda s: encode_tokens(s, tokenizer, data.labels, task.max_length)) if token_level \
        else (lambda s: encode_texts(s, tokenizer, data.labels, task.max_length, separator))
    splits = {k: enc(getattr(data, k)) for k in ("train", "dev", "test")}
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "unused weights: the MLM head" is the point here
    try:
        model = AutoModel.from_pretrained(str(model_dir), use_safetensors=True).to(device)
    finally:
        hf_logging.set_verbosity(level)
    pad = tokenizer.pad_token_id or 0
    feats = {k: _features(model, v, pad, token_level, device) for k, v in splits.items()}
    outside = data.labels.index("O") if "O" in data.labels else 0
    grid = (task.probe_c,) if task.probe_select == "fixed" else C_GRID
    fits, scaler = _fit(splits["train"], feats["train"], token_level, grid, seed)
    if task.probe_select == "cv":
        history = _cross_validated(task, data, splits["train"], feats["train"], token_level,
                                   grid, seed, outside)
    else:  # dev: the choice; fixed: the one C's dev score, kept for the record
        history = [score_predictions(task, data.labels, data.dev, _predict(
            clf, scaler, splits["dev"], feats["dev"], token_level, outside))[task.metric]
                   for clf in fits]
    best = int(np.argmax(history))
    test = _predict(fits[best], scaler, splits["test"], feats["test"], token_level, outside)
    return {"seed": seed, "test": score_predictions(task, data.labels, data.test, test),
            "dev_by_epoch": history, "best_epoch": best, "probe_c": grid[best],
            "probe_select": task.probe_select, "wall_s": time.perf_counter() - t0,
            "outcome": outcomes.outcome(task, data.labels, data.test, test)}


def _fit(items: list[dict], feats: list[np.ndarray], token_level: bool, grid, seed: int):
    """A logistic regression per C on standardised features, and the scaler."""
    x, y = _stack(items, feats, token_level)
    scaler = StandardScaler().fit(x)
    # lbfgs draws nothing; the seed is kept for a solver that would (sklearn takes 32 bits)
    return [LogisticRegression(C=c, max_iter=2000, random_state=seed % 2 ** 32).fit(
        scaler.transform(x), y) for c in grid], scaler


FOLDS = 5


def _cross_validated(task: TaskConfig, data, items: list[dict], feats: list[np.ndarray],
                     token_level: bool, grid, seed: int, outside: int) -> list[float]:
    """Each C's mean score over `FOLDS` folds of the training examples (sentences, for NER),
    the folds drawn with the readout seed (`data.seed`): a choice that reads no dev data."""
    order = np.random.default_rng(data.seed + 3).permutation(len(items))
    totals = np.zeros(len(grid))
    for k in range(FOLDS):
        held = [int(i) for i in order[k::FOLDS]]
        kept = [int(i) for j, i in enumerate(order) if j % FOLDS != k]
        fits, scaler = _fit([items[i] for i in kept], [feats[i] for i in kept], token_level,
                            grid, seed)
        for j, clf in enumerate(fits):
            preds = _predict(clf, scaler, [items[i] for i in held], [feats[i] for i in held],
                             token_level, outside)
            totals[j] += score_predictions(task, data.labels, [data.train[i] for i in held],
                                           preds)[task.metric] / FOLDS
    return [float(v) for v in totals]
