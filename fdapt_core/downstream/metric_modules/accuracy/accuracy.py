"""Accuracy: the fraction of examples whose label is right, with scikit-learn.

An `evaluate` module shipped with fdapt-bench: `evaluate.load("<this folder>")` loads it with
no network.
"""
import datasets
import evaluate
from sklearn.metrics import accuracy_score


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="scikit-learn, https://scikit-learn.org",
            inputs_description="predictions, references: one label (a string) per example",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references):
        return {"accuracy": float(accuracy_score(references, predictions))}
