"""Fine-tune an adapted model on one downstream task; score the dev-best epoch on test.

A plain PyTorch loop (the same reasoning as local training: building an HF Trainer per task and
seed costs more than a quick run), AdamW with a linear schedule, bf16 autocast on CUDA, dynamic
padding. For NER the first word-piece of a word carries its tag and the rest are ignored; a word
cut off by truncation is predicted `O`, so that scores count every gold entity. Encoders and
decoders (causal LMs, told apart by their config) share the loop; decoders.py says what a
decoder needs besides.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from transformers import (AutoModelForSequenceClassification, AutoModelForTokenClassification,
                          get_scheduler)
from transformers.utils import logging as hf_logging

from ..errors import ConfigError, DataError
from ..prepare import resolve_data_path
from ..seeding import derive
from . import outcomes
from .decoders import fit_model, is_decoder, task_tokenizer
from .encoding import batch, encode_texts, encode_tokens, score_predictions
from .probe import probe_once
from .readers import (carve_dev, check_labels, label_set, read_conll, read_jsonl_examples,
                      tag_set)
from .tasks import TaskConfig



@dataclass
class TaskData:
    """The three splits of a task and its label list; `seed`: the readout seed its training
    and dev examples were drawn with (`readout_seed`)."""

    train: list
    dev: list
    test: list
    labels: list[str]
    seed: int = 0


# The quick test subset is one sample that every model of a study is scored on: its noise is
# the shared test noise the verdicts resample (`bench/verdicts.py`), so it is drawn with one
# fixed seed, not the readout's
TEST_DRAW = 2


def _subsample(examples: list, n: Optional[int], seed: int) -> list:
    if n is None or n >= len(examples):
        return examples
    keep = sorted(np.random.default_rng(seed).choice(len(examples), n, replace=False))
    return [examples[i] for i in keep]


def in_mode(task: TaskConfig, quick: bool) -> TaskConfig:
    """The task as it runs in this mode: quick mode may shorten examples and raise the lr."""
    if not quick:
        return task
    q = task.quick
    return replace(task, lr=q.lr if q.lr is not None else task.lr,
                   max_length=q.max_length or task.max_length, epochs=q.epochs, seeds=q.seeds)


def readout_seed(pretrain_seed: int) -> int:
    """The seed of a readout's data draw (the training subsample, the dev sample or the dev
    carved out of train) for every model pretrained with `pretrain_seed`: the same for each
    method and the starting model at that seed, so their differences are paired, and fresh
    for every other seed, so that the draw's effect on a readout (which examples a probe or a
    fine-tuning run learns from, which regularisation its dev sample picks) varies between
    the pretraining seeds and shows in their spread. One draw shared by every seed moved every
    difference alike, where no interval could see it (tests/test_coverage.py)."""
    return derive(pretrain_seed, "readout")


def load_task_data(task: TaskConfig, quick: bool, seed: int = 0) -> TaskData:
    """Read, check labels, carve dev if needed, and subsample in quick mode: the training and
    dev examples drawn with `seed` (a `readout_seed`), the quick test subset with `TEST_DRAW`
    (the same for every seed)."""
    def read(path: str, filter_: dict) -> list:
        p = resolve_data_path(path)
        if task.format == "conll":
            return read_conll(p)
        return read_jsonl_examples(p, task.text_field, task.label_field, task.pair_field,
                                   task.join, filter_ or None)

    train = read(task.train, task.train_filter)
    if task.dev is None:
        train, dev = carve_dev(train, task.dev_fraction, seed)
    else:
        dev = read(task.dev, task.train_filter)
    test = read(task.test, task.test_filter)
    labels = tag_set(train) if task.type == "token_classification" else label_set(train)
    unknown = [x for x in task.exclude_labels if x not in labels]
    if unknown:
        raise ConfigError(f"task {task.name}: exclude_labels {unknown} are not labels of "
                          f"{task.train} (labels: {', '.join(labels)})")
    for split, path in ((dev, task.dev or task.train), (test, task.test)):
        check_labels(split, labels, resolve_data_path(path))
    if quick:
        q = task.quick
        train = _subsample(train, q.train_examples, seed)
        dev = _subsample(dev, q.dev_examples, seed + 1)
        test = _subsample(test, q.test_examples, TEST_DRAW)
    return TaskData(train, dev, test, labels, seed)


# ----------------------------------------------------------------------------- loop

def _predict(model, items: list[dict], batch_size: int, pad_id: int, token_level: bool,
             device: torch.device, dtype, outside: int = 0) -> list:
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            b = batch(chunk, pad_id, token_level)
            with torch.autocast(device.type, dtype=dtype or torch.float32,
                                enabled=dtype is not None):
                logits = model(input_ids=b["input_ids"].to(device),
                               attention_mask=b["attention_mask"].to(device)).logits
            best = logits.argmax(-1).cpu()
            if token_level:
                for j, x in enumerate(chunk):
                    words = [outside] * x["n_words"]  # words cut off by truncation: O
                    for pos, w in x["first"]:
                        words[w] = int(best[j, pos])
                    preds.append(words)
            else:
                preds.extend(int(v) for v in best)
    return preds


def finetune_once(model_dir: Path, task: TaskConfig, data: TaskData, seed: int,
                  device: torch.device, epochs: int,
                  on_step: Optional[Callable[[], None]] = None) -> dict:
    """One seed: train `epochs`, keep the dev-best epoch, score it on test."""
    token_level = task.type == "token_classification"
    decoder = is_decoder(model_dir)
    tokenizer, separator = task_tokenizer(model_dir, decoder, task.type)
    if token_level:
        train, dev, test = (encode_tokens(s, tokenizer, data.labels, task.max_length)
                            for s in (data.train, data.dev, data.test))
    else:
        train, dev, test = (encode_texts(s, tokenizer, data.labels, task.max_length, separator)
                            for s in (data.train, data.dev, data.test))
    torch.manual_seed(seed)  # the fresh classification head and dropout
    cls = AutoModelForTokenClassification if token_level else AutoModelForSequenceClassification
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialised head" is the point here
    try:
        model = cls.from_pretrained(str(model_dir), num_labels=len(data.labels),
                                    id2label=dict(enumerate(data.labels)),
                                    label2id={l: i for i, l in enumerate(data.labels)},
                                    use_safetensors=True)
    finally:
        hf_logging.set_verbosity(level)
    if decoder:
        fit_model(model, tokenizer)
    model.to(device)
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    steps_per_epoch = math.ceil(len(train) / task.batch_size)
    total = steps_per_epoch * epochs
    opt = torch.optim.AdamW(model.parameters(), lr=task.lr, weight_decay=task.weight_decay)
    sched = get_scheduler("linear", opt, num_warmup_steps=0, num_training_steps=total)
    pad = tokenizer.pad_token_id or 0
    outside = data.labels.index("O") if "O" in data.labels else 0
    rng = np.random.default_rng(seed)
    best, best_state, history = -math.inf, None, []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(train))
        for i in range(0, len(train), task.batch_size):
            b = batch([train[j] for j in order[i:i + task.batch_size]], pad, token_level)
            with torch.autocast(device.type, dtype=dtype or torch.float32,
                                enabled=dtype is not None):
                loss = model(**{k: v.to(device) for k, v in b.items()}).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if on_step is not None:
                on_step()
        dev_scores = score_predictions(task, data.labels, data.dev,
                            _predict(model, dev, 32, pad, token_level, device, dtype, outside))
        history.append(dev_scores[task.metric])
        if dev_scores[task.metric] > best:
            best = dev_scores[task.metric]
            best_state = copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()})
    model.load_state_dict(best_state)
    test_preds = _predict(model, test, 32, pad, token_level, device, dtype, outside)
    test_scores = score_predictions(task, data.labels, data.test, test_preds)
    return {"seed": seed, "test": test_scores, "dev_by_epoch": history,
            "best_epoch": int(np.argmax(history)), "wall_s": time.perf_counter() - t0,
            "outcome": outcomes.outcome(task, data.labels, data.test, test_preds)}


def finetune_seeds(pretrain_seed: int, count: int) -> list[int]:
    """The fine-tuning seeds of every model pretrained with `pretrain_seed`: the same for each
    method (and the starting model) at that seed, so their differences are paired, and fresh
    for every other pretraining seed, so that no fine-tuning seed's effect is shared by all of
    a study's differences, where the spread between pretraining seeds could not show it
    (tests/test_coverage.py)."""
    return [derive(pretrain_seed, "finetune", j) for j in range(count)]


def evaluate_task(model_dir: Path, task: TaskConfig, device: torch.device, quick: bool,
                  data: Optional[TaskData] = None,
                  on_step: Optional[Callable[[], None]] = None,
                  pretrain_seed: int = 0) -> dict:
    """Every fine-tuning seed of one task on one model (`finetune_seeds(pretrain_seed, …)`),
    on the data drawn with `readout_seed(pretrain_seed)` (`data`, if given, names its own
    draw): per-seed results and mean ± std per score."""
    data = data or load_task_data(task, quick, readout_seed(pretrain_seed))
    if not data.train or not data.dev or not data.test:
        raise DataError(f"task {task.name}: a split is empty after filtering")
    task = in_mode(task, quick)
    epochs = task.epochs
    if task.probe:  # a convex fit on fixed features: one seed is all there is
        task = replace(task, seeds=1)
        runs = [probe_once(model_dir, task, data, s, device)
                for s in finetune_seeds(pretrain_seed, 1)]
        if on_step is not None:
            on_step()
    else:
        runs = [finetune_once(model_dir, task, data, s, device, epochs, on_step)
                for s in finetune_seeds(pretrain_seed, task.seeds)]
    seeds = task.seeds
    # per-example outcomes go beside the record (`runs.store_result`), not into it; each
    # entry names its fine-tuning seed, which the verdicts' intervals depend on
    per_example = {**outcomes.describe(task, data.labels, data.test),
                   "seeds": [{**r.pop("outcome"), "seed": r["seed"], "readout_seed": data.seed}
                             for r in runs]}
    summary = {}
    for key in runs[0]["test"]:
        values = [r["test"][key] for r in runs]
        summary[key] = {"mean": statistics.fmean(values),
                        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                        "values": values}
    return {"task": task.name, "metric": task.metric, "quick": quick, "seeds": seeds,
            "epochs": epochs, "lr": task.lr, "max_length": task.max_length,
            "decoder": is_decoder(model_dir), "readout_seed": data.seed,
            "examples": {"train": len(data.train), "dev": len(data.dev), "test": len(data.test)},
            "scores": summary, "runs": runs, "outcomes": per_example}


def total_steps(task: TaskConfig, data: TaskData, quick: bool) -> int:
    task = in_mode(task, quick)
    if task.probe:
        return 1
    return task.seeds * task.epochs * math.ceil(len(data.train) / task.batch_size)
