"""Run records in, report cells out: read, check and aggregate records for `bench report`.

Nothing here trains, loads a model or draws: it reads `record.json` files and reduces them to
cells, one per (partition, method), each holding that method's runs over seeds. A cell's
partition comes from the record's config (`partition.method`), never from a folder name, so the
folders of a grid (`<base>-<partition>`, per seed or not) can be passed in any layout.
"""
from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

from fdapt_core.errors import DataError
from fdapt_core.records import read_json
from fdapt_core.runs import DONE

from .record_timing import contended, other_threads, usual_threads

GENERAL = "general"  # the starting model with no DAPT (fdapt_core.downstream.runs.GENERAL)
PARTITION_ORDER = ["iid", "quantity", "voc", "len", "by_key", "dirichlet"]
METHOD_ORDER = [GENERAL, "central", "fdapt"]
GLOB_CHARS = set("*?[")


@dataclass
class Run:
    """One run record, with what the report groups it by."""

    path: Path  # the record file
    rec: dict
    method: str
    partition: str
    seed: int
    corpus: str
    synthetic: bool
    totals: dict = field(default_factory=dict)  # what the report reads, None where missing
    missing: list[str] = field(default_factory=list)
    usual_threads: int | None = None  # the thread count most runs of its collection used

    @property
    def timed_apart(self) -> bool:
        """Whether its wall times cannot be compared with its neighbours': timed under
        contention, or on another thread count than most runs."""
        return contended(self.rec) or other_threads(self.rec, self.usual_threads)

    @property
    def trained(self) -> bool:
        """A training run (with rounds and totals), not the starting model's reference record."""
        return "totals" in self.rec

    @property
    def folder(self) -> Path:
        return self.path.parent


@dataclass
class Task:
    """One downstream task as scored: the same name with other settings is another task."""

    name: str
    metric: str
    task_hash: str | None
    quick: bool | None
    label: str = ""


@dataclass
class Cell:
    partition: str
    method: str
    runs: list[Run] = field(default_factory=list)

    @property
    def trained(self) -> list[Run]:
        return [r for r in self.runs if r.trained]

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)


@dataclass
class Collection:
    """Every usable record, grouped, plus what a reader must be told about the rest."""

    cells: dict[tuple[str, str], Cell]
    partitions: list[str]
    methods: list[str]
    tasks: list[Task]
    folders: list[Path]
    notes: list[str]

    def cell(self, partition: str, method: str) -> Cell | None:
        return self.cells.get((partition, method))

    @property
    def runs(self) -> list[Run]:
        return [r for c in self.cells.values() for r in c.runs]

    @property
    def usual_threads(self) -> int | None:
        """The thread count most training runs were timed with."""
        return usual_threads([r.rec for r in self.runs if r.trained])


# ----------------------------------------------------------------------------- finding

def expand_runs(specs: list[str]) -> list[Path]:
    """Folders from `--runs` entries: paths as given, glob patterns expanded (sorted)."""
    folders: list[Path] = []
    for spec in specs:
        if GLOB_CHARS & set(spec):
            found = [Path(p) for p in sorted(glob.glob(spec)) if Path(p).is_dir()]
            found = [p for p in found if _record_files(p)]
            if not found:
                raise DataError(f"--runs: {spec!r} matches no folder holding "
                                "<method>/record.json")
        else:
            p = Path(spec)
            if not p.is_dir():
                raise DataError(f"--runs: {p}: no such folder")
            if not _record_files(p):
                raise DataError(f"--runs: {p} holds no <method>/record.json (a comparison "
                                "folder such as results/default is expected)")
            found = [p]
        folders += [p for p in found if p not in folders]
    return folders


def _record_files(folder: Path) -> list[Path]:
    """A comparison folder's `<method>/record.json`, or a run folder's own record."""
    if (folder / "record.json").is_file():
        return [folder / "record.json"]
    return sorted(folder.glob("*/record.json"))


def _get(rec: dict, path: Path, dotted: str):
    """rec[a][b]…, or a DataError naming the file and the missing key."""
    value = rec
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise DataError(f"{path}: not a run record ({dotted} is missing)")
        value = value[key]
    return value


def read_run(path: Path) -> Run:
    try:
        rec = read_json(path)
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are both
        reason = getattr(exc, "msg", None) or exc.__class__.__name__
        raise DataError(f"{path}: unreadable run record ({reason})") from None
    if not isinstance(rec, dict):
        raise DataError(f"{path}: not a run record (a JSON object is expected)")
    method = _get(rec, path, "method")
    part = _get(rec, path, "config.partition.method")
    seed = _get(rec, path, "config.seed")
    source = _get(rec, path, "config.data.source")
    synthetic = bool(rec.get("data", {}).get("synthetic", source == "synthetic"))
    if part == "dirichlet":
        part = f"dirichlet(a={rec['config']['partition'].get('alpha')})"
    data_path = rec["config"]["data"].get("path")
    corpus = "synthetic" if synthetic else (Path(data_path).name if data_path else source)
    run = Run(path, rec, str(method), str(part), int(seed), corpus, synthetic)
    if rec.get("status") in DONE and "totals" in rec:
        _get(rec, path, "initial_eval.loss")
        _get(rec, path, "final_eval.loss")
        rounds = _get(rec, path, "rounds")
        if not isinstance(rounds, list) or not isinstance(rec["totals"], dict):
            raise DataError(f"{path}: not a run record (rounds or totals malformed)")
        for i, r in enumerate(rounds):
            if not isinstance(r, dict) or "eval_loss" not in r:
                raise DataError(f"{path}: not a run record (rounds[{i}].eval_loss is missing)")
        run.totals, run.missing = _totals(rec)
    return run


def _totals(rec: dict) -> tuple[dict, list[str]]:
    """The totals the report reads; an older record lacking one is summed from its client
    rows where they have it, else left None (shown as '-', and noted)."""
    t = rec["totals"]
    clients = [c for r in rec["rounds"] for c in r.get("clients", [])]

    def total(key: str, client_key: str | None = None):
        if t.get(key) is not None:
            return t[key]
        vals = [c.get(client_key or key) for c in clients]
        return sum(vals) if clients and None not in vals else None

    out = {"train_flops": total("train_flops"), "local_train_s": total("local_train_s", "wall_s"),
           "bytes_up": total("bytes_up"), "bytes_down": total("bytes_down"),
           "tokens_per_s": t.get("tokens_per_s"), "peak_mem_mb": t.get("peak_mem_mb")}
    tokens = total("tokens")
    if out["tokens_per_s"] is None and tokens and out["local_train_s"]:
        out["tokens_per_s"] = tokens / out["local_train_s"]
    return out, [k for k, v in out.items() if v is None]


def _order(items, preferred: list[str]) -> list[str]:
    return sorted(set(items), key=lambda x: (preferred.index(x) if x in preferred
                                             else len(preferred), x))


def _partition_key(label: str) -> str:
    return label.split("/")[-1].split("(")[0]


# ----------------------------------------------------------------------------- collecting

def collect(specs: list[str], tasks: list[str] | None = None) -> Collection:
    """Read every record under the `--runs` folders and group them into cells; `tasks`: the
    downstream tasks to read, by the name they were scored under (None: every task scored).

    Unfinished records are left out (and named in the notes); two records of the same method,
    partition and seed keep the first in `--runs` order (also noted). Unreadable or malformed
    records are errors: a report silently missing a cell would read as a complete one."""
    folders = expand_runs(specs)
    runs: list[Run] = []
    notes: list[str] = []
    for folder in folders:
        for path in _record_files(folder):
            run = read_run(path)
            if run.rec.get("status") not in DONE:
                notes.append(f"left out {path}: status {run.rec.get('status')!r}, "
                             "not finished")
                continue
            if run.missing:
                notes.append(f"{path}: an older record without {', '.join(run.missing)} "
                             "(shown as -)")
            runs.append(run)
    if not any(r.trained for r in runs):
        where = ", ".join(str(f) for f in folders)
        raise DataError(f"--runs: {where}: no finished training run record")
    corpora = sorted({r.corpus for r in runs})
    if len(corpora) > 1:  # one report over several corpora: a partition is per corpus
        for r in runs:
            r.partition = f"{r.corpus}/{r.partition}"
    cells: dict[tuple[str, str], Cell] = {}
    for r in runs:
        cell = cells.setdefault((r.partition, r.method), Cell(r.partition, r.method))
        twin = next((o for o in cell.runs if o.seed == r.seed), None)
        if twin is not None:
            same = "the same config" if twin.rec.get("config_hash") == \
                r.rec.get("config_hash") else "ANOTHER config"
            notes.append(f"duplicate {r.method} / {r.partition} / seed {r.seed}: kept "
                         f"{twin.path}, left out {r.path} ({same})")
            continue
        cell.runs.append(r)
    partitions = sorted({c.partition for c in cells.values()},
                        key=lambda p: (corpora.index(p.split("/")[0]) if "/" in p else 0,
                                       PARTITION_ORDER.index(_partition_key(p))
                                       if _partition_key(p) in PARTITION_ORDER
                                       else len(PARTITION_ORDER), p))
    methods = _order([c.method for c in cells.values()], METHOD_ORDER)
    notes += _consistency_notes(cells)
    coll = Collection(cells, partitions, methods, _only(_tasks(runs), tasks, folders),
                      folders, notes)
    usual = coll.usual_threads
    for r in coll.runs:
        r.usual_threads = usual
    return coll


def _consistency_notes(cells: dict[tuple[str, str], Cell]) -> list[str]:
    """Provenance checks: one partition and seed should give every method the same split."""
    out = []
    by_split: dict[tuple[str, int], dict[str, set]] = {}
    for c in cells.values():
        for r in c.trained:
            by_split.setdefault((c.partition, r.seed), {}).setdefault(
                r.rec.get("manifest_sha256"), set()).add(c.method)
    for (part, seed), hashes in sorted(by_split.items()):
        if len(hashes) > 1:
            groups = "; ".join(f"{(h or '?')[:12]}: {', '.join(sorted(m))}"
                               for h, m in hashes.items())
            out.append(f"WARNING {part} seed {seed}: methods were trained on different "
                       f"splits (manifest hashes differ: {groups})")
    for c in cells.values():
        rounds = {len(r.rec["rounds"]) for r in c.trained}
        if len(rounds) > 1:
            out.append(f"{c.method} / {c.partition}: seeds ran different numbers of rounds "
                       f"({sorted(rounds)}); curves are cut to the shortest")
    return out


def _only(found: list[Task], names: list[str] | None, folders: list[Path]) -> list[Task]:
    """The tasks named (every task where None): a study reads its own tasks, though another
    readout of the same models (a second study file over the same cells) is in its records."""
    if names is None:
        return found
    missing = [n for n in names if all(t.name != n for t in found)]
    if missing:
        where = ", ".join(str(f) for f in folders[:3]) + (" …" if len(folders) > 3 else "")
        raise DataError(f"task {missing[0]!r} is scored in no record under {where} "
                        f"(scored: {', '.join(sorted({t.name for t in found})) or 'none'})")
    return [t for t in found if t.name in names]


def _tasks(runs: list[Run]) -> list[Task]:
    """The downstream tasks scored in any record; a task scored with other settings (another
    task hash, e.g. quick vs full) is a separate task, never averaged with the first."""
    found: dict[tuple, Task] = {}
    for r in runs:
        for key, d in r.rec.get("downstream", {}).items():
            if not isinstance(d, dict) or "metric" not in d:
                continue
            name = d.get("task", key)
            k = (name, d["metric"], d.get("task_hash"))
            found.setdefault(k, Task(name, d["metric"], d.get("task_hash"), d.get("quick")))
    tasks = list(found.values())  # in the order the records list them (bench downstream's)
    # a task is named by its name; only where one name was scored two ways does its label
    # say how ("quick budget": the task's quick training subset and epochs; its test set is
    # whatever the setup section says, whole by default), then which settings' hash
    names = [t.name for t in tasks]
    for t in tasks:
        t.label = t.name
        if names.count(t.name) > 1 and t.quick is not None:
            t.label += " (quick budget)" if t.quick else " (full budget)"
    labels = [t.label for t in tasks]
    for t in tasks:
        if labels.count(t.label) > 1:
            t.label += f" [{(t.task_hash or '?')[:6]}]"
    return tasks
