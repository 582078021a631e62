"""Task readers: CoNLL and JSONL parsing, their error messages, label checks, the dev split."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fdapt_core.downstream.readers import (
    TextExample,
    TokenExample,
    carve_dev,
    check_labels,
    label_set,
    read_conll,
    read_jsonl_examples,
    tag_set,
)
from fdapt_core.errors import ConfigError, DataError
from tests.conftest import needs_shared_data


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(tmp_path: Path, rows: list, name: str = "data.jsonl") -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    return write(tmp_path, name, "\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- CoNLL


def test_conll_sentences_boundaries_docstart_and_no_final_blank(tmp_path):
    path = write(tmp_path, "file.tsv",
                 "-DOCSTART-\tO\n\nThe\tO\nlung cancer\tB-Disease\n\n\n\n"
                 "Cancer\tB-Disease\nrisk\tO")  # several blank lines, no final newline
    sentences = read_conll(path)
    assert sentences == [TokenExample(["The", "lung cancer"], ["O", "B-Disease"]),
                         TokenExample(["Cancer", "risk"], ["B-Disease", "O"])]
    assert [s.line for s in sentences] == [3, 8]
    assert tag_set(sentences) == ["O", "B-Disease"]


def test_conll_space_separator_when_no_tab_and_crlf(tmp_path):
    path = write(tmp_path, "file.txt", "a b O\r\nc I-X\r\n")
    assert read_conll(path) == [TokenExample(["a b", "c"], ["O", "I-X"])]


def test_tag_set_puts_o_first():
    examples = [TokenExample(["x"] * 4, ["I-B", "O", "B-A", "B-B"])]
    assert tag_set(examples) == ["O", "B-A", "B-B", "I-B"]


@pytest.mark.parametrize(("text", "where", "what"), [
    ("a\tO\nb\tO\nnoseparator\n", "file.tsv:3", "no tab or space"),
    ("a\tO\n\tO\n", "file.tsv:2", "empty token"),
    ("a\tO\nb\t \n", "file.tsv:2", "empty tag"),
])
def test_conll_line_errors_name_file_and_line(tmp_path, text, where, what):
    path = write(tmp_path, "file.tsv", text)
    with pytest.raises(DataError, match=what) as info:
        read_conll(path)
    assert where in str(info.value)


def test_conll_non_utf8_names_line(tmp_path):
    path = tmp_path / "file.tsv"
    path.write_bytes(b"a\tO\n\nb\xff\tO\n")
    with pytest.raises(DataError, match="file.tsv:3: not valid UTF-8"):
        read_conll(path)


@pytest.mark.parametrize("text", ["", "\n\n", "-DOCSTART- -X- O O\n\n"])
def test_conll_without_sentences(tmp_path, text):
    with pytest.raises(DataError, match="file.tsv: no sentences"):
        read_conll(write(tmp_path, "file.tsv", text))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="absent.tsv: no such file"):
        read_conll(tmp_path / "absent.tsv")
    with pytest.raises(DataError, match="is a directory"):
        read_jsonl_examples(tmp_path, "text", "label")


# ----------------------------------------------------------------------------- JSONL


def test_jsonl_list_join_pair_filter_and_int_label(tmp_path):
    path = write_jsonl(tmp_path, [
        {"q": "Why?", "ctx": ["One.", "Two."], "y": 1, "split": "test"},
        "",
        {"q": "How?", "ctx": "Three.", "y": "no", "split": "train"},
        {"q": "When?", "ctx": [], "y": "maybe", "split": "test"},
    ])
    examples = read_jsonl_examples(path, "q", "y", pair_field="ctx", join=" | ",
                                   filter={"split": "test"})
    assert examples == [TextExample("Why?", "One. | Two.", "1"),
                        TextExample("When?", "", "maybe")]
    assert [e.line for e in examples] == [1, 4]
    assert label_set(examples) == ["1", "maybe"]
    everything = read_jsonl_examples(path, "ctx", "y")
    assert [e.text for e in everything] == ["One. Two.", "Three.", ""]
    assert everything[0].pair is None


def test_jsonl_filter_compares_as_strings(tmp_path):
    path = write_jsonl(tmp_path, [{"t": "a", "l": "x", "year": 1991},
                                  {"t": "b", "l": "x", "year": 1992}])
    assert [e.text for e in read_jsonl_examples(path, "t", "l", filter={"year": "1992"})] == ["b"]


@pytest.mark.parametrize(("row", "what"), [
    ("{not json", "data.jsonl:2: not valid JSON"),
    # json says "Unterminated string starting at"; the line said "at at column 6"
    ('{"t": "a', "data.jsonl:2: not valid JSON at column 7: unterminated string starting$"),
    ("[1, 2]", "data.jsonl:2: expected a JSON object, got a list"),
    ({"l": "x"}, "data.jsonl:2: no text field 't'"),
    ({"t": "a", "p": "b"}, "data.jsonl:2: no label field 'l'"),
    ({"t": "a", "l": "x"}, "data.jsonl:2: no pair field 'p'"),
    ({"t": 3, "l": "x", "p": "b"}, "text field 't' must be a string or a list of strings"),
    ({"t": "a", "l": 1.5, "p": "b"}, "label field 'l' must be .* got a number"),
    ({"t": "a", "l": None, "p": "b"}, "label field 'l' must be .* got null"),
    ({"t": "a", "l": True, "p": "b"}, "label field 'l' must be .* got a boolean"),
    ({"t": "a", "l": "", "p": "b"}, "got an empty string"),
])
def test_jsonl_errors_name_file_line_and_field(tmp_path, row, what):
    path = write_jsonl(tmp_path, [{"t": "ok", "l": "x", "p": "ok"}, row])
    with pytest.raises(DataError, match=what):
        read_jsonl_examples(path, "t", "l", pair_field="p")


def test_jsonl_empty_result_names_file_and_filter(tmp_path):
    with pytest.raises(DataError, match="data.jsonl: no examples"):
        read_jsonl_examples(write_jsonl(tmp_path, ["", ""]), "t", "l")
    path = write_jsonl(tmp_path, [{"t": "a", "l": "x", "split": "train"}])
    with pytest.raises(DataError, match=r"no examples matching filter \{'split': 'test'\}$"):
        read_jsonl_examples(path, "t", "l", filter={"split": "test"})
    with pytest.raises(DataError, match="'splt' occur in no object"):
        read_jsonl_examples(path, "t", "l", filter={"splt": "train"})


# ---------------------------------------------------------------------------- labels


def test_check_labels_names_label_file_and_first_line(tmp_path):
    train = [TextExample("a", None, "x"), TextExample("b", None, "y")]
    path = write_jsonl(tmp_path, [{"t": "c", "l": "x"}, {"t": "d", "l": "z"},
                                  {"t": "e", "l": "z"}, {"t": "f", "l": "w"}], "test.jsonl")
    test = read_jsonl_examples(path, "t", "l")
    check_labels(test[:1], label_set(train), path)  # known labels only: no error
    with pytest.raises(DataError) as info:
        check_labels(test, label_set(train), path)
    message = str(info.value)
    assert f"{path}:2: label 'z' does not occur in the training data" in message
    assert "other unknown labels: 'w'" in message


def test_check_labels_on_tags_names_the_token_line(tmp_path):
    path = write(tmp_path, "test.tsv", "a\tO\n\nb\tO\nc\tB-Chem\n")
    with pytest.raises(DataError, match=r"test.tsv:4: label 'B-Chem'"):
        check_labels(read_conll(path), ["O", "B-Disease", "I-Disease"], path)


# ------------------------------------------------------------------------------- dev


def test_carve_dev_is_seeded_disjoint_covering_and_ordered():
    examples = list(range(20))
    train, dev = carve_dev(examples, 0.1, seed=3)
    assert (train, dev) == carve_dev(examples, 0.1, seed=3)
    assert len(dev) == 2 and sorted(train + dev) == examples and not set(train) & set(dev)
    assert train == sorted(train) and dev == sorted(dev)
    assert carve_dev(examples, 0.5, seed=3) != carve_dev(examples, 0.5, seed=4)


@pytest.mark.parametrize(("n", "fraction", "size"), [(10, 0.01, 1), (10, 0.26, 3),
                                                     (7, 0.5, 4), (3, 0.1, 1)])
def test_carve_dev_size_rule(n, fraction, size):
    # max(1, round(fraction * n)): 0.1 -> 1, 2.6 -> 3, 3.5 -> 4 (to even), 0.3 -> 1
    assert len(carve_dev(list(range(n)), fraction, seed=0)[1]) == size


def test_carve_dev_errors():
    with pytest.raises(ConfigError, match="between 0 and 1"):
        carve_dev([1, 2, 3], 1.0, seed=0)
    with pytest.raises(DataError, match="train.jsonl: cannot carve a dev set of 1 from 1"):
        carve_dev([1], 0.1, seed=0, source="train.jsonl")


# ------------------------------------------------------------------------ real files


def test_real_ncbi_disease():
    sentences = read_conll(needs_shared_data("tasks/ncbi_disease/train.tsv"))
    assert len(sentences) == 5424
    assert tag_set(sentences) == ["O", "B-Disease", "I-Disease"]


def test_real_chemprot():
    examples = read_jsonl_examples(needs_shared_data("tasks/chemprot/train.jsonl"),
                                   text_field="text", label_field="label")
    assert len(examples) == 4169
    assert len(label_set(examples)) == 13


def test_real_pubmedqa_test_split():
    examples = read_jsonl_examples(needs_shared_data("tasks/pubmedqa/pqal.jsonl"),
                                   text_field="question", label_field="label",
                                   pair_field="contexts", filter={"split": "test"})
    assert len(examples) == 500
    assert set(label_set(examples)) == {"yes", "no", "maybe"}
    assert all(e.pair for e in examples)


def test_conll_more_than_two_tab_columns_names_file_and_line(tmp_path):
    # else "per<TAB>O" became the token and the third column a training label
    path = write(tmp_path, "ner.tsv", "a\tO\n\nper\tO\tEXTRA\n")
    with pytest.raises(DataError, match=r"ner\.tsv:3: .*3 tab-separated columns"):
        read_conll(path)


@pytest.mark.parametrize("content, where", [
    (b"\0" * 64, "bin.tsv:1"),
    (b"a\tO\n\nb\0\tO\n", "bin.tsv:3"),
])
def test_conll_nul_bytes_are_binary_not_text(tmp_path, content, where):
    path = tmp_path / "bin.tsv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"{where}: holds a NUL byte"):
        read_conll(path)


def test_jsonl_examples_refuse_nul_characters(tmp_path):
    path = write_jsonl(tmp_path, [{"text": "ok", "label": "a"},
                                  {"text": ["x", "\u0000\u0000"], "label": "b"}])
    with pytest.raises(DataError, match=r"data\.jsonl:2: text field 'text' holds a NUL"):
        read_jsonl_examples(path, "text", "label")
    raw = tmp_path / "raw.jsonl"
    raw.write_bytes(b"\0" * 64)
    with pytest.raises(DataError, match=r"raw\.jsonl:1: holds a NUL byte"):
        read_jsonl_examples(raw, "text", "label")


def test_a_probes_scores_are_not_reused_once_its_regularisation_grid_changes(monkeypatch):
    """The probe keeps the best of C_GRID on dev: scores picked from another grid are other
    scores, and the hash that decides reuse must say so (a fine-tuned task's must not move)."""
    from fdapt_core.downstream import runs
    from fdapt_core.downstream.tasks import named_task

    from tests.conftest import ROOT

    tasks = ROOT / "configs" / "tasks"
    probe, tuned = named_task("ncbi_disease:probe", tasks), named_task("ncbi_disease", tasks)
    before = runs.task_hash(probe, True), runs.task_hash(tuned, True)
    monkeypatch.setattr(runs, "C_GRID", (0.01, 0.1, 1.0))
    assert runs.task_hash(probe, True) != before[0]
    assert runs.task_hash(tuned, True) == before[1]
