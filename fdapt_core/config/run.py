"""Typed run configuration: YAML in, `key=value` overrides from the CLI, clear errors.

Every field carries a `help` string (shown by `bench config`) and, where it has one, an allowed
range or set of choices. Validation happens once, before any data is read or any file is
written, and every error names the dotted key, the value and what is allowed.

Here: the whole run's config (`RunConfig`), its hash, the rules that span keys and the key
listing; the sections are declared in `config.sections`, and built and checked field by field
by `config.build`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import typing
from dataclasses import dataclass
from pathlib import Path

from .build import apply_overrides, build_section, field_types, is_section, load_yaml, opt
from .sections import (CentralConfig, DataConfig, DistConfig, EvalConfig, FaultsConfig,
                       FLConfig, FreezeConfig, ModelConfig, NetworkConfig, PartitionConfig,
                       PeftConfig, ProfileConfig, ReportConfig, TrackingConfig, TrainConfig)
from ..errors import ConfigError
from ..executors import executor_of


@dataclass
class RunConfig:
    """One run of the harness: data, model, training, federation."""

    name: str = opt("default", "run name: outputs go to <output_dir>/<name>/<method>/")
    seed: int = opt(0, "seed of everything (split, partition, order, masks, init)")
    output_dir: str = opt("results", "where runs land")
    cache_dir: str = opt("results/.cache", "tokenizers and tokenized corpora are cached here")
    data: DataConfig = opt(None, "corpus", factory=DataConfig)
    partition: PartitionConfig = opt(None, "partition", factory=PartitionConfig)
    model: ModelConfig = opt(None, "model", factory=ModelConfig)
    train: TrainConfig = opt(None, "local training", factory=TrainConfig)
    fl: FLConfig = opt(None, "federation", factory=FLConfig)
    freeze: FreezeConfig = opt(None, "ffdapt freezing", factory=FreezeConfig)
    peft: PeftConfig = opt(None, "parameter-efficient clients (LoRA)", factory=PeftConfig)
    network: NetworkConfig = opt(None, "the clients' links, for projected round times",
                                 factory=NetworkConfig)
    report: ReportConfig = opt(None, "how tables read the runs", factory=ReportConfig)
    central: CentralConfig = opt(None, "central baseline", factory=CentralConfig)
    eval: EvalConfig = opt(None, "held-out evaluation", factory=EvalConfig)
    profile: ProfileConfig = opt(None, "measurement", factory=ProfileConfig)
    faults: FaultsConfig = opt(None, "client faults", factory=FaultsConfig)
    dist: DistConfig = opt(None, "processes and devices", factory=DistConfig)
    tracking: TrackingConfig = opt(None, "experiment tracking (TensorBoard, MLflow)",
                                   factory=TrackingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self, exclude: tuple[str, ...] = ("output_dir", "cache_dir", "network",
                                               "report", "tracking")) -> str:
        """A stable digest of the resolved config (keys in `exclude` left out: by default the
        paths, which say where a cell's files go, the network and report settings, which
        say how its record is read, and tracking, where it is logged: not what it computes)."""
        d = self.to_dict()
        for key in exclude:
            d.pop(key, None)
        for (section, key), value in LEGACY.items():
            if d.get(section, {}).get(key, object()) == value:
                del d[section][key]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# Keys added after records were made, with the value that computes what every record made
# before them computed: at that value a key is left out of the hash, so those records still
# match their config (a study file pins it to go on from its records); at any other value the
# hash changes, as the computation does.
LEGACY = {("train", "sparse_head"): False}


def build_config(data: dict | None = None, overrides: typing.Iterable[str] = ()) -> RunConfig:
    """Make a validated RunConfig from a YAML tree and `key=value` overrides."""
    overrides = list(overrides)
    cfg = build_section(RunConfig, apply_overrides(data or {}, overrides), "")
    validate(cfg)
    _refuse_unread(cfg, overrides)
    return cfg


# keys a run does not read under a setting, and that setting: given explicitly (a `--set`),
# such a key is a mistake to name, never a silent no-op (`bench flops --set
# data.path=missing.jsonl` on the synthetic default went on as if nothing was said)
UNREAD = {
    "data.path": ("data.source", "synthetic"), "data.id_field": ("data.source", "synthetic"),
    "data.key_field": ("data.source", "synthetic"),
}


def _refuse_unread(cfg: RunConfig, overrides: list[str]) -> None:
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key not in UNREAD:
            continue
        setting, value = UNREAD[key]
        section, name = setting.split(".")
        if getattr(getattr(cfg, section), name) == value:
            raise ConfigError(f"{key}: not read while {setting} is {value} (the corpus is "
                              f"generated in code); set {setting}=jsonl (or text, hf_disk, "
                              "hf_hub) to read a corpus")


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> RunConfig:
    return build_config(load_yaml(path) if path else {}, overrides)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # a module set to None in sys.modules: deliberately absent
        return False


def validate(cfg: RunConfig) -> None:
    """Rules that span keys (each field's own range was checked while building)."""
    m = cfg.model
    if (m.preset is None) == (m.name_or_path is None):
        raise ConfigError("model: set exactly one of model.preset and model.name_or_path "
                          f"(got preset={m.preset!r}, name_or_path={m.name_or_path!r})")
    d = cfg.data
    if d.source != "synthetic" and not d.path:
        raise ConfigError(f"data.path: required when data.source is {d.source!r}")
    if not d.text_fields:
        raise ConfigError("data.text_fields: at least one field is needed")
    if cfg.partition.method in ("by_key", "dirichlet") and d.source != "synthetic" \
            and not d.key_field:
        raise ConfigError(f"partition.method={cfg.partition.method} needs data.key_field "
                          "(the field whose values are split among clients)")
    unknown = sorted(set(cfg.tracking.backends) - {"tensorboard", "mlflow"})
    if unknown:
        raise ConfigError(f"tracking.backends: {unknown[0]!r} is not one of tensorboard, "
                          "mlflow")
    bad = sorted(set(cfg.faults.corrupt_kinds) - {"nan", "inf", "scale"})
    if bad or not cfg.faults.corrupt_kinds:
        raise ConfigError(f"faults.corrupt_kinds: {bad or '[]'}; choose from nan, inf, scale")
    if cfg.faults.min_clients > cfg.fl.clients:
        raise ConfigError(f"faults.min_clients ({cfg.faults.min_clients}) is more than "
                          f"fl.clients ({cfg.fl.clients})")
    f = cfg.freeze
    if f.min_blocks > f.max_blocks:
        raise ConfigError(f"freeze.min_blocks ({f.min_blocks}) is above freeze.max_blocks "
                          f"({f.max_blocks})")
    if cfg.dist.engine == "deepspeed" and not _importable("deepspeed"):
        raise ConfigError("dist.engine: deepspeed needs the deepspeed extra: "
                          "pip install 'fdapt-bench[deepspeed]'")
    ex = executor_of(cfg)
    if ex.extra_module is not None and not _importable(ex.extra_module):
        raise ConfigError(f"dist.executor: {ex.name} needs the {ex.extra} extra: "
                          f"pip install 'fdapt-bench[{ex.extra}]'")
    if not cfg.name or "/" in cfg.name or "\\" in cfg.name or cfg.name.startswith("."):
        raise ConfigError(f"name: {cfg.name!r} must be a plain folder name (no '/', not hidden)")
    if d.synthetic.n_docs < cfg.fl.clients and d.source == "synthetic":
        raise ConfigError(f"fl.clients ({cfg.fl.clients}) is more than "
                          f"data.synthetic.n_docs ({d.synthetic.n_docs})")


def describe(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every field: the source of `bench config --help`."""
    rows = []
    hints = field_types(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if is_section(hints[f.name]):
            rows.extend(describe(hints[f.name], key))
        else:
            help_ = f.metadata.get("help", "")
            if f.metadata.get("choices"):
                help_ += f" [{' | '.join(map(str, f.metadata['choices']))}]"
            rows.append((key, json.dumps(getattr(default, f.name)), help_))
    return rows
