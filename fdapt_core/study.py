"""A study: one run config crossed with partitions, methods and pretraining seeds, scored
downstream and reported, resumable cell by cell.

A study file names the run config every cell starts from and what varies:

    name: ohsumed-cpu
    config: configs/ohsumed.yaml       # the run config (relative to the study file)
    set: [fl.rounds=3]                 # overrides for every cell
    partitions: [iid, by_key]
    methods: [central, fdapt, ffdapt-paper, ffdapt-budget]
    seeds: [0, 1, 2]
    tasks: [ncbi_disease, chemprot]
    quick: true
    out: results/studies/ohsumed-cpu

Cell (partition, seed) is the comparison folder `<out>/runs/<name>-<partition>-s<seed>/`,
one run folder per method inside; `general` (the starting model) is scored beside them. A
finished run with the same resolved config is reused, a killed one resumes, so the study can
be stopped at any point and run again until it is done. The report goes to `<out>/report/`
(or `report`) and reads the study's own tasks (or `report_tasks`): a second study file over
the same cells, with other tasks, is a second readout of the same models.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from .config.run import RunConfig, load_config
from .config.build import build_section, load_yaml, opt
from .downstream.tasks import TaskConfig
from .errors import ConfigError
from .model import block_count
from .runs import comparison_dir


@dataclass
class StudyConfig:
    """A grid of runs scored downstream and reported as one study."""

    name: str = opt("study", "the study's name (its run folders are <name>-<partition>-s<seed>)")
    config: str = opt("configs/default.yaml", "the run config every cell starts from (a path "
                      "relative to the study file, or to the working directory)")
    set: list[str] = opt(None, "key=value overrides for every cell", factory=list)
    partitions: list[str] = opt(None, "partition.method of each cell",
                                factory=lambda: ["iid", "by_key"])
    methods: list[str] = opt(None, "methods trained in each cell",
                             factory=lambda: ["central", "fdapt", "ffdapt-paper"])
    seeds: list[int] = opt(None, "pretraining seeds (the run seed of each cell)",
                           factory=lambda: [0, 1, 2])
    tasks: list[str] = opt(None, "downstream task presets (configs/tasks) or YAML paths; [] "
                           "for no downstream stage (the report compares held-out MLM loss)",
                           factory=lambda: ["ncbi_disease", "chemprot"])
    quick: bool = opt(True, "downstream with the tasks' quick budgets (their `quick` training "
                      "subsets and epochs): the test set stays whole unless full_test: false")
    full_test: bool = opt(True, "score on each task's whole test set; false: on its quick "
                          "test subset (smoke runs: a subset adds test noise to every interval)")
    finetune_seeds: Optional[int] = opt(3, "fine-tuning seeds per model, the same for every "
                                        "method (paired) and averaged per model before the "
                                        "seed-level analysis; null: each task's own", min=1)
    head_warmup_steps: int = opt(0, "steps of a head warm-up before any DAPT: the start "
                                 "model's LM head trained on the corpus with the body and "
                                 "embeddings frozen (one client, one round); `general` and "
                                 "every method then start from it. 0: none (a start model "
                                 "shipped without an MLM head starts with a fresh one)", min=0)
    head_warmup_lr: float = opt(1e-3, "the head warm-up's learning rate", min=0.0)
    margin_pts: float = opt(1.0, "the equivalence margin (points on each task's metric), fixed "
                            "here before any run; 1 point is a stated choice, not the paper's",
                            min=0.0)
    out: str = opt("results/studies/study", "the study's folder: runs/ and report/")
    report: Optional[str] = opt(None, "the report's folder; null: <out>/report. A second "
                                "study file over the same cells (another readout of the same "
                                "models: the same name, out and run settings, other tasks) "
                                "names its own")
    report_tasks: Optional[list[str]] = opt(None, "the downstream tasks the report and --plan "
                                            "read, by the name they are scored under (a probe: "
                                            "<task>_probe); null: this study's own tasks")


@dataclass(frozen=True)
class Cell:
    partition: str
    seed: int
    cfg: RunConfig  # the resolved run config of this cell (methods parsed later)

    @property
    def folder(self) -> Path:
        return comparison_dir(self.cfg)


# What a study studies: a file must name each, so that a forgotten key never trains a grid
# nobody asked for (the defaults above serve `bench study --keys` and files written in code).
REQUIRED = ("partitions", "methods", "seeds", "tasks")


def load_study(path: str | Path) -> tuple[StudyConfig, Path]:
    """The study and the folder its relative paths are read from."""
    p = Path(path)
    data = load_yaml(p)
    missing = [k for k in REQUIRED if not isinstance(data, dict) or k not in data]
    if missing:
        raise ConfigError(f"{p}: the study names no {missing[0]} (a study file must name its "
                          f"{', '.join(REQUIRED)}; `bench study --keys` lists every key)")
    study = build_section(StudyConfig, data, p.name)
    if not study.partitions or not study.methods or not study.seeds:
        raise ConfigError(f"{p}: partitions, methods and seeds each need one entry at least")
    if len(set(study.seeds)) != len(study.seeds):
        raise ConfigError(f"{p}: seeds: {study.seeds} names a seed twice")
    return study, p.resolve().parent


def run_config_path(study: StudyConfig, base: Path) -> Path:
    p = Path(study.config)
    if p.is_absolute() or p.exists():
        return p
    return base / p if (base / p).exists() else p


WARMUP_METHOD = "ffdapt-bottom"  # every block and the embeddings frozen: the head alone trains


def head_warmup(study: StudyConfig, base: Path, overrides: tuple[str, ...] = ()) -> Optional[Cell]:
    """The head warm-up run (None without one): `ffdapt-bottom` freezing every block and the
    embeddings (and so a tied output projection), one client holding the whole training
    split, one round of `head_warmup_steps` steps. Its model is where every cell starts."""
    if not study.head_warmup_steps:
        return None
    path = run_config_path(study, base)
    probe = load_config(path, [*study.set, *overrides])
    blocks = block_count(probe.model)
    if blocks is None:
        raise ConfigError("head_warmup_steps: the model's config does not say how many "
                          "blocks it has, so its body cannot be frozen for a head warm-up")
    cfg = load_config(path, [*study.set, "partition.method=iid", "seed=0", "fl.clients=1",
                             "fl.rounds=1", f"freeze.k={blocks}", "freeze.embeddings=true",
                             f"train.max_local_steps={study.head_warmup_steps}",
                             f"train.lr={study.head_warmup_lr}",
                             f"name={study.name}-head-warmup",
                             f"output_dir={Path(study.out) / 'runs'}", *overrides])
    return Cell("head-warmup", 0, cfg)


def warmed_start(warmup: Optional[Cell]) -> tuple[str, ...]:
    """The overrides that start a cell from the warm-up's model (none without a warm-up)."""
    if warmup is None:
        return ()
    return ("model.preset=null",
            f"model.name_or_path={warmup.folder / WARMUP_METHOD / 'model'}")


def cells(study: StudyConfig, base: Path, overrides: tuple[str, ...] = ()) -> list[Cell]:
    """Every (partition, seed) cell with its resolved run config; `overrides` (the command
    line's) come after the study's own. With a head warm-up every cell starts from its model,
    whatever the overrides say: a start model named there is the warm-up's start."""
    path = run_config_path(study, base)
    start = warmed_start(head_warmup(study, base, overrides))
    out = []
    # seed by seed, every partition of a seed before the next seed: a study stopped part-way
    # has its partitions on the same seeds, and its verdicts rest on pairs
    for seed in study.seeds:
        for part in study.partitions:
            cfg = load_config(path, [*study.set, f"partition.method={part}",
                                     f"seed={seed}", f"name={study.name}-{part}-s{seed}",
                                     f"output_dir={Path(study.out) / 'runs'}", *overrides,
                                     *start])
            out.append(Cell(part, seed, cfg))
    return out


def method_order(methods: list[str], seed: int) -> list[str]:
    """The order a cell trains its methods in: as listed on even seeds, reversed on odd ones.
    The methods of a cell run back to back on one host; a host whose speed drifts over a cell
    (the deciding study's fdapt rounds took 47-75 s at identical FLOPs) would favour whichever
    always ran first, and alternating cancels that in the paired time saved over seeds."""
    return list(methods) if seed % 2 == 0 else list(reversed(methods))


def report_folder(study: StudyConfig) -> Path:
    return Path(study.report) if study.report else Path(study.out) / "report"


def cell_table(study: StudyConfig) -> str:
    """The name of a cell's downstream table: a second readout (a study file with a `report`
    of its own) writes its own beside the first's rather than over it."""
    return "downstream" if not study.report else f"downstream-{Path(study.report).name}"


def report_tasks(study: StudyConfig, tasks: list[TaskConfig]) -> list[str]:
    """The tasks a study's report reads, by scored name: `report_tasks`, else its own."""
    return list(study.report_tasks) if study.report_tasks is not None else [t.name for t in tasks]


def study_task(task: TaskConfig, study: StudyConfig) -> TaskConfig:
    """A task as this study runs it: its fine-tuning seeds, and in quick mode the whole test
    set unless `full_test: false` (unchanged settings keep the task's hash, so scores taken
    before these keys existed stay valid)."""
    seeds = study.finetune_seeds
    if study.quick:
        q = task.quick
        return replace(task, quick=replace(
            q, seeds=seeds if seeds is not None else q.seeds,
            test_examples=None if study.full_test else q.test_examples))
    return replace(task, seeds=seeds if seeds is not None else task.seeds)
