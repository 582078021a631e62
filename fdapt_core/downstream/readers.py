"""Generic readers for downstream task files, chosen by config rather than written per dataset.

Two shapes cover the biomedical tasks of the benchmark: token tagging in CoNLL style
(NCBI-disease and the like) and text or text-pair classification in JSONL (ChemProt,
PubMedQA and the like). A config names the file and the fields; no code is written per dataset.

Every example keeps the line it came from (excluded from equality), so that a label in a dev
or test file that training never saw can be reported as ``<file>:<line>``: the user can open
the file there and fix it. Anything wrong with a file raises `DataError` with such a message.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from fdapt_core.data.textfile import json_type, matches, parse_object, read_lines
from fdapt_core.errors import ConfigError, DataError

T = TypeVar("T")

DOCSTART = "-DOCSTART-"
_PREVIEW = 20  # labels listed in an error message before "... (N more)"


@dataclass
class TokenExample:
    """One sentence of a tagging task; ``line`` is the file line of its first token."""

    tokens: list[str]
    tags: list[str]
    line: int = field(default=0, compare=False)


@dataclass
class TextExample:
    """One classification example: a text, an optional second text, and a label."""

    text: str
    pair: str | None
    label: str
    line: int = field(default=0, compare=False)


# ------------------------------------------------------------------------------ files


def _existing_file(path: str | Path) -> Path:
    file = Path(path)
    if not file.exists():
        raise DataError(f"{file}: no such file")
    if file.is_dir():
        raise DataError(f"{file}: is a directory, expected a file")
    return file


# ----------------------------------------------------------------------------- CoNLL


def read_conll(path: str | Path) -> list[TokenExample]:
    """Read ``token<TAB>tag`` lines, one sentence per block between blank lines.

    The tag is what follows the tab (or, on a line without a tab, the last space), so a
    token may itself hold spaces. Runs of blank lines are one boundary, a last sentence
    without a final blank line counts, and ``-DOCSTART-`` lines are skipped (they also end a
    sentence). Raises `DataError` naming ``<file>:<line>`` for a line without separator or
    with more than two tab-separated columns, an empty token or tag, bytes that are not
    UTF-8 or a NUL byte, and naming the file when it holds no sentence at all.
    """
    file = _existing_file(path)
    sentences = list(_sentences(file))
    if not sentences:
        raise DataError(f"{file}: no sentences (the file is empty or holds only blank "
                        f"and {DOCSTART} lines)")
    return sentences


def _sentences(file: Path) -> Iterator[TokenExample]:
    current = TokenExample(tokens=[], tags=[])
    for lineno, line in read_lines(file):
        if not line.strip() or line.startswith(DOCSTART):
            if current.tokens:
                yield current
                current = TokenExample(tokens=[], tags=[])
            continue
        token, tag = _token_and_tag(line, f"{file}:{lineno}")
        if not current.tokens:
            current.line = lineno
        current.tokens.append(token)
        current.tags.append(tag)
    if current.tokens:
        yield current


def _token_and_tag(line: str, where: str) -> tuple[str, str]:
    separator = "\t" if "\t" in line else " "
    if separator not in line:
        raise DataError(f"{where}: expected 'token<TAB>tag', found no tab or space in {line!r}")
    columns = line.count("\t") + 1
    if columns > 2:  # else the extra column would silently become the tag
        raise DataError(f"{where}: expected 'token<TAB>tag', found {columns} tab-separated "
                        f"columns in {line!r}")
    token, tag = (part.strip() for part in line.rsplit(separator, 1))
    if not token:
        raise DataError(f"{where}: empty token in {line!r}")
    if not tag:
        raise DataError(f"{where}: empty tag in {line!r}")
    return token, tag


# ----------------------------------------------------------------------------- JSONL


def read_jsonl_examples(
    path: str | Path,
    text_field: str,
    label_field: str,
    pair_field: str | None = None,
    join: str = " ",
    filter: dict[str, str] | None = None,  # noqa: A002 - the config key users write
) -> list[TextExample]:
    """Read one classification example per JSON object line; blank lines are skipped.

    A field whose value is a list of strings (PubMedQA's ``contexts``) is joined with
    ``join``. ``filter`` keeps the objects whose field, as a string, equals the given value,
    so that one file holding several splits can serve each. Only kept objects are checked.
    Raises `DataError` naming ``<file>:<line>`` for invalid JSON, a NUL byte or character, a
    non-object, a missing text, pair or label field, or a label that is neither a string nor
    an integer (integers become strings); and naming the file (and the filter) when no
    example is left.
    """
    file = _existing_file(path)
    wanted = dict(filter or {})
    seen: set[str] = set()  # filter fields that occur at all, to explain an empty result
    examples: list[TextExample] = []
    for lineno, line in read_lines(file):
        if not line.strip():
            continue
        where = f"{file}:{lineno}"
        record = parse_object(line, where)
        seen.update(name for name in wanted if name in record)
        if matches(record, wanted):
            examples.append(_text_example(record, text_field, pair_field, label_field, join,
                                          where, lineno))
    if not examples:
        raise DataError(_no_examples(file, wanted, seen))
    return examples


def _text_example(record: Mapping[str, Any], text_field: str, pair_field: str | None,
                  label_field: str, join: str, where: str, lineno: int) -> TextExample:
    text = _text(record, text_field, "text", join, where)
    pair = None if pair_field is None else _text(record, pair_field, "pair", join, where)
    return TextExample(text=text, pair=pair, label=_label(record, label_field, where),
                       line=lineno)


def _field(record: Mapping[str, Any], name: str, role: str, where: str) -> Any:
    if name not in record:
        present = ", ".join(repr(key) for key in record) or "none"
        raise DataError(f"{where}: no {role} field {name!r} (fields present: {present})")
    return record[name]


def _text(record: Mapping[str, Any], name: str, role: str, join: str, where: str) -> str:
    value = _field(record, name, role, where)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        value = join.join(value)
    if isinstance(value, str):
        if "\0" in value:  # JSON's \u0000: binary data packed into a string
            raise DataError(f"{where}: {role} field {name!r} holds a NUL character (binary "
                            "data, not text)")
        return value
    raise DataError(f"{where}: {role} field {name!r} must be a string or a list of strings, "
                    f"got {json_type(value)}")


def _label(record: Mapping[str, Any], name: str, where: str) -> str:
    value = _field(record, name, "label", where)
    # bool is an int in Python, but true/false as a label is almost surely a wrong field
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    shown = "an empty string" if isinstance(value, str) else json_type(value)
    raise DataError(f"{where}: label field {name!r} must be a non-empty string or an "
                    f"integer, got {shown}")


def _no_examples(file: Path, wanted: Mapping[str, str], seen: set[str]) -> str:
    if not wanted:
        return f"{file}: no examples (the file is empty or holds only blank lines)"
    message = f"{file}: no examples matching filter {wanted}"
    absent = [name for name in wanted if name not in seen]
    if absent:
        message += f"; field(s) {', '.join(map(repr, absent))} occur in no object of the file"
    return message


# ---------------------------------------------------------------------------- labels


def label_set(examples: Iterable[TextExample]) -> list[str]:
    """The sorted labels, so that label ids do not depend on the order of the file."""
    return sorted({example.label for example in examples})


def tag_set(examples: Iterable[TokenExample]) -> list[str]:
    """The tags with ``O`` first (id 0, as tagging heads conventionally have it), then sorted."""
    tags = {tag for example in examples for tag in example.tags}
    return (["O"] if "O" in tags else []) + sorted(tags - {"O"})


def check_labels(examples: Sequence[TextExample] | Sequence[TokenExample],
                 known: Sequence[str], path: str | Path) -> None:
    """Raise `DataError` if a dev or test example has a label the training data lacks.

    The model has no output for such a label, so scoring would silently count it wrong;
    the message names the file, the label and the first line where it occurs (for CoNLL,
    the token's own line), and lists the other unknown labels, if any.
    """
    known_set = set(known)
    unknown: dict[str, int] = {}  # label -> first line, in file order
    for label, line in _labels_with_lines(examples):
        if label not in known_set and label not in unknown:
            unknown[label] = line
    if not unknown:
        return
    label, line = next(iter(unknown.items()))
    where = f"{path}:{line}" if line else str(path)
    message = (f"{where}: label {label!r} does not occur in the training data "
               f"(training labels: {_preview(known)})")
    others = [name for name in unknown if name != label]
    if others:
        message += f"; other unknown labels: {_preview(others)}"
    raise DataError(message)


def _labels_with_lines(
    examples: Sequence[TextExample] | Sequence[TokenExample],
) -> Iterator[tuple[str, int]]:
    for example in examples:
        if isinstance(example, TokenExample):
            # a sentence's tokens sit on consecutive lines, from example.line on
            for offset, tag in enumerate(example.tags):
                yield tag, (example.line + offset if example.line else 0)
        else:
            yield example.label, example.line


def _preview(names: Sequence[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:_PREVIEW])
    extra = len(names) - _PREVIEW
    return f"{shown}, ... ({extra} more)" if extra > 0 else (shown or "none")


# ------------------------------------------------------------------------------- dev


def carve_dev(examples: Sequence[T], fraction: float, seed: int, *,
              source: str | Path | None = None) -> tuple[list[T], list[T]]:
    """Split ``examples`` into ``(train, dev)`` for a task that ships no dev file.

    The dev part is the first ``max(1, round(fraction * n))`` indices of
    ``numpy.random.default_rng(seed).permutation(n)`` (Python's ``round``, so halves go to
    the even number), so the same seed always gives the same split; each part keeps the
    original order. ``source`` (the file) only serves the error message. Raises
    `ConfigError` for a fraction outside (0, 1) and `DataError` if no training example
    would remain.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"the dev fraction must lie strictly between 0 and 1, got {fraction}")
    n = len(examples)
    size = max(1, round(fraction * n))
    if size >= n:
        where = f"{source}: " if source is not None else ""
        raise DataError(f"{where}cannot carve a dev set of {size} from {n} example(s): "
                        "no training example would remain")
    chosen = set(np.random.default_rng(seed).permutation(n)[:size].tolist())
    train = [example for index, example in enumerate(examples) if index not in chosen]
    dev = [example for index, example in enumerate(examples) if index in chosen]
    return train, dev
