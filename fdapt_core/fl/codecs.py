"""Upload codecs: what a client's update costs on the wire, and what the server gets back.

A client encodes what it sends; the server decodes it before screening and aggregation, so
every strategy sees dense weights. `none` sends the weights as they are held. The others send
the change Δ = w_client − w_global of each tensor (the server holds w_global, and a change
quantises far better than a weight), and the server rebuilds w = w_global + decode(Δ):

| codec | what travels for a tensor of n values | bytes |
| --- | --- | --- |
| `none` | the weights | n × element size |
| `bf16`, `fp16` | Δ in 16 bits | 2n |
| `int8` | round(Δ / s) as int8, s = max abs(Δ) / 127 (one fp32 scale per tensor) | n + 4 |
| `topk` | the k = ceil(f·n) entries of Δ + e largest in magnitude: fp32 values, int32 indices | 8k |

`topk` keeps error feedback (Seide et al. 2014; Stich et al. 2018): e, per client and tensor,
holds what earlier rounds did not send and is added to the next change, so nothing is lost
for good, only late. It is part of the trainer's checkpointed state. Bytes are counted from
the encoded tensors themselves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional

import torch

CODECS = ("none", "bf16", "fp16", "int8", "topk")


@dataclass
class Encoded:
    """One client's upload as it travels: per tensor name, the encoded tensors."""

    codec: str
    parts: dict[str, tuple[torch.Tensor, ...]]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for ts in self.parts.values() for t in ts)


class Codec:
    """Encode a client's upload (`encode`) and rebuild it on the server (`decode`).

    Parameters:
        name: one of `CODECS` ("none" by default).
        topk_fraction: `topk`'s share of each tensor's entries sent (fl.topk_fraction, 0.01).
    """

    def __init__(self, name: str = "none", topk_fraction: float = 0.01):
        if name not in CODECS:
            raise ValueError(f"upload codec {name!r} is not one of {', '.join(CODECS)}")
        if not 0 < topk_fraction <= 1:
            raise ValueError(f"topk_fraction must be in (0, 1], got {topk_fraction}")
        self.name, self.topk_fraction = name, topk_fraction

    @property
    def keeps_residual(self) -> bool:
        return self.name == "topk"

    def encode(self, sent: Mapping[str, torch.Tensor], global_params: Mapping[str, torch.Tensor],
               residual: Optional[dict[str, torch.Tensor]] = None
               ) -> tuple[Encoded, Optional[dict[str, torch.Tensor]]]:
        """(the upload as it travels, the client's new error-feedback residual or None)."""
        if self.name == "none":
            return Encoded("none", {k: (v.detach(),) for k, v in sent.items()}), None
        parts: dict[str, tuple[torch.Tensor, ...]] = {}
        new_residual: dict[str, torch.Tensor] = {}
        for k, v in sent.items():
            delta = v.detach().float() - global_params[k].detach().float()
            if self.name in ("bf16", "fp16"):
                dtype = torch.bfloat16 if self.name == "bf16" else torch.float16
                parts[k] = (delta.to(dtype),)
            elif self.name == "int8":
                scale = delta.abs().max() / 127
                q = torch.zeros_like(delta, dtype=torch.int8) if scale == 0 \
                    else torch.round(delta / scale).clamp_(-127, 127).to(torch.int8)
                parts[k] = (q, scale.reshape(1).float())
            else:  # topk with error feedback
                x = delta.flatten()
                if residual is not None and k in residual:
                    x = x + residual[k].to(x.device).flatten()
                n_keep = max(1, math.ceil(self.topk_fraction * x.numel()))
                idx = torch.topk(x.abs(), n_keep, sorted=False).indices
                values = x[idx]
                left = x.clone()
                left[idx] = 0.0
                new_residual[k] = left.view_as(delta).cpu()
                parts[k] = (values, idx.to(torch.int32))
        return Encoded(self.name, parts), (new_residual if self.keeps_residual else None)

    def decode(self, encoded: Encoded, global_params: Mapping[str, torch.Tensor]
               ) -> dict[str, torch.Tensor]:
        """The dense upload the server aggregates: w_global + Δ (or the weights as sent)."""
        if encoded.codec == "none":
            return {k: ts[0] for k, ts in encoded.parts.items()}
        out = {}
        for k, ts in encoded.parts.items():
            g = global_params[k]
            if encoded.codec in ("bf16", "fp16"):
                delta = ts[0].to(device=g.device, dtype=torch.float32)
            elif encoded.codec == "int8":
                q, scale = ts
                delta = q.to(device=g.device, dtype=torch.float32) * scale.to(g.device)
            else:
                values, idx = ts
                delta = torch.zeros(g.numel(), dtype=torch.float32, device=g.device)
                delta[idx.to(device=g.device, dtype=torch.long)] = values.to(g.device)
                delta = delta.view_as(g)
            out[k] = (g.float() + delta).to(g.dtype)
        return out


def relative_error(upload: Mapping[str, torch.Tensor], exact: Mapping[str, torch.Tensor],
                   global_params: Mapping[str, torch.Tensor]) -> Optional[float]:
    """‖Δ̂ − Δ‖ / ‖Δ‖ over all tensors: how far the decoded change is from the one trained
    (0 for `none`; None when nothing changed)."""
    num = den = 0.0
    for k, v in exact.items():
        g = global_params[k].float()
        delta = v.detach().float() - g
        num += float((upload[k].float() - g - delta).pow(2).sum())
        den += float(delta.pow(2).sum())
    return math.sqrt(num / den) if den > 0 else None
