"""Run records in, report cells out: read, check and aggregate records for `bench report`.

Nothing here trains, loads a model or draws: it reads `record.json` files and reduces them to
cells, one per (partition, method), each holding that method's runs over seeds. A cell's
partition comes from the record's config (`partition.method`), never from a folder name, so the
folders of a grid (`<base>-<partition>`, per seed or not) can be passed in any layout.
"""
from __future__ import annotations

import glob
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fdapt_core.config import NetworkConfig, build_section
from fdapt_core.errors import DataError
from fdapt_core.network import project, time_to_target
from fdapt_core.profiling.host import contended as judge
from fdapt_core.records import read_json
from fdapt_core.stats import t_interval

if TYPE_CHECKING:
    from fdapt_core.stats import Interval

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
    if rec.get("status") == "finished" and "totals" in rec:
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

def collect(specs: list[str]) -> Collection:
    """Read every record under the `--runs` folders and group them into cells.

    Unfinished records are left out (and named in the notes); two records of the same method,
    partition and seed keep the first in `--runs` order (also noted). Unreadable or malformed
    records are errors: a report silently missing a cell would read as a complete one."""
    folders = expand_runs(specs)
    runs: list[Run] = []
    notes: list[str] = []
    for folder in folders:
        for path in _record_files(folder):
            run = read_run(path)
            if run.rec.get("status") != "finished":
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
    coll = Collection(cells, partitions, methods, _tasks(runs), folders, notes)
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


# ----------------------------------------------------------------------------- statistics

def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0 for a single value), as the fine-tuning does."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _mean_or_none(values: list) -> float | None:
    """A mean only when every seed has the value: a partial mean would mislead."""
    if not values or any(v is None for v in values):
        return None
    return statistics.fmean(values)


def task_scores(run: Run, task: Task) -> list[float] | None:
    """A run's scores on a task (points, one per fine-tuning seed), or None."""
    for key, d in run.rec.get("downstream", {}).items():
        if not isinstance(d, dict) or d.get("task", key) != task.name \
                or d.get("metric") != task.metric or d.get("task_hash") != task.task_hash:
            continue
        s = d.get("scores", {}).get(task.metric)
        if not s:
            return None
        values = s.get("values") or [s["mean"]]
        return [100.0 * v for v in values]
    return None


def downstream_stats(cell: Cell, task: Task) -> dict | None:
    """Pooled over pretraining seeds and fine-tuning seeds: mean, std, counts; and per
    pretraining seed its mean, with a t-interval over those means (two seeds or more). The
    starting model counts once, however many cells scored it."""
    pooled, seeds, by_seed, seen = [], [], {}, set()
    for r in cell.runs:
        v = task_scores(r, task)
        if cell.method == GENERAL and v is not None:
            # the starting model is one model whatever the cell: a copy scored in another
            # cell with the same fine-tuning seeds is the same scores, not another sample
            if tuple(v) in seen:
                continue
            seen.add(tuple(v))
        if v is not None:
            pooled += v
            seeds.append(r.seed)
            by_seed[r.seed] = statistics.fmean(v)
    if not pooled:
        return None
    mean, std = mean_std(pooled)
    ci = t_interval([by_seed[s] for s in sorted(by_seed)])
    return {"mean": mean, "std": std, "n": len(pooled), "seeds": sorted(seeds),
            "by_seed": {s: by_seed[s] for s in sorted(by_seed)},
            "t95": None if ci is None else (ci.low, ci.high)}


def round_train_s(run: Run) -> list[float]:
    """The clients' local-training seconds of each round of a run."""
    return [sum(c.get("wall_s") or 0.0 for c in r.get("clients", []))
            for r in run.rec.get("rounds", [])]


STALL = 1.5  # a round this many times its run's median round time is a stall


def stalls(run: Run) -> list[int]:
    """Rounds (0-based) whose local-training time is at least STALL × the run's median
    round: a host that stopped the run for a while, which a whole-run contention average
    does not show (one such round turned a 3 % saving into a loss)."""
    times = round_train_s(run)
    if len(times) < 3:  # a median of two is one of them: no stall can be told apart
        return []
    median = statistics.median(times)
    return [i for i, t in enumerate(times) if median > 0 and t >= STALL * median]


def time_saved_by_seed(cell: Cell, ref: Cell, skip_stalls: bool = False) -> dict[int, float]:
    """seed → the local-training time saved vs `ref` (%), over the rounds the two runs share
    (`skip_stalls`: without the rounds either run stalled in). Seeds where either run was
    timed apart (contended, other threads) are left out: their ratio measures the host."""
    refs = {r.seed: r for r in ref.trained if not r.timed_apart}
    out = {}
    for run in cell.trained:
        base = refs.get(run.seed)
        if base is None or run.timed_apart:
            continue
        skip = set(stalls(run)) | set(stalls(base)) if skip_stalls else set()
        pairs = [(t, b) for i, (t, b) in enumerate(zip(round_train_s(run), round_train_s(base)))
                 if i not in skip]
        total = sum(b for _, b in pairs)
        if total > 0:
            out[run.seed] = 100.0 * (1 - sum(t for t, _ in pairs) / total)
    return out


def time_saved_interval(cell: Cell, ref: Cell) -> Interval | None:
    """The local-training time saved vs `ref` (%): the mean over seeds with its 95 %
    t-interval over seeds (None below two). A seed's rounds are not independent repeats of
    one another (they share the run's host and state), so they are summed within the seed."""
    return t_interval(list(time_saved_by_seed(cell, ref).values()))


def timed_runs(runs: list[Run]) -> list[Run]:
    """The runs whose wall times a report shows: those timed alone on a quiet host, or every
    run when none was (its times are then marked as not comparable)."""
    return [r for r in runs if not r.timed_apart] or runs


def efficiency_stats(cell: Cell) -> dict | None:
    """Totals of a cell's training runs, averaged over seeds; wall times and tokens/s over
    its `timed_runs` only."""
    runs = cell.trained
    if not runs:
        return None
    t = [r.totals for r in runs]
    kept = timed_runs(runs)
    timed = [r.totals for r in kept]
    loss_mean, loss_std = mean_std([r.rec["final_eval"]["loss"] for r in runs])
    walls = [x["local_train_s"] for x in timed]
    wall_mean, wall_std = (None, None) if None in walls else mean_std(walls)
    return {
        "seeds": sorted(r.seed for r in runs),
        "rounds": sorted({len(r.rec["rounds"]) for r in runs}),
        "clients": 1 if runs[0].rec.get("base_method") == "central"
        else runs[0].rec["config"].get("fl", {}).get("clients"),
        "train_flops": _mean_or_none([x["train_flops"] for x in t]),
        "local_train_s": wall_mean, "local_train_s_std": wall_std,
        "bytes_up": _mean_or_none([x["bytes_up"] for x in t]),
        "bytes_down": _mean_or_none([x["bytes_down"] for x in t]),
        "bytes_sent": _mean_or_none([None if x["bytes_up"] is None or x["bytes_down"] is None
                                     else x["bytes_up"] + x["bytes_down"] for x in t]),
        "tokens_per_s": _mean_or_none([x["tokens_per_s"] for x in timed]),
        "timed_seeds": sorted(r.seed for r in kept),
        # its times come from runs timed apart (none was timed alone)
        "times_apart": all(r.timed_apart for r in runs),
        "peak_mem_mb": _mean_or_none([x["peak_mem_mb"] for x in t]),
        "contended_runs": sum(contended(r.rec) for r in runs),
        "other_threads_runs": sum(other_threads(r.rec, r.usual_threads) for r in runs),
        "initial_loss": statistics.fmean(r.rec["initial_eval"]["loss"] for r in runs),
        "final_loss": loss_mean, "final_loss_std": loss_std,
        "final_ppl": statistics.fmean(r.rec["final_eval"].get("ppl")
                                      or math.exp(r.rec["final_eval"]["loss"]) for r in runs),
    }


def contended(rec: dict) -> bool:
    """Whether a record's wall times were taken while other processes took cores it needed:
    its `host` measures judged by today's rule (`fdapt_core.profiling.host.contended`), so
    older records are read with the same threshold as new ones; records without the measure
    count as not flagged."""
    h = rec.get("host") or {}
    if h.get("other_cpu_cores") is not None and h.get("threads") and h.get("cpus"):
        return bool(judge(h["other_cpu_cores"], h["threads"], h["cpus"]))
    return bool(h.get("contended"))


def usual_threads(records: list[dict]) -> int | None:
    """The thread count most of these records were timed with (the largest on a tie)."""
    counts = Counter(t for rec in records if (t := (rec.get("host") or {}).get("threads")))
    return max(counts, key=lambda t: (counts[t], t)) if counts else None


def other_threads(rec: dict, usual: int | None) -> bool:
    """Whether a record was timed on another thread count than `usual`: its wall times
    measure other hardware than its neighbours' (a run started beside another takes half
    the cores), so they are not comparable either."""
    t = (rec.get("host") or {}).get("threads")
    return usual is not None and t is not None and t != usual


def threads_note(label: str, rec: dict, usual: int) -> str:
    """The footnote of a run timed on another thread count than the rest."""
    return (f"{label}: timed on {rec['host']['threads']} thread(s) where the other runs used "
            f"{usual}; its wall times, tokens/s and the time savings computed from them are "
            f"not comparable (marked !): re-run it alone on a quiet machine")


def contention_note(label: str, rec: dict) -> str:
    """The footnote of a run timed under contention: by how much, and what follows."""
    h = rec["host"]
    return (f"{label}: timed under contention: other processes kept {h['other_cpu_cores']:.1f} "
            f"of the host's {h['cpus']} cores busy while it ran with {h['threads']} "
            f"thread(s); its wall times, tokens/s and the time savings computed from them are "
            f"not comparable (marked !): re-run it on a quiet machine")


def network_of(rec: dict):
    """The network a record's config names (the default links for an older record)."""
    return build_section(NetworkConfig, rec.get("config", {}).get("network") or {}, "network")


def saved_pct(value: float | None, reference: float | None) -> float | None:
    """How much less than the reference, in % of it (negative: more)."""
    if value is None or reference is None or reference == 0:
        return None
    return 100.0 * (1.0 - value / reference)


def loss_curve(cell: Cell) -> tuple[list[int], list[float], list[float]] | None:
    """Held-out loss per round over seeds: rounds 0 (the initial eval) … R, mean, std."""
    curves = [[r.rec["initial_eval"]["loss"], *[x["eval_loss"] for x in r.rec["rounds"]]]
              for r in cell.trained]
    if not curves:
        return None
    n = min(len(c) for c in curves)
    means, stds = [], []
    for i in range(n):
        m, s = mean_std([c[i] for c in curves])
        means.append(m if m is not None else math.nan)
        stds.append(s if s is not None else math.nan)
    return list(range(n)), means, stds


def target_loss(coll_cells: dict, partition: str) -> float | None:
    """The partition's time-to-target loss: `report.target_loss` of its records where set,
    else its fdapt runs' mean final loss (None without either)."""
    runs = [r for (part, _), c in coll_cells.items() if part == partition for r in c.trained]
    set_ = [(r.rec.get("config", {}).get("report") or {}).get("target_loss") for r in runs]
    if any(x is not None for x in set_):
        return next(x for x in set_ if x is not None)
    fdapt = coll_cells.get((partition, "fdapt"))
    if fdapt is None or not fdapt.trained:
        return None
    return statistics.fmean(r.rec["final_eval"]["loss"] for r in fdapt.trained)


def network_curve(cell: Cell, target: float | None) -> dict | None:
    """A cell's rounds on its records' links, means over seeds: per round (0 = the start)
    cumulative bytes, projected seconds and held-out loss; the mean projected round time and
    the time to `target` (None if some seed never reached it)."""
    runs = cell.trained
    if not runs:
        return None
    projected = [project(r.rec, network_of(r.rec)) for r in runs]
    n = min(len(p) for p in projected)
    if n == 0:
        return None
    # seconds from the runs timed alone where there are some (see timed_runs)
    kept = {id(r) for r in timed_runs(runs)}
    timed = [p for p, r in zip(projected, runs) if id(r) in kept]
    start = statistics.fmean(r.rec["initial_eval"]["loss"] for r in runs)
    losses = [[t.loss for t in p[:n]] for p in projected]
    reached = [time_to_target(p, target) for p in timed]
    return {
        "bytes": [0.0] + [statistics.fmean(p[i].bytes_sent for p in projected) for i in range(n)],
        "seconds": [0.0] + [statistics.fmean(p[i].elapsed_s for p in timed) for i in range(n)],
        "loss": [start] + [None if any(x[i] is None for x in losses)
                           else statistics.fmean(x[i] for x in losses) for i in range(n)],
        "round_s": statistics.fmean(p[n - 1].elapsed_s / n for p in timed),
        "time_to_target_s": None if target is None or None in reached
        else statistics.fmean(reached),
    }
