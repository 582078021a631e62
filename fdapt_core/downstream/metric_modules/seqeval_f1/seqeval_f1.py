"""Entity-level precision, recall and F1 of IOB2 tags, and token accuracy, with seqeval.

An `evaluate` module shipped with fdapt-bench: `evaluate.load("<this folder>")` loads it with
no network. Entities are compared whole (type and both boundaries), micro-averaged over entity
types, in seqeval's default mode (the lenient conlleval rules: an ``I-`` tag without a
preceding ``B-`` still starts an entity). ``accuracy`` counts tokens, ``O`` included.
A score with nothing to divide is 0 (``zero_division=0``), without a warning.
"""
import datasets
import evaluate
from seqeval import metrics


class SeqevalF1(evaluate.Metric):
    def _info(self):
        tags = datasets.Sequence(datasets.Value("string"))
        return evaluate.MetricInfo(
            description=__doc__, citation="seqeval, https://github.com/chakki-works/seqeval",
            inputs_description="predictions, references: lists of sentences, each a list of "
                               "IOB2 tags, aligned token by token",
            features=datasets.Features({"predictions": tags, "references": tags}))

    def _compute(self, predictions, references):
        return {
            "f1": float(metrics.f1_score(references, predictions, zero_division=0)),
            "precision": float(metrics.precision_score(references, predictions,
                                                       zero_division=0)),
            "recall": float(metrics.recall_score(references, predictions, zero_division=0)),
            "accuracy": float(metrics.accuracy_score(references, predictions)),
        }
