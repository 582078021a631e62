"""F1 of class labels over a given label list, micro- or macro-averaged, with scikit-learn.

An `evaluate` module shipped with fdapt-bench: `evaluate.load("<this folder>")` loads it with
no network. ``labels`` is the list the average runs over: macro-F1 is the unweighted mean of
their per-class F1 (a label never true nor predicted counts 0); micro-F1 pools their true
positives, false positives and false negatives, so a label left out of ``labels`` (a negative
relation class) earns nothing when right and still counts against the others when confused
with them. A score with nothing to divide is 0 (``zero_division=0``), without a warning.
"""
import datasets
import evaluate
from sklearn.metrics import f1_score


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="scikit-learn, https://scikit-learn.org",
            inputs_description="predictions, references: one label (a string) per example; "
                               "labels: the labels averaged over; average: micro or macro",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references, labels, average="micro"):
        if average not in ("micro", "macro"):
            raise ValueError(f"average must be micro or macro, got {average!r}")
        return {"f1": float(f1_score(references, predictions, labels=labels, average=average,
                                     zero_division=0))}
