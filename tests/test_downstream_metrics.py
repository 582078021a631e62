"""Downstream metrics pinned against figures worked out by hand."""
from __future__ import annotations

import warnings

import pytest

from fdapt_core.downstream.metrics import classification_scores, ner_scores


def test_ner_missed_entity():
    # true entities: D[0:2], D[3]; predicted: D[0:2]  -> TP=1, FP=0, FN=1
    # P = 1/1, R = 1/2, F1 = 2*1*0.5/1.5 = 2/3; tokens right: 3 of 4 (only token 3 wrong)
    scores = ner_scores([["B-D", "I-D", "O", "B-D"]], [["B-D", "I-D", "O", "O"]])
    assert scores == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3,
                                    "accuracy": 3 / 4})


def test_ner_boundary_error_counts_as_wrong():
    # true: D[0:2], D[3]; predicted: D[0:1] (boundary wrong), D[3]  -> TP=1, FP=1, FN=1
    # P = 1/2, R = 1/2, F1 = 1/2; tokens right: 3 of 4 (token 1 is I-D vs O)
    scores = ner_scores([["B-D", "I-D", "O", "B-D"]], [["B-D", "O", "O", "B-D"]])
    assert scores == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5,
                                    "accuracy": 3 / 4})


def test_ner_wrong_type_and_two_sentences():
    # sentence 1: true A[0], pred B[0] -> FP=1, FN=1; sentence 2: true A[1:3], pred A[1:3] -> TP=1
    # P = 1/2, R = 1/2, F1 = 1/2; tokens right: 1 + 3 of 2 + 3 = 4/5
    true = [["B-A", "O"], ["O", "B-A", "I-A"]]
    pred = [["B-B", "O"], ["O", "B-A", "I-A"]]
    assert ner_scores(true, pred) == pytest.approx({"precision": 0.5, "recall": 0.5,
                                                    "f1": 0.5, "accuracy": 4 / 5})


def test_ner_default_mode_is_lenient_conlleval():
    # conlleval rules: the stray I-D at the start opens an entity, D[0:2], like B-D I-D does
    # -> F1 = 1 although the tags differ at token 0 (accuracy 2/3)
    scores = ner_scores([["I-D", "I-D", "O"]], [["B-D", "I-D", "O"]])
    assert scores == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0,
                                    "accuracy": 2 / 3})


def test_ner_no_predicted_entity_scores_zero_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = ner_scores([["B-D", "O"]], [["O", "O"]])
    assert scores == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                    "accuracy": 0.5})


def test_ner_misaligned_inputs():
    with pytest.raises(ValueError, match="1 true sentences but 2"):
        ner_scores([["O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="sentence 0: 2 true tags but 1"):
        ner_scores([["O", "O"]], [["O"]])


# Hand example for classification, labels A, B and the negative class "false":
#   index   0  1  2  3      4      5
#   true    A  A  B  false  false  false
#   pred    A  B  B  false  A      false
# accuracy: right at 0, 2, 3, 5 -> 4/6 = 2/3
# A:     TP=1 (0), FP=1 (4), FN=1 (1) -> P=1/2, R=1/2, F1=1/2
# B:     TP=1 (2), FP=1 (1), FN=0     -> P=1/2, R=1,   F1=2/3
# false: TP=2 (3, 5), FP=0, FN=1 (4)  -> P=1,   R=2/3, F1=4/5
# macro-F1 = (1/2 + 2/3 + 4/5) / 3 = (15 + 20 + 24) / 90 = 59/90
# micro-F1 over A, B: TP=2, FP=2, FN=1 -> P=2/4, R=2/3, F1 = 2*(1/2)*(2/3)/(1/2+2/3) = 4/7
TRUE = ["A", "A", "B", "false", "false", "false"]
PRED = ["A", "B", "B", "false", "A", "false"]


def test_classification_scores_by_hand():
    scores = classification_scores(TRUE, PRED, ["A", "B", "false"], exclude=["false"])
    assert scores == pytest.approx({"accuracy": 2 / 3, "macro_f1": 59 / 90, "micro_f1": 4 / 7})


def test_micro_f1_without_exclusion_is_accuracy():
    scores = classification_scores(TRUE, PRED, ["A", "B", "false"])
    assert scores["micro_f1"] == pytest.approx(scores["accuracy"])


def test_absent_label_counts_zero_in_macro_without_warning():
    # C is neither true nor predicted: F1 0 (zero_division=0) -> macro = (59/30) / 4 = 59/120
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = classification_scores(TRUE, PRED, ["A", "B", "C", "false"], exclude=["false"])
    assert scores == pytest.approx({"accuracy": 2 / 3, "macro_f1": 59 / 120,
                                    "micro_f1": 4 / 7})


def test_exclude_name_absent_from_labels_is_ignored():
    # a dataset without the negative class: micro-F1 over A, B, false as if nothing excluded
    scores = classification_scores(TRUE, PRED, ["A", "B", "false"], exclude=["None"])
    assert scores["micro_f1"] == pytest.approx(2 / 3)


def test_classification_input_errors():
    with pytest.raises(ValueError, match="leaves no label"):
        classification_scores(TRUE, PRED, ["false"], exclude=["false"])
    with pytest.raises(ValueError, match="6 true labels but 5"):
        classification_scores(TRUE, PRED[:5], ["A", "B", "false"])


# ----------------------------------------------------------------------------- evaluate modules

@pytest.mark.parametrize("name, kwargs, expected", [
    ("seqeval_f1", {"references": [["B-D", "I-D", "O", "B-D"]],
                    "predictions": [["B-D", "O", "O", "B-D"]]},
     {"precision": 0.5, "recall": 0.5, "f1": 0.5, "accuracy": 3 / 4}),
    ("f1", {"references": TRUE, "predictions": PRED, "labels": ["A", "B", "false"],
            "average": "macro"}, {"f1": 59 / 90}),
    ("f1", {"references": TRUE, "predictions": PRED, "labels": ["A", "B"],
            "average": "micro"}, {"f1": 4 / 7}),
    ("accuracy", {"references": TRUE, "predictions": PRED}, {"accuracy": 2 / 3}),
])
def test_shipped_metric_folders_load_offline_with_evaluate(name, kwargs, expected):
    # what a user does with the shipped folder, with no hub (HF_HUB_OFFLINE is set in conftest)
    import evaluate

    from fdapt_core.downstream.metrics import MODULES

    module = evaluate.load(str(MODULES / name), keep_in_memory=True)
    assert module.compute(**kwargs) == pytest.approx(expected)


def test_scores_go_through_the_evaluate_modules(monkeypatch):
    # classification_scores reads its numbers from the loaded modules, not beside them
    from fdapt_core.downstream import metrics

    seen = []
    real = metrics.load_metric

    def spy(name):
        seen.append(name)
        return real(name)

    monkeypatch.setattr(metrics, "load_metric", spy)
    classification_scores(TRUE, PRED, ["A", "B", "false"], exclude=["false"])
    ner_scores([["B-D"]], [["B-D"]])
    assert sorted(set(seen)) == ["accuracy", "f1", "seqeval_f1"]
    assert real("f1") is real("f1")  # loaded once per process


def test_a_metric_folder_outside_the_package_loads(tmp_path):
    from fdapt_core.downstream.metrics import MODULES, load_metric

    folder = tmp_path / "share_right"
    folder.mkdir()
    # a copy of the shipped accuracy script under another name: a folder path works as an id
    (folder / "share_right.py").write_text((MODULES / "accuracy" / "accuracy.py").read_text())
    assert load_metric(str(folder)).compute(predictions=["a", "b"],
                                            references=["a", "a"]) == {"accuracy": 0.5}


@pytest.mark.parametrize("name", ["no-such-metric-here", "someone/no-such-metric"])
def test_a_metric_that_cannot_be_loaded_is_named_in_one_line(name):
    # offline, a hub id is neither on a reachable hub nor in the cache
    from fdapt_core.downstream.metrics import load_metric
    from fdapt_core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"metric '{name}': cannot load it") as info:
        load_metric(name)
    assert "\n" not in str(info.value) and "seqeval_f1, f1, accuracy" in str(info.value)
