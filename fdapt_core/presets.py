"""The architecture presets (`model.preset`): random-init shapes built from config, so that the
whole suite runs on a CPU with nothing downloaded. Pure data: the config takes its choices
from here, `model.build_from_preset` builds them."""
from __future__ import annotations

# (family, shape). DistilBERT shapes: the study's architecture at three sizes. `tiny` keeps the
# 6 blocks of the study so that freeze allocations mean the same thing, at a width a laptop CPU
# trains fast. The decoders keep 6 blocks too: GPT-2 (learned positions, LM head tied to the
# embeddings) and Llama (rotary positions, RMSNorm, SwiGLU, grouped-query attention with half
# as many key/value heads as query heads, an untied LM head): the shapes of SmolLM and Qwen.
PRESETS: dict[str, tuple[str, dict]] = {
    "tiny": ("distilbert", dict(dim=64, n_layers=6, n_heads=4, hidden_dim=256)),
    "small": ("distilbert", dict(dim=256, n_layers=6, n_heads=4, hidden_dim=1024)),
    "distilbert-base": ("distilbert", dict(dim=768, n_layers=6, n_heads=12, hidden_dim=3072)),
    "gpt2-tiny": ("gpt2", dict(n_embd=64, n_layer=6, n_head=4, n_inner=256)),
    "llama-tiny": ("llama", dict(hidden_size=64, intermediate_size=176, num_hidden_layers=6,
                                 num_attention_heads=4, num_key_value_heads=2,
                                 tie_word_embeddings=False)),
    "llama-small": ("llama", dict(hidden_size=256, intermediate_size=704, num_hidden_layers=6,
                                  num_attention_heads=8, num_key_value_heads=4,
                                  tie_word_embeddings=False)),
}
