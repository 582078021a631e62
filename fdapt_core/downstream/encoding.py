"""A task's examples as model inputs, batches of them, and the task's scores of predictions:
what fine-tuning (finetune.py) and the linear probe (probe.py) share."""
from __future__ import annotations

from typing import Optional

import torch

from .decoders import encode_pairs
from .metrics import classification_scores, ner_scores
from .readers import TextExample, TokenExample
from .tasks import TaskConfig

IGNORE = -100


def encode_tokens(examples: list[TokenExample], tokenizer, labels: list[str],
                  max_length: int) -> list[dict]:
    """Word-piece ids with the tag on each word's first piece (IGNORE elsewhere)."""
    index = {t: i for i, t in enumerate(labels)}
    enc = tokenizer([e.tokens for e in examples], is_split_into_words=True, truncation=True,
                    max_length=max_length)
    out = []
    for i, e in enumerate(examples):
        words = enc.word_ids(i)
        tags, first = [], []
        previous = None
        for pos, w in enumerate(words):
            if w is None or w == previous:
                tags.append(IGNORE)
            else:
                tags.append(index[e.tags[w]])
                first.append((pos, w))
            previous = w
        out.append({"input_ids": enc["input_ids"][i], "labels": tags, "first": first,
                    "n_words": len(e.tokens)})
    return out


def encode_texts(examples: list[TextExample], tokenizer, labels: list[str],
                 max_length: int, separator: Optional[int] = None) -> list[dict]:
    """Ids and label index; a pair is joined by the tokenizer's template, or by `separator`
    where the template puts nothing between the segments (decoders)."""
    index = {t: i for i, t in enumerate(labels)}
    texts = [e.text for e in examples]
    pairs = [e.pair for e in examples] if examples and examples[0].pair is not None else None
    if pairs and separator is not None:
        ids = encode_pairs(tokenizer, texts, pairs, max_length, separator)
    else:
        ids = tokenizer(texts, pairs, max_length=max_length,
                        truncation="only_second" if pairs else True)["input_ids"]
    return [{"input_ids": x, "label": index[e.label]} for x, e in zip(ids, examples)]


def batch(items: list[dict], pad_id: int, token_level: bool) -> dict:
    width = max(len(x["input_ids"]) for x in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, x in enumerate(items):
        ids[i, :len(x["input_ids"])] = torch.tensor(x["input_ids"])
        mask[i, :len(x["input_ids"])] = 1
    if token_level:
        labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
        for i, x in enumerate(items):
            labels[i, :len(x["labels"])] = torch.tensor(x["labels"])
    else:
        labels = torch.tensor([x["label"] for x in items])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def score_predictions(task: TaskConfig, labels: list[str], examples: list, preds: list) -> dict:
    if task.type == "token_classification":
        return ner_scores([e.tags for e in examples],
                          [[labels[i] for i in p] for p in preds])
    return classification_scores([e.label for e in examples], [labels[i] for i in preds],
                                 labels, task.exclude_labels)
