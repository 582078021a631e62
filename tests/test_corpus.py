"""Tests for the corpus readers: good input in each format, and every user-facing error."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fdapt_core.data.corpus import read_hf, read_jsonl, read_text
from fdapt_core.data.document import Document
from fdapt_core.errors import DataError


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ read_text


def test_text_per_line_skips_blank_lines_and_numbers_from_one(tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("first line\n\n   \n  second line  \r\nthird\n", encoding="utf-8")
    docs = read_text(file)
    assert docs == [
        Document("notes.txt:1", "first line"),
        Document("notes.txt:4", "second line"),
        Document("notes.txt:5", "third"),
    ]


def test_text_per_file_and_folder_reads_txt_recursively_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("deep text\nline two\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("top text", encoding="utf-8")
    (tmp_path / "c.txt").write_text("   \n", encoding="utf-8")  # blank: skipped
    (tmp_path / "skip.md").write_text("not a txt file", encoding="utf-8")

    per_file = read_text(tmp_path, per="file")
    assert [(d.id, d.text) for d in per_file] == [
        ("a.txt", "top text"),
        ("b/z.txt", "deep text\nline two"),
    ]
    per_line = read_text(str(tmp_path))
    assert [d.id for d in per_line] == ["a.txt:1", "b/z.txt:1", "b/z.txt:2"]
    assert all(d.key is None for d in per_line)


def test_text_single_file_per_file_uses_its_name(tmp_path: Path) -> None:
    file = tmp_path / "doc.txt"
    file.write_text("\ufeffwith a byte order mark\n", encoding="utf-8")
    assert read_text(file, per="file") == [Document("doc.txt", "with a byte order mark")]


def test_text_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    file = tmp_path / "latin.txt"
    file.write_bytes("good\nalso good\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.txt:3: not valid UTF-8"):
        read_text(file)
    with pytest.raises(DataError, match=r"latin\.txt:3: not valid UTF-8"):
        read_text(file, per="file")


def test_text_missing_path_and_empty_corpus(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.txt: no such file or directory"):
        read_text(tmp_path / "nope.txt")
    (tmp_path / "blank.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"blank\.txt: the corpus is empty"):
        read_text(tmp_path / "blank.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty: the corpus is empty \(no \*\.txt files"):
        read_text(empty)


def test_text_rejects_unknown_per(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="per must be"):
        read_text(tmp_path, per="paragraph")


# ----------------------------------------------------------------------------- read_jsonl


def test_jsonl_joins_title_and_abstract_with_id_and_key(tmp_path: Path) -> None:
    file = _write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"id": "a1", "title": "Title one.", "abstract": "Abstract one.", "cat": "C01"},
            {"id": "a2", "title": "Title only.", "cat": "C02"},
            {"id": 3, "title": "", "abstract": "Abstract only.", "cat": 14},
        ],
    )
    docs = read_jsonl(file, ("title", "abstract"), id_field="id", key_field="cat")
    assert docs == [
        Document("a1", "Title one.\nAbstract one.", "C01"),
        Document("a2", "Title only.", "C02"),
        Document("3", "Abstract only.", "14"),
    ]
    joined = read_jsonl(file, ["title", "abstract"], separator=" ")
    assert joined[0] == Document("1", "Title one. Abstract one.")


def test_jsonl_default_id_is_line_number_and_blank_lines_and_texts_are_skipped(
    tmp_path: Path,
) -> None:
    file = tmp_path / "c.jsonl"
    file.write_text('{"text": "one"}\n\n{"text": "   "}\n{"text": "four"}\n', encoding="utf-8")
    assert read_jsonl(file) == [Document("1", "one"), Document("4", "four")]


def test_jsonl_list_field_is_joined_with_spaces(tmp_path: Path) -> None:
    file = _write_jsonl(
        tmp_path / "qa.jsonl",
        [{"question": "Does it work?", "contexts": ["Passage one.", "Passage two."]}],
    )
    docs = read_jsonl(file, ("question", "contexts"), separator=" || ")
    assert docs == [Document("1", "Does it work? || Passage one. Passage two.")]


def test_jsonl_filter_keeps_matching_objects(tmp_path: Path) -> None:
    file = _write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"text": "a", "split": "train", "year": 1991},
            {"text": "b", "split": "test", "year": 1991},
            {"text": "c", "split": "train", "year": 1992},
            {"text": "d"},
        ],
    )
    assert [d.text for d in read_jsonl(file, filter={"split": "train"})] == ["a", "c"]
    both = read_jsonl(file, filter={"split": "train", "year": "1991"})
    assert [d.id for d in both] == ["1"]
    with pytest.raises(DataError, match=r"c\.jsonl: the corpus is empty.*matching filter"):
        read_jsonl(file, filter={"split": "dev"})


@pytest.mark.parametrize(
    ("lines", "kwargs", "message"),
    [
        (['{"text": "ok"}', '{"text": oops}'], {}, r"bad\.jsonl:2: not valid JSON"),
        (['{"text": "ok"}', '["a", "list"]'], {}, r"bad\.jsonl:2: expected a JSON object, got a list"),
        (
            ['{"text": "ok"}', '{"body": "x"}'],
            {"text_fields": ("title", "abstract")},
            r"bad\.jsonl:1: none of the text fields 'title', 'abstract' is present",
        ),
        (
            ['{"text": "ok", "cat": "A"}', '{"text": "no key"}'],
            {"key_field": "cat"},
            r"bad\.jsonl:2: key field 'cat' is missing",
        ),
        (
            ['{"text": "no id"}'],
            {"id_field": "pmid"},
            r"bad\.jsonl:1: id field 'pmid' is missing",
        ),
        (
            ['{"id": "x", "text": "a"}', '{"id": "y", "text": "b"}', '{"id": "x", "text": "c"}'],
            {"id_field": "id"},
            r"bad\.jsonl:3: duplicate id 'x', first used at .*bad\.jsonl:1",
        ),
        (['{"text": 42}'], {}, r"bad\.jsonl:1: text field 'text' must be a string"),
    ],
)
def test_jsonl_errors_name_file_and_line(
    tmp_path: Path, lines: list[str], kwargs: dict[str, object], message: str
) -> None:
    file = tmp_path / "bad.jsonl"
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_jsonl(file, **kwargs)  # type: ignore[arg-type]


def test_jsonl_not_utf8_missing_and_directory(tmp_path: Path) -> None:
    file = tmp_path / "latin.jsonl"
    file.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl:2: not valid UTF-8"):
        read_jsonl(file)
    with pytest.raises(DataError, match=r"missing\.jsonl: no such file or directory"):
        read_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="is a directory"):
        read_jsonl(tmp_path)
    (tmp_path / "blank.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"blank\.jsonl: the corpus is empty"):
        read_jsonl(tmp_path / "blank.jsonl")


# -------------------------------------------------------------------------------- read_hf


def _hf_rows() -> dict[str, list[object]]:
    return {
        "pmid": ["p1", "p2", "p3"],
        "title": ["T1.", "T2.", None],
        "abstract": ["A1.", "", "A3."],
        "label": ["x", "y", "x"],
    }


def test_hf_dataset_on_disk(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "ds"
    datasets.Dataset.from_dict(_hf_rows()).save_to_disk(str(folder))
    docs = read_hf(str(folder), text_fields=("title", "abstract"), id_field="pmid",
                   key_field="label", separator=" ")
    assert docs == [
        Document("p1", "T1. A1.", "x"),
        Document("p2", "T2.", "y"),
        Document("p3", "A3.", "x"),
    ]
    # A null is an empty value, so a row whose only text column is null is skipped.
    assert [d.id for d in read_hf(str(folder), text_fields=("title",))] == ["0", "1"]


def test_hf_dataset_dict_picks_split_and_names_available_ones(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "dd"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["a", "b"]}),
            "test": datasets.Dataset.from_dict({"text": ["c"]}),
        }
    ).save_to_disk(str(folder))
    assert [d.text for d in read_hf(str(folder), split="test")] == ["c"]
    assert [d.text for d in read_hf(str(folder))] == ["a", "b"]
    with pytest.raises(DataError, match=r"dd: no split 'dev'; available splits: test, train"):
        read_hf(str(folder), split="dev")


def test_hf_errors_name_columns_and_rows(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "ds"
    datasets.Dataset.from_dict(_hf_rows()).save_to_disk(str(folder))
    with pytest.raises(DataError, match=r"no column 'category'; columns present: pmid, title"):
        read_hf(str(folder), text_fields=("title",), key_field="category")
    with pytest.raises(DataError, match=r"none of the text columns 'body'; columns present"):
        read_hf(str(folder), text_fields=("body",))

    rows = tmp_path / "rows"
    datasets.Dataset.from_dict(
        {"text": ["a", "b", "c"], "id": ["same", "other", "same"], "key": ["k", None, "k"]}
    ).save_to_disk(str(rows))
    with pytest.raises(DataError, match=r"rows row 1: key field 'key' is missing"):
        read_hf(str(rows), key_field="key")
    with pytest.raises(DataError, match=r"row 2: duplicate id 'same', first used at .*row 0"):
        read_hf(str(rows), id_field="id")

    not_a_dataset = tmp_path / "plain"
    not_a_dataset.mkdir()
    with pytest.raises(DataError, match="not a dataset saved with save_to_disk"):
        read_hf(str(not_a_dataset))


def test_hf_hub_failure_is_a_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DataError, match=r"org/corpus: .*hub dataset id could not be loaded"):
        read_hf("org/corpus")


# -------------------------------------------------------------------------- the real corpus


def _shared_data_dir() -> Path:
    env = os.environ.get("FDAPT_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_reads_the_real_ohsumed_corpus() -> None:
    corpus = _shared_data_dir() / "corpus" / "ohsumed23.jsonl"
    if not corpus.is_file():
        pytest.skip(f"real corpus not found at {corpus} (set FDAPT_DATA_DIR to the data folder)")
    docs = read_jsonl(corpus, ("title", "abstract"), id_field="id", key_field="category")
    assert len(docs) == 7400
    assert len({d.key for d in docs}) == 23
    assert len({d.id for d in docs}) == 7400
    train = read_jsonl(corpus, ("title", "abstract"), id_field="id", filter={"split": "train"})
    assert len(train) == 3357


# ------------------------------------------------------------------------- binary (NUL)


@pytest.mark.parametrize("per", ["line", "file"])
@pytest.mark.parametrize("content, line", [(b"\0" * 64, 1), (b"good text\n\0\0\0\n", 2)])
def test_text_with_nul_bytes_is_refused_naming_file_and_line(
    tmp_path: Path, per: str, content: bytes, line: int
) -> None:
    file = tmp_path / "bin.txt"
    file.write_bytes(content)
    with pytest.raises(DataError, match=rf"bin\.txt:{line}: holds a NUL byte"):
        read_text(file, per=per)


def test_jsonl_with_nul_bytes_or_characters_is_refused(tmp_path: Path) -> None:
    raw = tmp_path / "raw.jsonl"
    raw.write_bytes(b'{"text": "ok"}\n' + b"\0" * 64)
    with pytest.raises(DataError, match=r"raw\.jsonl:2: holds a NUL byte"):
        read_jsonl(raw)
    escaped = _write_jsonl(tmp_path / "esc.jsonl", [{"text": "ok"}, {"text": "\u0000" * 8}])
    with pytest.raises(DataError, match=r"esc\.jsonl:2: text field 'text' holds a NUL"):
        read_jsonl(escaped)
