"""Corpus readers: turn plain text, JSONL or Hugging Face datasets into `Document`s.

Formats
-------
Plain text (`read_text`)
    A UTF-8 file, or a folder read recursively (only ``*.txt`` files, in sorted order of their
    path relative to the folder). ``per="line"``: one document per non-empty line, id
    ``"<file>:<line>"`` (1-based; ``<file>`` is the path relative to the folder, which for a
    single file is its name). ``per="file"``: one document per file, id = that relative path.
    Plain text carries no key.

JSONL (`read_jsonl`)
    One JSON object per line; blank lines are skipped. The text is the listed ``text_fields``
    that are present and non-empty, joined with ``separator`` (a field holding a list of strings
    is first joined with spaces, e.g. a list of abstract passages; null counts as empty). An
    object with none of the text fields is an error; one whose text is blank is skipped. ``id_field`` names the id
    (default: the 1-based line number), ``key_field`` the label partitioners split on, and
    ``filter`` keeps only objects whose fields equal the given values (e.g. a ``split`` field).

Hugging Face datasets (`read_hf`)
    A folder written by ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``, from which
    ``split`` is picked) or, failing that, a hub id given to ``load_dataset``. Columns follow
    the same text / id / key rules as JSONL fields.

Every problem the user can fix raises `DataError` with one message naming the file, and the
line or row, so a bad corpus is found without a traceback. A reader that finds no document
raises too: an empty corpus is always a mistake in the path, the fields or the filter.
"""
from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from fdapt_core.data.document import Document
from fdapt_core.data.textfile import NUL_MESSAGE, matches, parse_object, read_lines
from fdapt_core.errors import DataError

__all__ = ["read_hf", "read_jsonl", "read_text"]


@dataclass(frozen=True)
class _Fields:
    """Which fields of a record make a `Document`; shared by the JSONL and HF readers."""

    text: tuple[str, ...]
    id: str | None
    key: str | None
    separator: str

    @classmethod
    def of(
        cls,
        text_fields: Sequence[str],
        id_field: str | None,
        key_field: str | None,
        separator: str,
    ) -> _Fields:
        # A bare string would otherwise be taken as a sequence of one-letter field names.
        fields = (text_fields,) if isinstance(text_fields, str) else tuple(text_fields)
        if not fields:
            raise ValueError("text_fields must name at least one field")
        return cls(fields, id_field, key_field, separator)

    def required(self) -> list[str]:
        """The fields every record must have (the text fields are checked as a group)."""
        return [name for name in (self.id, self.key) if name is not None]


# ----------------------------------------------------------------------------- plain text


def read_text(path: str | Path, per: str = "line") -> list[Document]:
    """Read UTF-8 text from a file or a folder of ``*.txt`` files.

    ``per="line"`` makes one document per non-empty line, ``per="file"`` one per file; see the
    module docstring for ids. Raises `DataError` for a missing path, a file that is not UTF-8
    text (a bad byte or a NUL; naming the file and line) or a corpus without any non-blank
    text.
    """
    if per not in ("line", "file"):
        raise ValueError(f"per must be 'line' or 'file', got {per!r}")
    root = _existing(path)
    files = _text_files(root)
    if not files:
        raise DataError(f"{root}: the corpus is empty (no *.txt files in the folder)")
    docs: list[Document] = []
    for file, name in files:
        if per == "line":
            docs.extend(_line_documents(file, name))
        else:
            doc = _file_document(file, name)
            if doc is not None:
                docs.append(doc)
    return _non_empty(docs, root)


def _text_files(root: Path) -> list[tuple[Path, str]]:
    """The files to read with their display names: a single file, or a folder's ``*.txt``."""
    if root.is_file():
        return [(root, root.name)]
    files = [(file, file.relative_to(root).as_posix()) for file in root.rglob("*.txt")]
    return sorted((pair for pair in files if pair[0].is_file()), key=lambda pair: pair[1])


def _line_documents(file: Path, name: str) -> Iterator[Document]:
    for lineno, line in read_lines(file):
        text = line.strip()
        if text:
            yield Document(id=f"{name}:{lineno}", text=text)


def _file_document(file: Path, name: str) -> Document | None:
    data = file.read_bytes().removeprefix(codecs.BOM_UTF8)
    if b"\0" in data:
        lineno = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise DataError(f"{file}:{lineno}: {NUL_MESSAGE}")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        lineno = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{file}:{lineno}: not valid UTF-8 ({exc.reason})") from None
    return Document(id=name, text=text) if text else None


# ----------------------------------------------------------------------------------- JSONL


def read_jsonl(
    path: str | Path,
    text_fields: Sequence[str] = ("text",),
    id_field: str | None = None,
    key_field: str | None = None,
    separator: str = "\n",
    filter: dict[str, str] | None = None,  # noqa: A002 - the config key users write
) -> list[Document]:
    """Read one document per JSON object line of a UTF-8 JSONL file.

    Objects whose joined text is blank are skipped, as are objects that do not match
    ``filter`` (a field matches when its value, as a string, equals the given string).
    Raises `DataError` naming ``<file>:<line>`` for invalid JSON, a NUL byte or character, a
    non-object, no text field, a missing id or key field, or a duplicate id (naming both
    lines).
    """
    file = _existing(path)
    if file.is_dir():
        raise DataError(f"{file}: is a directory, expected a JSONL file")
    fields = _Fields.of(text_fields, id_field, key_field, separator)
    records = _jsonl_records(file, filter or {})
    docs = _documents(records, fields)
    suffix = f" matching filter {filter}" if filter else ""
    return _non_empty(docs, file, suffix)


def _jsonl_records(
    file: Path, wanted: Mapping[str, str]
) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """Yield ``(where, default id, object)`` for each non-blank line that passes the filter."""
    for lineno, line in read_lines(file):
        if not line.strip():
            continue
        where = f"{file}:{lineno}"
        record = parse_object(line, where)
        if matches(record, wanted):
            yield where, str(lineno), record


# ------------------------------------------------------------------------ Hugging Face


def read_hf(
    name_or_path: str,
    split: str = "train",
    text_fields: Sequence[str] = ("text",),
    id_field: str | None = None,
    key_field: str | None = None,
    separator: str = "\n",
) -> list[Document]:
    """Read a Hugging Face dataset saved on disk, or else load ``name_or_path`` from the hub.

    Columns follow the JSONL rules; the default id is the 0-based row index. Raises
    `DataError` for an unknown split (naming those available), a missing column (naming the
    columns present), a hub id that cannot be loaded, or any bad row (naming it).
    """
    fields = _Fields.of(text_fields, id_field, key_field, separator)
    dataset, source = _load_hf(name_or_path, split)
    columns = list(dataset.column_names)
    _check_columns(fields, columns, source)
    used = [name for name in (*fields.text, *fields.required()) if name in columns]
    rows = dataset.select_columns(used)
    records = ((f"{source} row {i}", str(i), row) for i, row in enumerate(rows))
    return _non_empty(_documents(records, fields), source)


def _load_hf(name_or_path: str, split: str) -> tuple[Any, str]:
    """Return the dataset for ``split`` and a name for it to use in messages."""
    import datasets  # only for a hub or saved dataset (text and JSONL files need none)

    source = f"{name_or_path} [{split}]"
    if not Path(name_or_path).is_dir():
        try:
            return datasets.load_dataset(name_or_path, split=split), source
        except Exception as exc:  # the hub fails in many ways (network, auth, name, split)
            raise DataError(
                f"{name_or_path}: not a local directory, and the hub dataset id could not be "
                f"loaded (split {split!r}): {type(exc).__name__}: {exc}"
            ) from exc
    try:
        loaded = datasets.load_from_disk(name_or_path)
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"{name_or_path}: not a dataset saved with save_to_disk ({exc})") from exc
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            available = ", ".join(sorted(loaded)) or "none"
            raise DataError(f"{name_or_path}: no split {split!r}; available splits: {available}")
        return loaded[split], source
    return loaded, name_or_path


def _check_columns(fields: _Fields, columns: list[str], source: str) -> None:
    """Fail once, up front, rather than on every row of a dataset with a wrong column name."""
    present = ", ".join(columns)
    for name in fields.required():
        if name not in columns:
            raise DataError(f"{source}: no column {name!r}; columns present: {present}")
    if not any(name in columns for name in fields.text):
        wanted = ", ".join(repr(name) for name in fields.text)
        raise DataError(f"{source}: none of the text columns {wanted}; columns present: {present}")


# ------------------------------------------------------------------- records → Documents


def _documents(
    records: Iterable[tuple[str, str, Mapping[str, Any]]], fields: _Fields
) -> list[Document]:
    """Build documents from ``(where, default id, record)`` triples, rejecting duplicate ids."""
    first_seen: dict[str, str] = {}
    docs: list[Document] = []
    for where, default_id, record in records:
        doc = _document(record, fields, default_id, where)
        if doc is None:
            continue
        if doc.id in first_seen:
            first = first_seen[doc.id]
            raise DataError(f"{where}: duplicate id {doc.id!r}, first used at {first}")
        first_seen[doc.id] = where
        docs.append(doc)
    return docs


def _document(
    record: Mapping[str, Any], fields: _Fields, default_id: str, where: str
) -> Document | None:
    """One record as a `Document`, or None when its text is blank (such records are skipped)."""
    parts = [_text_part(record[name], name, where) for name in fields.text if name in record]
    if not parts:
        wanted = ", ".join(repr(name) for name in fields.text)
        raise DataError(f"{where}: none of the text fields {wanted} is present")
    text = fields.separator.join(part for part in parts if part)
    if not text.strip():
        return None
    doc_id = _scalar(record, fields.id, where, "id") if fields.id else default_id
    key = _scalar(record, fields.key, where, "key") if fields.key else None
    return Document(id=doc_id, text=text, key=key)


def _text_part(value: Any, name: str, where: str) -> str:
    """A text field as a string: null is empty, lists of strings (passages) join with spaces."""
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        value = " ".join(item.strip() for item in value if item.strip())
    if isinstance(value, str):
        if "\0" in value:  # JSON's \u0000: binary data packed into a string
            raise DataError(f"{where}: text field {name!r} holds a NUL character (binary "
                            "data, not text)")
        return value.strip()
    raise DataError(
        f"{where}: text field {name!r} must be a string or a list of strings, "
        f"got {type(value).__name__}"
    )


def _scalar(record: Mapping[str, Any], name: str, where: str, role: str) -> str:
    """The id or key field as a string; it must be present, and not null, on every record."""
    if record.get(name) is None:
        raise DataError(f"{where}: {role} field {name!r} is missing")
    value = record[name]
    if isinstance(value, (dict, list)):
        kind = type(value).__name__
        raise DataError(f"{where}: {role} field {name!r} must be a scalar, got {kind}")
    return str(value)


# --------------------------------------------------------------------------------- shared


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    return path


def _non_empty(docs: list[Document], source: str | Path, detail: str = "") -> list[Document]:
    if not docs:
        raise DataError(f"{source}: the corpus is empty (no document with non-blank text{detail})")
    return docs
