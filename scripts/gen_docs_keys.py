"""Regenerate the key tables of docs/config.md and docs/study.md from the configs' own fields.

    .venv/bin/python scripts/gen_docs_keys.py           # from the repository root
    .venv/bin/python scripts/gen_docs_keys.py --check   # exit 1 if a page is out of date

The rows are what `python -m bench config --keys` and `bench study --keys` print
(`fdapt_core.config.describe` of the run and study configs): this rewrites what lies between
each page's `<!-- BEGIN GENERATED: ... -->` and `<!-- END GENERATED -->` markers and leaves
the rest of the page as it is. `tests/test_docs.py` fails while a page is out of date.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fdapt_core.config.run import RunConfig, describe  # noqa: E402
from fdapt_core.study import REQUIRED, StudyConfig  # noqa: E402


def keys(cls: type, required=()) -> list[tuple[str, str, str]]:
    """(key, default, meaning) rows, as `bench ... --keys` prints them."""
    return [(k, "(required)" if k in required else d, h) for k, d, h in describe(cls)]


def cell(text: str) -> str:
    """A table cell: `|` escaped, and `<name>` shown as text rather than taken for HTML."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def table(rows, grouped: bool) -> str:
    out: list[str] = []
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(row[0].split(".")[0] if grouped and "." in row[0] else "", []).append(row)
    for group, members in groups.items():
        if grouped:
            out += [f"### `{group}.*`" if group else "### Top level", ""]
        out += ["| key | default | meaning |", "| --- | --- | --- |"]
        for key, default, meaning in members:
            shown = default if default == "(required)" else f"`{default}`"
            out.append(f"| `{key}` | {shown.replace('|', chr(92) + '|')} | {cell(meaning)} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


PAGES = {  # page: (marker name, rows, grouped by prefix)
    "docs/config.md": ("bench config --keys", lambda: keys(RunConfig), True),
    "docs/study.md": ("bench study --keys", lambda: keys(StudyConfig, REQUIRED), False),
}


def main(check: bool = False) -> int:
    stale = []
    for page, (name, rows, grouped) in PAGES.items():
        path = ROOT / page
        text = path.read_text()
        begin = f"<!-- BEGIN GENERATED: {name} -->\n"
        end = "<!-- END GENERATED -->"
        i, j = text.index(begin) + len(begin), text.index(end, text.index(begin))
        new = text[:i] + "\n" + table(rows(), grouped) + "\n" + text[j:]
        if new != text:
            stale.append(page)
            if not check:
                path.write_text(new)
    for page in stale:
        print(f"{'out of date' if check else 'rewritten'}: {page}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv[1:]))
