"""`bench study`'s workflow: the head warm-up, every cell trained then scored downstream, the
study's report; and `--plan`, the power plan from the records at hand."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from rich.console import Console

from fdapt_core.downstream.runs import ensure_general, finished_runs, reuse_general
from fdapt_core.downstream.tasks import named_task
from fdapt_core.errors import FdaptError
from fdapt_core.methods import check
from fdapt_core.prepare import resolve_device
from fdapt_core.records import read_json
from fdapt_core.runs import run_state
from fdapt_core.study import (WARMUP_METHOD, cell_table, cells, head_warmup, load_study,
                              method_order, report_folder, report_tasks, study_task)

from ..downstream import run_downstream
from ..report.write import make_report, study_plan
from .records import scored, study_hours, test_sizes
from ..warmup import check_warmup_again, record_loss, record_sha, warmup_setup

# train(cfg, method, resume=…): one method of one run config trained, with a display
Train = Callable[..., Optional[dict]]


def load_grid(config: Path, set_: list[str], tasks_dir: Path):
    """(study, base run config, cells, tasks) of a study file; `set_` overrides every cell's
    run config, task presets are looked up in `tasks_dir`."""
    study, base = load_study(config)
    grid = cells(study, base, tuple(set_))
    tasks = [study_task(named_task(n, tasks_dir), study) for n in study.tasks]
    return study, base, grid, tasks


def run_study(out: Console, err: Console, train: Train, study, base, grid, tasks,
              config: Path, set_: list[str], device: str, report: bool) -> None:
    """Train every cell (finished runs are reused, a killed one resumes), score every model
    downstream, and write the study's report (`report`: from the records at hand only)."""
    check_report_tasks(study, grid, tasks, config)
    warmup = head_warmup(study, base, tuple(set_))
    if report:
        grid = [c for c in grid if c.folder.is_dir()]
        if not grid:
            raise FdaptError(f"--report: {config}: no cell of this study has records yet")
    elif warmup is not None:  # the start of every cell: trained first (its cost kept apart)
        check(warmup.cfg, WARMUP_METHOD)
        state, _ = run_state(warmup.cfg, WARMUP_METHOD)
        if state == "finished" and (warmup.folder / WARMUP_METHOD / "model").is_dir():
            err.print(f"{warmup.cfg.name}: finished, reused", highlight=False)
        else:  # weights are not committed: a fresh checkout trains it again (seeded)
            if state == "finished":
                err.print(f"{warmup.cfg.name}: its weights are not here (they are not "
                          "committed): training it again, seeded; its weights' sha256 and "
                          "held-out loss are checked against its record's", highlight=False)
            before_sha = record_sha(warmup.folder / WARMUP_METHOD)
            before = record_loss(warmup.folder / WARMUP_METHOD) if state == "finished" \
                else None
            train(warmup.cfg, WARMUP_METHOD, resume=state == "resumable")
            check_warmup_again(warmup.folder / WARMUP_METHOD, before, before_sha)
    for cell in [] if report else grid:  # every method's settings checked first
        for m in study.methods:
            check(cell.cfg, m)
    # Cell by cell, trained then scored: a scored cell needs no weights any more, so the
    # study goes on from its committed records on another machine (weights are not kept).
    generals: list[Path] = []  # the starting model, scored once per seed, reused across cells
    for cell in [] if report else grid:
        for m in method_order(study.methods, cell.seed):  # alternating: see its docstring
            state, rec = run_state(cell.cfg, m)
            rec = rec if state == "finished" else None
            folder = cell.folder / m
            if rec is not None and (scored(rec, tasks, study.quick)
                                    or (folder / "model").is_dir()):
                err.print(f"{cell.cfg.name}/{m}: finished, reused", highlight=False)
                continue
            # a finished run whose weights are gone and that was never scored trains anew
            train(cell.cfg, m, resume=state == "resumable")
        if not tasks:  # no downstream stage: the report compares held-out MLM loss
            continue
        general = cell.folder / "general"
        records = [read_json(cell.folder / m / "record.json") for m in study.methods]
        if not (general / "record.json").is_file() or not scored(
                read_json(general / "record.json"), tasks, study.quick):
            if any((cell.folder / m / "model").is_dir() for m in study.methods):
                ensure_general(cell.folder, finished_runs(cell.folder),
                               str(resolve_device(device)))
                reuse_general(general, generals, tasks, study.quick)
        if not all(scored(r, tasks, study.quick) for r in records) or not (
                (general / "record.json").is_file()
                and scored(read_json(general / "record.json"), tasks, study.quick)):
            run_downstream(out, err, [cell.folder], tasks, study.quick, device, False,
                           cell_table(study))
        generals.append(general)
    folders = [c.folder for c in grid]
    rep = make_report([str(f) for f in folders], report_folder(study),
                      f"python -m bench study --config {config}" + (" --report" if report
                                                                    else ""), study.margin_pts,
                      study.finetune_seeds, test_sizes(tasks, study),
                      warmup_setup(warmup.folder / WARMUP_METHOD) if warmup else [],
                      report_tasks(study, tasks), len(study.seeds))
    out.print(f"study report: {rep.out / 'report.md'}; compute in its records: "
              f"{study_hours(folders):.2f} h (training + downstream fine-tuning)",
              highlight=False)


def check_report_tasks(study, grid, tasks, config: Path) -> None:
    """Refuse, before the first cell trains, a `report_tasks` name that this study does not
    score and that no record of its cells holds already (another readout's): the report would
    refuse it only after hours of training."""
    own = {t.name for t in tasks}
    held = set()
    for cell in grid:
        for rec_path in cell.folder.glob("*/record.json"):
            try:
                held |= set(read_json(rec_path).get("downstream") or {})
            except (OSError, ValueError):
                continue
    missing = [n for n in report_tasks(study, tasks) if n not in own | held]
    if missing:
        raise FdaptError(f"{config}: report_tasks: {', '.join(missing)} is scored neither by "
                         f"this study (its tasks are scored as {', '.join(sorted(own)) or 'none'}"
                         ") nor in any record of its cells")


def print_plan(out: Console, study, grid, tasks) -> None:
    """`bench study --plan`: the power plan from the records at hand, printed."""
    folders = [str(c.folder) for c in grid if c.folder.is_dir()]
    if not folders:
        raise FdaptError(f"--plan: no records of study {study.name} yet under {study.out}/runs "
                         "(a plan reads a pilot: run a few seeds first)")
    ft = study.finetune_seeds or "the tasks' own"
    sets = "whole" if study.full_test else "quick subset"
    designs = [(f"this study file's design: {ft} fine-tuning seed(s), {sets} test sets",
                study, tasks)]
    default = replace(study, finetune_seeds=3, full_test=True)
    if (study.finetune_seeds, study.full_test) != (3, True):
        designs.append(("the default design: 3 fine-tuning seeds, whole test sets", default,
                        [study_task(t, default) for t in tasks]))
    for title, design, ts in designs:
        lines = study_plan(folders, study.margin_pts, design.finetune_seeds or 1,
                           test_sizes(ts, design), report_tasks(study, tasks), len(study.seeds))
        out.print(f"## Plan for {title}\n\n" + "\n".join(lines), highlight=False,
                  markup=False)
