"""A readout that learned nothing says so in the downstream table (issue 43: a chemical/disease
NER task read F1 0.00 for `general` and fdapt alike; a binary relation task read the majority
class; a probe on a decoder read NCBI-disease 0.00): a constant's score measures the readout's
failure, not what DAPT put into the model."""
from __future__ import annotations

import json
from types import SimpleNamespace

from bench.downstream import degenerate_notes
from fdapt_core.downstream import outcomes as oc


def _model(root, name, task, data):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps(
        {"method": name, "downstream": {task: {"task_hash": "h", "outcomes": "x"}}}))
    oc.save(folder, task, "h", data)
    return folder


def test_no_entity_and_one_label_are_named_and_a_working_readout_is_not(tmp_path):
    ner = SimpleNamespace(name="ner")
    rel = SimpleNamespace(name="rel")
    labels = {"kind": "labels", "metric": "accuracy", "n": 4, "labels": ["no", "yes"],
              "exclude": [], "true": [0, 0, 0, 1]}
    ents = {"kind": "entity_counts", "metric": "f1", "n": 2}
    methods = {
        "general": _model(tmp_path, "general", "ner",
                          {**ents, "seeds": [{"counts": [[0, 0, 2], [0, 0, 1]]}]}),
        "fdapt": _model(tmp_path, "fdapt", "ner",
                        {**ents, "seeds": [{"counts": [[1, 0, 1], [0, 1, 1]]}]}),
        "central": _model(tmp_path, "central", "rel", {**labels, "seeds": [{"pred": [0] * 4}]}),
        "ffdapt": _model(tmp_path, "ffdapt", "rel", {**labels, "seeds": [{"pred": [0, 1, 0, 1]}]}),
        "other": _model(tmp_path, "other", "rel", {**labels, "seeds": [{"pred": [1] * 4}]}),
    }
    notes = degenerate_notes(methods, [ner, rel])
    assert len(notes) == 3, notes
    assert notes[0].startswith("general on ner: predicts no entity")
    assert "central on rel: answers 'no' (the majority label)" in notes[1]
    assert "other on rel: answers 'yes' (one label)" in notes[2]
