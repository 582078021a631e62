"""The report's setup section: the corpus, model and schedule of each partition, and how
each downstream task was fine-tuned."""
from __future__ import annotations

import json

from fdapt_core.downstream.finetune import finetune_seeds as derived_seeds

from ..collect import Collection
from .format import seeds_text


def setup_md(coll: Collection) -> list[str]:
    """One line per distinct set-up; partitions that share one are named together."""
    lines: dict[str, list[str]] = {}
    for part in coll.partitions:
        runs = [r for m in coll.methods if (c := coll.cell(part, m)) for r in c.trained]
        if not runs:
            continue
        rec = runs[0].rec
        cfg, data = rec["config"], rec.get("data", {})
        model = cfg.get("model", {})
        corpus = "SYNTHETIC corpus (generated in code, not real text)" if runs[0].synthetic \
            else f"corpus `{cfg['data'].get('path')}`"
        docs = f"{data['train_documents']:,} training / {data['validation_documents']:,} " \
            f"held-out documents, {data['train_tokens']:,} training tokens; " \
            if {"train_documents", "validation_documents", "train_tokens"} <= set(data) else ""
        seeds = sorted({r.seed for r in runs})
        methods = [m for m in coll.methods if (c := coll.cell(part, m)) and c.trained]
        totals = rec.get("totals") or {}
        dapt = ""
        if totals.get("steps") and totals.get("tokens"):
            share = f" ({totals['tokens'] / data['train_tokens']:.1%} of one pass over the " \
                "training tokens)" if data.get("train_tokens") else ""
            dapt = f"; DAPT of {totals['steps']:,} steps, {totals['tokens']:,} tokens a run{share}"
        text = (f"{corpus}: {docs}model `{model.get('preset') or model.get('name_or_path')}`, "
                f"{cfg['fl']['clients']} clients × {cfg['fl']['rounds']} rounds, sequence "
                f"length {cfg['data'].get('max_seq_length')}{dapt}; methods "
                f"{', '.join(methods)}; pretraining seeds {seeds_text(seeds)}")
        lines.setdefault(text, []).append(part)
    out = [f"- **{', '.join(parts)}**: {text}" for text, parts in lines.items()]
    return out + _downstream_setup(coll) + read_before(coll)


def _identity(rec: dict) -> tuple | None:
    """What makes two records the same model: method, split and final held-out loss."""
    loss = (rec.get("final_eval") or {}).get("loss")
    if loss is None or not rec.get("manifest_sha256"):
        return None
    return rec.get("method"), rec["manifest_sha256"], loss, (rec.get("config") or {}).get("seed")


def read_before(coll: Collection) -> list[str]:
    """Which of these models another study (a pilot, under the same studies folder) had
    trained and scored too: the same method, split and held-out loss. A model read before the
    study was configured is not a fresh draw for it, and the report says so; and where the
    same task was scored with other settings there, that the readout changed after it."""
    trained = [r for c in coll.cells.values() for r in c.trained]
    if not trained:
        return []
    here = {r.path.resolve().parents[3] for r in trained if len(r.path.parents) > 3}
    if len(here) != 1:  # not a study's layout (<out>/runs/<cell>/<method>/record.json)
        return []
    out_dir = here.pop()
    mine = {_identity(r.rec): r for r in trained}
    found: dict[str, dict] = {}
    for path in sorted(out_dir.parent.glob("*/runs/*/*/record.json")):
        if path.resolve().parents[3] == out_dir:
            continue
        try:
            other = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        run = mine.get(_identity(other)) if isinstance(other, dict) else None
        if run is None or not other.get("downstream"):
            continue
        seen = found.setdefault(path.parents[3].name, {"runs": set(), "changed": set()})
        seen["runs"].add((run.partition, run.method, run.seed))
        for task, d in other["downstream"].items():
            here_d = (run.rec.get("downstream") or {}).get(task)
            if here_d and d.get("task_hash") != here_d.get("task_hash"):
                seen["changed"].add(task)
    lines = []
    for study, seen in sorted(found.items()):
        by = {}
        for part, method, seed in sorted(seen["runs"]):
            by.setdefault((part, method), []).append(seed)
        which = "; ".join(f"{part} {method} seeds {seeds_text(seeds)}"
                          for (part, method), seeds in sorted(by.items()))
        lines.append(f"- **Read before**: {which} are the models of study `{study}` (the same "
                     "split and held-out loss), which had scored them downstream already"
                     + (f"; the readout of {', '.join(sorted(seen['changed']))} changed after "
                        "it (its task settings differ)" if seen["changed"] else "")
                     + ".")
    return lines


def _downstream_setup(coll: Collection) -> list[str]:
    """One line per task: how it was fine-tuned and on how many examples."""
    out = []
    for task in coll.tasks:
        run, d = next(((r, x) for r in coll.runs for x in (r.rec.get("downstream") or {}).values()
                       if isinstance(x, dict) and x.get("task_hash") == task.task_hash),
                      (None, None))
        if d is None:
            continue
        ex = d.get("examples") or {}
        sizes = ", ".join(f"{v:,} {k}" for k, v in ex.items())
        seeds = [r.get("seed") for r in d.get("runs") or []]
        derived = seeds == derived_seeds(run.seed, len(seeds))
        which = ("derived from the pretraining seed, the same for every method at it"
                 if derived else "seeds 0, 1, … for every method and every pretraining seed")
        probe = any("probe_c" in r for r in d.get("runs") or [])
        how = ("a linear probe (logistic regression on the frozen model's features, C chosen "
               "on dev), one deterministic fit per model" if probe else
               f"{d.get('epochs', '?')} epochs, "
               + ("one fine-tuning seed per model" if int(d.get("seeds") or 1) == 1
                  else f"{d['seeds']} fine-tuning seeds per model") + f" ({which})")
        out.append(f"- **{task.label}** ({task.metric}): "
                   + ("quick budget" if d.get("quick") else "full budget")
                   + (f", {sizes} examples" if sizes else "") + f", {how}")
    return out
