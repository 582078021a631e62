"""`python -m bench`: run one method, compare several, list the config keys.

The face of the harness: it parses the command line, draws progress and tables, and turns
user errors into one line and exit code 2. Training lives in `fdapt_core`.

Commands import the training code inside their functions, on purpose: what `_quiet_libraries`
sets (offline hub, DeepSpeed's CPU accelerator, quiet logging) must be in place before
transformers is first imported, and `bench --help` or `bench config` need no torch.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from fdapt_core.config.run import RunConfig, describe, load_config
from fdapt_core.errors import FdaptError
from fdapt_core.executors import EXECUTORS, executor_of
from fdapt_core.freeze.allocation import POLICIES as FREEZE_POLICIES
from fdapt_core.tracking import Tee, open_tracker
from fdapt_core.tracking import check as check_tracking

from .progress import RichCallbacks
from .tables import add_downstream, downstream_columns, notes, rich_table, rows_of, write_tables

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="fdapt-bench: federated domain-adaptive pre-training, measured.")
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

DEFAULT_CONFIG = "configs/default.yaml"
CONFIG_HELP = "YAML config (default: configs/default.yaml)"
SET_HELP = "override a config key, e.g. --set fl.rounds=3 (repeatable; see `bench config`)"
# How a stopped command goes on (set by the command; `main` adds it to the stop message).
_how_to_continue = ["continue with --resume"]


def command(name: str):
    """`app.command(name)` with the docstring's paragraphs re-flowed: the source wraps at 100
    columns, the terminal wraps by itself (typer would keep the source's line breaks)."""
    def register(fn):
        paragraphs = (fn.__doc__ or "").strip().split("\n\n")
        return app.command(name, help="\n\n".join(" ".join(p.split()) for p in paragraphs))(fn)

    return register


def _config_path(path: Optional[Path]) -> Path:
    """The given config, or the default one: beside the cwd, else beside this package."""
    if path is not None:
        return path
    here = Path(DEFAULT_CONFIG)
    return here if here.exists() else Path(__file__).resolve().parents[1] / DEFAULT_CONFIG


def _load(config: Optional[Path], overrides: List[str]) -> RunConfig:
    return load_config(_config_path(config), overrides)


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if not torch.cuda.is_available():  # else DeepSpeed (imported by transformers) warns
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars between our own
    hf_logging.set_verbosity_error()


def _train(cfg: RunConfig, method: str, resume: bool) -> Optional[dict]:
    """Train with a progress display; None on a distributed rank other than 0."""
    from fdapt_core.runner import run

    if executor_of(cfg).ranks and os.environ.get("RANK", "0") != "0":
        run(cfg, method, resume=resume)
        return None
    from fdapt_core.interrupt import StopRequested

    tracker = open_tracker(cfg, method)  # a backend that cannot work: one line, before training
    stopped = False
    try:
        with RichCallbacks(method, err) as cb:
            return run(cfg, method, resume=resume,
                       callbacks=cb if tracker is None else Tee(cb, tracker))
    except (StopRequested, KeyboardInterrupt):
        stopped = True
        raise
    finally:
        if tracker is not None:
            tracker.close(stopped)


REPORT_TO_HELP = ("log each run's config, rounds and totals to experiment trackers: "
                  "tensorboard, mlflow (comma-separated; offline: <output_dir>/tracking); "
                  "sets tracking.backends")


def _report_to(set_: list[str], report_to: Optional[str]) -> list[str]:
    if report_to is None:
        return set_
    names = [n.strip() for n in report_to.split(",") if n.strip()]
    return [*set_, f"tracking.backends=[{', '.join(names)}]"]


@command("run")
def run_cmd(
    method: str = typer.Option(..., "--method", "-m",
                               help="central, fdapt, ffdapt or ffdapt-<"
                               f"{'|'.join(FREEZE_POLICIES)}>, then -lora, -<codec>, "
                               "-<strategy> (docs/methods.md)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    resume: bool = typer.Option(False, "--resume", help="continue the run of this name and "
                                "method from its last checkpoint"),
    executor: Optional[str] = typer.Option(None, "--executor", help=" | ".join(EXECUTORS)
                                           + "; sets dist.executor"),
    nproc: Optional[int] = typer.Option(None, "--nproc", min=1, help="start N local ranks "
                                        "through torch.distributed.run (distributed executor)"),
    report_to: Optional[str] = typer.Option(None, "--report-to", help=REPORT_TO_HELP),
) -> None:
    """Train one method; its record, checkpoints and model land in results/<name>/<method>/."""
    from fdapt_core.runs import run_dir

    _quiet_libraries()
    if executor is not None:
        set_ = [*set_, f"dist.executor={executor}"]
    set_ = _report_to(set_, report_to)
    cfg = _load(config, set_)
    if nproc is not None:
        from .launch import launch_local

        sys.exit(launch_local(err, nproc, cfg, method, config, set_, resume))
    rec = _train(cfg, method, resume)
    if rec is None:  # a rank other than 0: rank 0 prints
        return
    title = f"{cfg.name}: {method}"
    out.print(rich_table(rows_of([rec], [False]), title))
    out.print(f"record: {run_dir(cfg, method) / 'record.json'}")


@command("compare")
def compare_cmd(
    methods: str = typer.Option("central,fdapt,ffdapt", "--methods",
                                help="comma-separated methods to train and compare"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    force: bool = typer.Option(False, "--force", help="retrain even where a finished record "
                               "with the same config exists"),
    report_to: Optional[str] = typer.Option(None, "--report-to", help=REPORT_TO_HELP),
) -> None:
    """Train each method (or reuse its finished record) and print one comparison table."""
    from fdapt_core.methods import check
    from fdapt_core.runs import comparison_dir, run_state

    _how_to_continue[:] = ["run the same compare again: finished methods are reused and the "
                           "stopped one resumes"]
    _quiet_libraries()
    cfg = _load(config, _report_to(set_, report_to))
    check_tracking(cfg)  # a tracking backend that cannot work: before the first method trains
    names = [m.strip() for m in methods.split(",") if m.strip()]
    if not names:
        raise FdaptError("--methods: give at least one method")
    if len(set(names)) != len(names):
        raise FdaptError(f"--methods: {methods!r} names a method twice")
    for m in names:
        check(cfg, m)  # every method's settings checked before the first one trains
    records, reused_flags = [], []
    for m in names:
        state, rec = run_state(cfg, m)
        reused = state == "finished" and not force
        if reused:
            err.print(f"{m}: reusing the finished run with the same config")
        else:  # a killed run of the same config is continued rather than restarted
            rec = _train(cfg, m, resume=state == "resumable")
        records.append(rec)
        reused_flags.append(reused)
    # round times projected on this invocation's links (records are reused across them)
    rows = rows_of(records, reused_flags, cfg.network, cfg.report.target_loss)
    extra = add_downstream(rows, records, downstream_columns(records))
    title = f"{cfg.name}: {' vs '.join(names)}"
    folder = comparison_dir(cfg)
    footnotes = notes(records, cfg.network, cfg.report.target_loss)
    write_tables(folder, rows, title, footnotes, extra)
    out.print(rich_table(rows, title, extra))
    for line in footnotes:
        out.print(f"[dim]- {line}[/dim]")
    out.print(f"tables: {folder / 'compare.md'}, {folder / 'compare.csv'}")


@command("perf")
def perf_cmd(
    out_file: Optional[Path] = typer.Option(None, "--out", help="where to write the JSON "
                                            "record (default: results/perf/perf-<device>-"
                                            "<time>.json)"),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="compare with this "
                                            "record by ratio; exit 1 on a regression"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]"),
    quick: bool = typer.Option(False, "--quick", help="a smoke-sized suite (seconds; its "
                               "figures are not for comparison)"),
    history: Optional[Path] = typer.Option(None, "--history", help="run nothing: read every "
                                           "perf record in this folder, print each measure "
                                           "by date and commit with the first record of each "
                                           "step change, and draw it over time (PNG, in "
                                           "<folder>/history/ or --out)"),
) -> None:
    """The perf micro-suite: harness vs plain loop vs HF Trainer, overhead, FFDAPT savings,
    memory vs clients. Writes one JSON record; with --baseline, gates on regressions; with
    --history, the records' history instead."""
    from .perf import run_history, run_perf

    _quiet_libraries()
    if history is not None:
        sys.exit(run_history(out, history, out_file))
    sys.exit(run_perf(out, err, out_file, baseline, device, quick))


@command("flops")
def flops_cmd(
    methods: str = typer.Option("fdapt,ffdapt", "--methods", help="comma-separated methods"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    partitions: Optional[str] = typer.Option(None, "--partitions", help="comma-separated "
                                             "partition.method values, a table each "
                                             "(default: the config's)"),
    frontier: bool = typer.Option(False, "--frontier", help="also every freeze policy and "
                                  "allocation: FLOPs saved, marked where they reach 12.1 %"),
    runs: Optional[str] = typer.Option(None, "--runs", help="comma-separated results folders "
                                       "whose finished records give the frontier's held-out "
                                       "loss"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write it as JSON"),
) -> None:
    """Each method's training FLOPs for the whole run and the % saved against fdapt, without
    training: the run's own counts (one traced step per distinct frozen set, on the meta
    device) times its schedule, on the corpus as the run would read and partition it."""
    from .flops import run_flops

    _quiet_libraries()
    run_flops(out, err, lambda extra: _load(config, [*set_, *extra]), methods=methods,
              partitions=partitions, show_frontier=frontier, runs=runs, json_out=json_out,
              command=" ".join(["python -m bench", *sys.argv[1:]]))


@command("downstream")
def downstream_cmd(
    runs: str = typer.Option(..., "--runs", help="comma-separated comparison folders, e.g. "
                             "results/default (every finished method in them, plus the "
                             "starting model)"),
    tasks: str = typer.Option("ncbi_disease,chemprot,pubmedqa", "--tasks",
                              help="task presets in configs/tasks/ or YAML paths"),
    quick: bool = typer.Option(False, "--quick", help="subsets and 1 seed (CPU, CI); full "
                               "mode follows each preset (for a GPU)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]"),
    force: bool = typer.Option(False, "--force", help="fine-tune again where scores with the "
                               "same task settings exist"),
) -> None:
    """Fine-tune every adapted model (and the starting one) on downstream tasks; scores go into
    the run records and one table per comparison."""
    from fdapt_core.downstream.tasks import named_task

    from .downstream import run_downstream

    _quiet_libraries()
    folders = [Path(r.strip()) for r in runs.split(",") if r.strip()]
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not folders or not names:
        raise FdaptError("--runs and --tasks each need at least one entry")
    run_downstream(out, err, folders, [named_task(n, _tasks_dir()) for n in names],
                   quick, device, force)


def _tasks_dir() -> Path:
    """configs/tasks of the working directory, else the project's own."""
    tasks_dir = Path("configs/tasks")
    if not tasks_dir.is_dir():
        tasks_dir = Path(__file__).resolve().parents[1] / "configs" / "tasks"
    return tasks_dir


@command("study")
def study_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="a study file, e.g. "
                                          "configs/study-cpu.yaml"),
    set_: List[str] = typer.Option([], "--set", "-s", help="key=value overrides for every "
                                   "cell's run config (after the study's own)"),
    device: str = typer.Option("auto", "--device", help="downstream fine-tuning device: auto, "
                               "cpu or cuda[:N]"),
    plan: bool = typer.Option(False, "--plan", help="train nothing: read the study's records "
                              "as a pilot and print, per claim row, the pretraining seeds its "
                              "verdict needs and the hours they cost on this host"),
    report: bool = typer.Option(False, "--report", help="train and fine-tune nothing: rewrite "
                                "the study's report from the records at hand"),
    keys: bool = typer.Option(False, "--keys", help="list every study-file key with its "
                              "default and help"),
    report_to: Optional[str] = typer.Option(None, "--report-to", help=REPORT_TO_HELP),
) -> None:
    """Run a whole study: train every cell (finished runs are reused, a killed one resumes),
    score every model downstream, and write the study's report. Stop it at any point and run
    it again: it goes on where it stopped."""
    from fdapt_core.study import REQUIRED, StudyConfig

    from .study.flow import load_grid, print_plan, run_study

    if keys:
        _print_keys(describe(StudyConfig), required=REQUIRED)
        return
    if config is None:
        raise FdaptError("--config: name a study file (bench study --keys lists its keys)")
    _quiet_libraries()
    set_ = _report_to(set_, report_to)
    study, base, grid, tasks = load_grid(config, set_, _tasks_dir())
    if grid and not (plan or report):
        check_tracking(grid[0].cfg)  # before the first cell trains
    if plan:
        return print_plan(out, study, grid, tasks)
    _how_to_continue[:] = [f"run `bench study --config {config}` again: it goes on where it "
                           "stopped"]
    run_study(out, err, _train, study, base, grid, tasks, config, set_, device, report)


@command("report")
def report_cmd(
    runs: str = typer.Option(..., "--runs", help="comma-separated comparison folders or "
                             "quoted globs, e.g. results/ohsumed or 'results/quick-*'"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="report folder (default: "
                                           "<folder>/report, or results/<base>/report for "
                                           "several folders)"),
    more: Optional[List[str]] = typer.Argument(None, help="more folders (what an unquoted "
                                               "--runs glob expands into)", show_default=False),
) -> None:
    """Tables (Markdown, CSV) and figures (PNG, PDF) of a paper from run records alone: no
    training, no models."""
    from .report.write import make_report

    specs = [r.strip() for r in [*runs.split(","), *(more or [])] if r.strip()]
    if not specs:
        raise FdaptError("--runs: give at least one folder")
    rep = make_report(specs, out_dir, "python -m bench report --runs " + ",".join(specs)
                      + (f" --out {out_dir}" if out_dir else ""))
    for line in rep.notes:
        err.print(f"[yellow]note:[/yellow] {line}", highlight=False)
    for line in rep.skipped:
        err.print(f"[dim]skipped {line}[/dim]", highlight=False)
    out.print(f"report: {rep.out / 'report.md'} ({len(rep.figures) // 2} figures as PNG and "
              "PDF in figures/, tables as CSV)", highlight=False)


@command("config")
def config_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    keys: bool = typer.Option(False, "--keys", help="list every key with its default and help"),
) -> None:
    """Print the resolved config as YAML (or, with --keys, every key documented)."""
    import yaml

    if keys:
        _print_keys(describe())
        return
    cfg = _load(config, set_)
    out.print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), highlight=False)


def _print_keys(rows, required=()) -> None:
    from rich.markup import escape

    for key, default, help_ in rows:  # "[a | b]" lists the allowed values: not markup
        shown = "(required)" if key in required else escape(default)
        out.print(f"[bold]{escape(key)}[/bold] = {shown}\n    {escape(help_)}", highlight=False)


def main() -> None:
    from fdapt_core.interrupt import install_handlers

    install_handlers()  # SIGINT / SIGTERM: finish the step, keep the checkpoint, exit 130 / 143
    try:
        app(standalone_mode=False)
    except FdaptError as exc:
        from rich.markup import escape

        from fdapt_core.interrupt import StopRequested

        if isinstance(exc, StopRequested):
            exc = StopRequested(exc.signum, _how_to_continue[0])

        # under `bench run --nproc`, the launcher reports the first failing rank itself
        if not (os.environ.get("FDAPT_LAUNCHED_BY") == "bench"
                and type(exc).__name__ == "RankFailed"):
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]")
        sys.exit(130)
    except Exception as exc:  # click's own usage errors
        usage, abort = _click_exceptions()
        if isinstance(exc, usage):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, abort):
            sys.exit(1)
        raise


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage errors, aborts) of click and of the click copy newer typer versions carry
    inside them (its exceptions are other classes of the same names)."""
    import click

    usage, abort = {click.exceptions.ClickException}, {click.exceptions.Abort}
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == "ClickException":
            usage.add(cls)
    abort.add(typer.Abort)
    return tuple(usage), tuple(abort)
