"""What fine-tuning a decoder (causal LM) on the task presets needs that an encoder brings along.

An encoder's tokenizer has a pad token and a [CLS] A [SEP] B [SEP] pair template, and its
sequence head reads the first token. A decoder's sequence head (HF's *ForSequenceClassification)
reads the rightmost token that is not `config.pad_token_id`, so batches are padded on the right
with exactly that id (`encoding.batch`). Decoder tokenizers often have no pad token (the eos
token stands in, as is usual: the head then reads the last token before any trailing eos, the
same padded or not) and no separator in their pair encoding, which would run a question
straight into its passage.
"""
from __future__ import annotations

from pathlib import Path

from tokenizers import pre_tokenizers
from transformers import AutoConfig, AutoTokenizer

from ..errors import ModelError
from ..model import objective_of


def is_decoder(model_dir: Path) -> bool:
    """Whether the folder's architecture is a causal LM: its model type has a causal-LM class
    and no masked-LM one (BERT and RoBERTa have both and are encoders), read from config.json."""
    try:
        config = AutoConfig.from_pretrained(str(model_dir))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{model_dir}: cannot read the model's config "
                         f"({str(exc).splitlines()[0]})") from None
    try:
        return objective_of(config) == "clm"
    except ModelError:  # neither head: not a decoder (a plain encoder fine-tunes as one)
        return False


def task_tokenizer(model_dir: Path, decoder: bool, task_type: str):
    """The model's tokenizer made ready for the task, and the id put between a pair's segments
    (None: the tokenizer's own pair template separates them, or the task has no pairs)."""
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.model_max_length = 10**9  # examples are truncated to the task's max_length
    if task_type == "token_classification":
        _prefix_space(tok)
    if not decoder:
        return tok, None
    missing = {}
    if tok.pad_token is None and tok.eos_token is None:
        missing["pad_token"] = "[PAD]"
    split = task_type == "pair_classification" and not _template_separates(tok)
    if split and tok.sep_token is None and tok.eos_token is None:
        missing["sep_token"] = "[SEP]"
    if missing:  # new rows in the embeddings: `fit_model`
        tok.add_special_tokens(missing)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not split:
        return tok, None
    return tok, tok.sep_token_id if tok.sep_token is not None else tok.eos_token_id


def fit_model(model, tokenizer) -> None:
    """Rows for tokens `task_tokenizer` added, and the pad id the sequence head pools by.

    Set on the config after loading rather than passed to `from_pretrained`: Llama-style
    embeddings freeze their `padding_idx` row, which is the eos (a pair's separator) when the
    eos stands in for pad."""
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.config.pad_token_id = tokenizer.pad_token_id


def encode_pairs(tokenizer, texts: list[str], pairs: list[str], max_length: int,
                 separator: int) -> list[list[int]]:
    """text (with the tokenizer's single-sequence template, e.g. a bos), the separator, then
    the pair, truncated to `max_length` by cutting the pair first (as `only_second` does)."""
    firsts = tokenizer(texts)["input_ids"]
    seconds = tokenizer(pairs, add_special_tokens=False)["input_ids"]
    out = []
    for a, b in zip(firsts, seconds):
        if not a or a[-1] != separator:  # a template that ends in eos already separates
            a = a + [separator]
        if len(a) > max_length:  # a text longer than the budget: cut, the separator kept
            a = a[:max_length - 1] + [separator]
        out.append(a + b[:max_length - len(a)])
    return out


def _template_separates(tokenizer) -> bool:
    """Whether the tokenizer's pair encoding puts a special token between the two segments."""
    seq = tokenizer("a", "b").sequence_ids()
    end_a = max(i for i, s in enumerate(seq) if s == 0)
    start_b = min(i for i, s in enumerate(seq) if s == 1)
    return start_b > end_a + 1


def _prefix_space(tokenizer) -> None:
    """Pre-split words are words of running text: a byte-level BPE marks a word that follows a
    space with a leading `Ġ`, and without `add_prefix_space` it reads every pre-split word as
    if glued to the one before (other pre-tokenizers already treat each word as a word)."""
    backend = tokenizer.backend_tokenizer
    pre = backend.pre_tokenizer
    parts = [pre]
    if isinstance(pre, pre_tokenizers.Sequence):
        parts, i = [], 0
        while True:  # a Sequence indexes its parts but has no len()
            try:
                parts.append(pre[i])
            except IndexError:
                break
            i += 1
    byte_level = [p for p in parts if isinstance(p, pre_tokenizers.ByteLevel)]
    for p in byte_level:
        p.add_prefix_space = True
    if byte_level:
        backend.pre_tokenizer = pre
        tokenizer.add_prefix_space = True
