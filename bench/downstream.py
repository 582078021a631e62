"""`bench downstream`: fine-tune every model of a comparison on the tasks; one table."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fdapt_core import interrupt
from fdapt_core.downstream import outcomes
from fdapt_core.downstream.finetune import (evaluate_task, in_mode, load_task_data,
                                            readout_seed, total_steps)
from fdapt_core.downstream.runs import (GENERAL, cached_result, ensure_general, finished_runs,
                                        model_folder, store_result)
from fdapt_core.downstream.tasks import TaskConfig
from fdapt_core.records import read_json, write_text_atomic
from fdapt_core.prepare import resolve_device

from .tables import csv_text, markdown

ORDER = [GENERAL, "central", "fdapt"]


def _method_order(methods) -> list[str]:
    return sorted(methods, key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m))


def downstream_rows(records: dict[str, dict], tasks) -> list[dict]:
    """Per method: each task's headline mean ± std (points), Δ vs central, fluctuation.

    A Δ is left None where its reference (central, fdapt) has no score on the task, e.g. a
    folder of federated runs only: `downstream_notes` says why."""
    def score(method, task):
        d = records.get(method, {}).get("downstream", {}).get(task.name)
        if not d:
            return None, None
        s = d["scores"][task.metric]
        # a spread needs two runs: one run's "std" of 0 is no spread, it is none measured
        return 100 * s["mean"], 100 * s["std"] if len(d.get("runs", [])) > 1 else None

    rows = []
    for m in _method_order(records):
        row = {"method": m}
        for t in tasks:
            mean, std = score(m, t)
            ref, _ = score("central", t)
            row[f"{t.name}_{t.metric}"] = mean
            row[f"{t.name}_std"] = std
            row[f"{t.name}_vs_central_pts"] = None if mean is None or ref is None else mean - ref
            row[f"{t.name}_vs_central_pct"] = None if mean is None or not ref \
                else 100 * (mean - ref) / ref
        diffs = [abs(score(m, t)[0] - score("fdapt", t)[0]) for t in tasks
                 if score(m, t)[0] is not None and score("fdapt", t)[0] is not None]
        # the study's "fluctuation": the largest absolute difference from fdapt over tasks
        row["fluctuation_vs_fdapt_pts"] = max(diffs) if diffs and m != "fdapt" else None
        rows.append(row)
    return rows


def downstream_notes(records: dict[str, dict], tasks) -> list[str]:
    """The table's footnotes: units, and why a Δ column is empty where it is."""
    out = ["scores in points (×100), mean ± std over seeds; Δ central in points (and %); "
           "fluctuation: largest |difference from fdapt| over the tasks"]
    for ref, what in (("central", "Δ central is left empty (-)"),
                      ("fdapt", "fluctuation is left empty (-)")):
        scored = records.get(ref, {}).get("downstream", {})
        lacking = [t.name for t in tasks if not scored.get(t.name)]
        if ref not in records:
            out.append(f"no {ref} run in this folder: {what}")
        elif len(lacking) == len(tasks):
            out.append(f"{ref} has no scores: {what}")
        elif lacking and ref == "central":
            out.append(f"central has no score on {', '.join(lacking)}: {what} there")
        elif lacking:
            out.append(f"fdapt has no score on {', '.join(lacking)}: fluctuation leaves "
                       "those tasks out")
    return out


def degenerate_notes(methods: dict[str, Path], tasks) -> list[str]:
    """A footnote per model whose readout learned nothing a score can tell apart from a
    constant: an NER model that predicts no entity (F1 0), a classifier that answers one
    label for every test example (the majority class, or another), on every fine-tuning
    seed. Such a score measures the readout's failure, not the model's domain knowledge."""
    out = []
    for m, folder in methods.items():
        rec = read_json(folder / "record.json")
        for t in tasks:
            d = (rec.get("downstream") or {}).get(t.name)
            data = outcomes.load(folder, t.name, d.get("task_hash")) if d else None
            if not data or not data.get("seeds"):
                continue
            if data["kind"] == "entity_counts":
                if all(sum(tp + fp for tp, fp, _ in e["counts"]) == 0 for e in data["seeds"]):
                    out.append(f"{m} on {t.name}: predicts no entity on any test sentence "
                               "(F1 0): the readout found nothing to read")
                continue
            answers = {int(p) for e in data["seeds"] for p in e["pred"]}
            if len(answers) == 1:
                label = data["labels"][answers.pop()]
                common = max(set(data["true"]), key=data["true"].count)
                which = "the majority label" if data["labels"][common] == label \
                    else "one label"
                out.append(f"{m} on {t.name}: answers {label!r} ({which}) for every test "
                           "example: the readout learned nothing past a constant")
    return out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def render(rows: list[dict], tasks, title: str) -> Table:
    t = Table(title=title)
    t.add_column("method")
    for task in tasks:
        t.add_column(f"{task.name} {task.metric}", justify="right")
        t.add_column("Δ central", justify="right")
    t.add_column("fluctuation", justify="right")
    for r in rows:
        cells = [r["method"]]
        for task in tasks:
            mean, std = r[f"{task.name}_{task.metric}"], r[f"{task.name}_std"]
            cells.append("-" if mean is None else f"{mean:.2f} (one run)" if std is None
                         else f"{mean:.2f} ± {std:.2f}")
            pts, pct = r[f"{task.name}_vs_central_pts"], r[f"{task.name}_vs_central_pct"]
            rel = "" if pct is None else f" ({pct:+.1f}%)"  # no % of a zero score
            cells.append("-" if pts is None else f"{pts:+.2f}{rel}")
        cells.append(_fmt(r["fluctuation_vs_fdapt_pts"]))
        t.add_row(*cells)
    return t


def run_downstream(out: Console, err: Console, runs: list[Path], tasks: list[TaskConfig],
                   quick: bool, device: str, force: bool, table: str = "downstream") -> None:
    """Score every finished run of each folder (and the starting model) on `tasks`, then
    write the folder's table of those tasks, `<table>.md` and `.csv`."""
    datas = {(t.name, 0): load_task_data(t, quick) for t in tasks}  # bad files fail first

    def data_of(task: TaskConfig, seed: int):
        """The task's draw for models pretrained with `seed` (read once per seed)."""
        key = (task.name, readout_seed(seed))
        if key not in datas:
            datas[key] = load_task_data(task, quick, key[1])
        return datas[key]

    dev = resolve_device(device)
    for folder in runs:
        methods = finished_runs(folder)
        methods[GENERAL] = ensure_general(folder, methods, str(dev))
        todo = [(m, t) for m in _method_order(methods) for t in tasks
                if force or cached_result(methods[m], t, quick) is None]
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err, transient=True) as progress:
            for m, t in todo:
                interrupt.check()  # a stop asked for (SIGINT, SIGTERM) lands between scores
                # the run's pretraining seed picks the fine-tuning seeds and the readout's
                # data draw (the starting model's record carries its cell's config, so it is
                # paired with them)
                seed = int(read_json(methods[m] / "record.json")["config"].get("seed", 0))
                data = data_of(t, seed)
                bar = progress.add_task(f"{folder.name}/{m}: {t.name}",
                                        total=total_steps(t, data, quick))
                result = evaluate_task(model_folder(methods[m]), t, dev, quick, data,
                                       lambda: progress.advance(bar), seed)
                store_result(methods[m], t, quick, result)
                progress.remove_task(bar)
                s = result["scores"][t.metric]
                err.print(f"{folder.name}/{m} {t.name}: {t.metric} {100 * s['mean']:.2f}",
                          highlight=False)
        records = {m: read_json(p / "record.json") for m, p in methods.items()}
        rows = downstream_rows(records, tasks)
        seeds = sorted({in_mode(t, quick).seeds for t in tasks})
        whole = all(in_mode(t, quick).quick.test_examples is None for t in tasks) or not quick
        mode = ("quick budget" if quick else "full budget") \
            + (", whole test sets" if whole else ", test subsets") \
            + f", {'/'.join(map(str, seeds))} fine-tuning seed(s) per model"
        title = f"{folder.name}: downstream, {mode}"
        footnotes = downstream_notes(records, tasks) + degenerate_notes(methods, tasks)
        out.print(render(rows, tasks, title))
        for line in footnotes:
            out.print(f"[dim]- {escape(line)}[/dim]")
        md, csv = folder / f"{table}.md", folder / f"{table}.csv"
        write_text_atomic(md, markdown(rows, title, footnotes))
        write_text_atomic(csv, csv_text(rows))
        out.print(f"tables: {md}, {csv}")
