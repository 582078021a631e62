"""Seeds derived from the run seed and a purpose, so every random stream is reproducible alone.

Each client's round reseeds its own streams (batch order, masks, dropout) from
(seed, purpose, client, round). Nothing depends on what ran before, which is what makes a
resumed run reach the same weights as an uninterrupted one, and what lets a 1-client federation
and the central trainer draw identical streams.
"""
from __future__ import annotations

import hashlib


def derive(seed: int, purpose: str, *parts: int) -> int:
    """A 63-bit seed from the run seed, a purpose name and integers (client, round…)."""
    text = ":".join([str(seed), purpose, *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1
