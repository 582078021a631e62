"""Line-by-line reading shared by the corpus and task readers: numbered lines, JSON objects.

Every problem names `<file>:<line>` so a bad file is found without a traceback.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import DataError


NUL_MESSAGE = "holds a NUL byte: binary data (or UTF-16), not UTF-8 text"


def read_lines(file: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(1-based line number, decoded line)``; a bad byte names the file and line.

    Lines are split on ``\\n`` only (as editors count them), not on the extra Unicode breaks
    `str.splitlines` knows, so the numbers in messages and ids match what users see; a UTF-8
    byte-order mark on the first line is dropped. A NUL byte is refused: it is valid UTF-8,
    but text holds none, so the file is binary (or UTF-16) and would train on garbage.
    """
    try:
        handle = file.open("rb")
    except OSError as exc:
        raise DataError(f"{file}: cannot be read ({exc.strerror})") from None
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            if b"\0" in raw:
                raise DataError(f"{file}:{lineno}: {NUL_MESSAGE}")
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{file}:{lineno}: not valid UTF-8 ({exc.reason})") from None
            yield lineno, line.rstrip("\r\n")


def json_type(value: Any) -> str:
    """JSON's name for a decoded value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def parse_object(line: str, where: str) -> Mapping[str, Any]:
    """One JSONL line as an object, or a DataError naming `where`."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        # json's messages may end in "at" ("Unterminated string starting at"): the column
        # comes first, so that no "at at" reaches the user
        what = exc.msg.removesuffix(" at")
        raise DataError(f"{where}: not valid JSON at column {exc.colno}: "
                        f"{what[:1].lower() + what[1:]}") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {json_type(record)}")
    return record


def matches(record: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    """Compare as strings so that ``{"year": "1991"}`` from a config matches a JSON number."""
    return all(name in record and record[name] is not None and str(record[name]) == str(value)
               for name, value in wanted.items())
