"""Downstream task presets: one YAML file per task in configs/tasks/, no code per dataset.

A task is a format (CoNLL token tags, or JSONL with text / text-pair / label fields), its files,
and its fine-tuning budget. A new dataset in one of these formats needs only a new YAML file.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from ..config.build import build_section, load_yaml, opt
from ..errors import ConfigError

TASK_TYPES = ("token_classification", "sequence_classification", "pair_classification")


@dataclass
class QuickConfig:
    """The quick budget (CPU, CI): subsets of the splits and fewer epochs."""

    train_examples: int = opt(400, "training examples used (seeded sample)", min=1)
    dev_examples: Optional[int] = opt(200, "dev examples used (seeded sample); null: the whole "
                                      "dev split", min=1)
    test_examples: Optional[int] = opt(400, "test examples used (seeded sample); null: the "
                                       "whole test set", min=1)
    epochs: int = opt(1, "epochs", min=1)
    seeds: int = opt(1, "fine-tuning seeds", min=1)
    lr: Optional[float] = opt(None, "learning rate (null: the task's)", min=0.0)
    max_length: Optional[int] = opt(None, "tokens per example (null: the task's)", min=8)


@dataclass
class TaskConfig:
    """One downstream task."""

    name: str = opt("", "task name (the table's column)")
    type: str = opt("sequence_classification", "what is predicted", choices=TASK_TYPES)
    format: str = opt("jsonl", "file format", choices=("conll", "jsonl"))
    train: str = opt("", "training file (relative: under $FDAPT_DATA_DIR or ../shared/data)")
    dev: Optional[str] = opt(None, "dev file; null: carve dev_fraction out of train")
    test: str = opt("", "test file")
    train_filter: dict[str, str] = opt(None, "jsonl: keep training objects whose fields "
                                       "equal these values", factory=dict)
    test_filter: dict[str, str] = opt(None, "jsonl: the same for the test file", factory=dict)
    dev_fraction: float = opt(0.2, "share of train carved out as dev when dev is null",
                              min=0.01, max=0.9)
    text_field: str = opt("text", "jsonl: the text (first sequence)")
    pair_field: Optional[str] = opt(None, "jsonl: the second sequence (pair_classification)")
    label_field: str = opt("label", "jsonl: the label")
    join: str = opt(" ", "jsonl: separator for a field holding a list of strings")
    exclude_labels: list[str] = opt(None, "labels left out of micro-F1 (e.g. a negative "
                                    "relation class)", factory=list)
    unit_markers: list[str] = opt(None, "jsonl: strings (entity markers) removed from an "
                                  "example's text to find the sentence it shares with other "
                                  "examples; the verdicts resample the test set by those "
                                  "sentences, the unit whose examples are not independent. "
                                  "[]: each example its own unit", factory=list)
    metric: str = opt("f1", "the headline score", choices=("f1", "micro_f1", "macro_f1",
                                                           "accuracy"))
    max_length: int = opt(128, "tokens per example (truncated; pairs truncate the second)",
                          min=8, max=8192)
    epochs: int = opt(3, "fine-tuning epochs (the best on dev is kept)", min=1)
    batch_size: int = opt(8, "examples per step", min=1)
    lr: float = opt(5e-5, "AdamW learning rate", min=0.0)
    weight_decay: float = opt(0.0, "AdamW weight decay", min=0.0)
    seeds: int = opt(3, "fine-tuning seeds (mean and standard deviation)", min=1)
    probe: bool = opt(False, "a linear probe in place of fine-tuning: logistic regression on "
                      "the frozen model's features (deterministic: one fit, whatever seeds "
                      "says); a study names it `<task>:probe`")
    probe_select: str = opt("dev", "how a linear probe chooses its regularisation C: dev "
                            "(the grid's best on the dev examples), cv (5-fold "
                            "cross-validation on the training examples, folds drawn with the "
                            "readout seed; no dev data), fixed (probe_c, chosen before any "
                            "score)", choices=("dev", "cv", "fixed"))
    probe_c: Optional[float] = opt(None, "the probe's C where probe_select is fixed", min=0.0)
    quick: QuickConfig = opt(None, "the quick budget", factory=QuickConfig)


def load_task(path: str | Path) -> TaskConfig:
    p = Path(path)
    task = build_section(TaskConfig, load_yaml(p), p.name)
    task.name = task.name or p.stem
    if not task.train or not task.test:
        raise ConfigError(f"{p}: train and test files are required")
    if task.type == "token_classification" and task.format != "conll":
        raise ConfigError(f"{p}: token_classification reads CoNLL files (format: conll)")
    if task.type != "token_classification" and task.format != "jsonl":
        raise ConfigError(f"{p}: {task.type} reads JSONL files (format: jsonl)")
    if (task.type == "pair_classification") != (task.pair_field is not None):
        raise ConfigError(f"{p}: pair_field is needed by, and only by, pair_classification")
    if (task.probe_select == "fixed") != (task.probe_c is not None):
        raise ConfigError(f"{p}: probe_c is needed by, and only by, probe_select: fixed")
    if task.type == "token_classification" and task.metric not in ("f1", "accuracy"):
        raise ConfigError(f"{p}: metric {task.metric!r} is for classification tasks; "
                          "token classification reports f1 or accuracy")
    return task


PROBE = ":probe"


def named_task(spec: str, tasks_dir: Path) -> TaskConfig:
    """A task preset or YAML path, or either with `:probe` after it: the same task read by a
    linear probe (named `<name>_probe`, so both can be scored on the same models)."""
    base = spec[: -len(PROBE)] if spec.endswith(PROBE) else spec
    task = load_task(task_path(base, tasks_dir))
    return replace(task, name=f"{task.name}_probe", probe=True) if base != spec else task


def task_path(name_or_path: str, tasks_dir: Path) -> Path:
    """`ncbi_disease` → configs/tasks/ncbi_disease.yaml; a path is taken as it is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        return p
    candidate = tasks_dir / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = sorted(x.stem for x in tasks_dir.glob("*.yaml"))
        raise ConfigError(f"--tasks: unknown task {name_or_path!r}; presets in {tasks_dir}: "
                          f"{', '.join(known)} (or give a YAML path)")
    return candidate
