"""Number and label formatting shared by the report's sections."""
from __future__ import annotations

from ..collect import Collection


MB = 1e6


def fmt(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def signed(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:+.{digits}f}"


def seeds_text(seeds) -> str:
    return ",".join(str(s) for s in seeds)


def part_heading(coll: Collection, part: str) -> str:
    runs = [r for m in coll.methods if (c := coll.cell(part, m)) for r in c.trained]
    if not runs:
        return f"**{part}**"
    r = runs[0]
    corpus = "**SYNTHETIC corpus**" if r.synthetic else f"corpus `{r.corpus}`"
    return f"**{part}** ({corpus})"
