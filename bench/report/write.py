"""`bench report`: a paper's tables and figures from run records alone.

Reads `<folder>/<method>/record.json` (see `bench.collect`), and writes into one folder:
`report.md` (the tables, figure references, provenance and notes), one CSV per table and per
figure's data, and `figures/*.png|pdf`. Nothing trains and no model is loaded. The folder is
built aside and renamed into place: a failed report leaves the previous one as it was.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fdapt_core.errors import DataError

from ..collect import Collection, collect
from .downstream import downstream_md, downstream_rows, mean_task_labels
from .efficiency import efficiency_md, efficiency_rows
from .figures import FIGURES, curve_rows, draw_figures, tradeoff_points
from .probe import probe_md
from .provenance import provenance_md, provenance_rows
from .setup import setup_md
from .verdicts import dapt_md, power_plan, verdicts_md
from ..tables import csv_text
from ..scope import claim_scope
from ..verdicts import MARGIN_PTS, claim_rows, claim_summary, differences, majority_check


@dataclass
class Report:
    out: Path
    notes: list[str]
    figures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def render(coll: Collection, eff, down, prov, done: dict, command: str, ylabel: str,
           claims: list[dict] = (), majority: list = (), margin: float = MARGIN_PTS,
           plan: list[str] = (), dapt: list[str] = (), mean_of: list[str] = (),
           setup: list[str] = (), probe: list[str] = ()) -> str:
    title = default_name(coll)
    n_runs = len(coll.runs)
    where = ", ".join(f"`{f}`" for f in coll.folders) if len(coll.folders) <= 4 \
        else f"{len(coll.folders)} folders (Table 3 names each record)"
    lines = [f"# fdapt-bench report: {title}", "",
             f"{n_runs} run records ({_n(len(coll.methods), 'method')} × "
             f"{_n(len(coll.partitions), 'partition')}) from {where}; regenerated from the "
             f"records alone with `{command}`.", ""]
    synth = [p for p in coll.partitions if any(r.synthetic for m in coll.methods
                                               if (c := coll.cell(p, m)) for r in c.runs)]
    if synth:
        lines += [f"> **Synthetic corpus** in {', '.join(synth)}: text generated in code, not "
                  "real text. These numbers check the harness; they say nothing about DAPT.",
                  ""]
    lines += verdicts_md(claims, majority, margin, plan)
    lines += list(dapt)
    lines += list(probe)
    lines += ["## Setup", ""] + setup_md(coll) + list(setup) + [""]
    lines += downstream_md(coll, down, mean_of)
    lines += efficiency_md(coll, eff)
    lines += ["## Figures", "", "PNG (300 dpi) and PDF in `figures/`.", ""]
    for stem, caption in FIGURES.items():
        if done.get(stem) is None:
            lines += [f"![{caption}](figures/{stem}.png)", "", f"*{caption}*"
                      + (f" y axis: {ylabel.replace(chr(10), ' ')}." if stem == "fig4_tradeoff"
                         else "") + f" ([PDF](figures/{stem}.pdf))", ""]
        else:
            lines += [f"*{caption.split(':')[0]}: not drawn: {done[stem]}.*", ""]
    lines += provenance_md(prov)
    if coll.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in coll.notes] + [""]
    lines += ["## Files", "",
              "- `downstream.csv`: Table 1, one row per partition × method × task",
              "- `efficiency.csv`: Table 2 (FLOPs in FLOP, time in s, bytes in MB)",
              "- `provenance.csv`: Table 3",
              "- `verdicts.csv`: the claims' tests, one row per partition × method × task",
              "- `heldout_loss.csv`: Figure 1's data, one row per run and round",
              "- `tradeoff.csv`: Figure 4's data", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- output

def default_name(coll: Collection) -> str:
    """The comparison's base name: the records' name less a `-<partition>` / `-s<seed>`
    suffix when that leaves one name, else the folders' common prefix."""
    bases = set()
    for r in coll.runs:
        name = str(r.rec.get("name") or r.folder.parent.name)
        raw = r.rec["config"]["partition"]["method"]
        for _ in range(2):
            name = re.sub(r"[-_](s|seed)\d+$", "", name)
            for suffix in (f"-{raw}", f"_{raw}"):
                if name.endswith(suffix) and len(name) > len(suffix):
                    name = name[: -len(suffix)]
        bases.add(name)
    if len(bases) == 1:
        return bases.pop()
    prefix = os.path.commonprefix([f.resolve().name for f in coll.folders]).rstrip("-_")
    return prefix or "+".join(sorted(bases))


def default_out(coll: Collection) -> Path:
    if len(coll.folders) == 1:
        return coll.folders[0] / "report"
    return coll.folders[0].parent / default_name(coll) / "report"


def _check_out(out: Path, coll: Collection) -> None:
    """The report replaces `out` whole: never a folder holding anything but a report."""
    for r in coll.runs:
        if out.resolve() in (r.folder.resolve(), *r.folder.resolve().parents):
            raise DataError(f"--out: {out} holds run records ({r.path}); choose another")
    if out.exists() and not out.is_dir():
        raise DataError(f"--out: {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "report.md").is_file():
        raise DataError(f"--out: {out} exists and is not a report folder (no report.md); "
                        "choose another")


def verdict_rows(coll: Collection, margin: float = MARGIN_PTS) -> tuple[dict, list, list, list]:
    """What `verdicts.csv` is written from: (every paired difference, the efficiency rows, the
    majority-class checks, the claims' rows). The report, `bench study --plan` and the
    coverage test (tests/test_coverage.py) all read verdicts through here."""
    diffs = differences(coll)  # every paired downstream difference, once
    eff = efficiency_rows(coll)
    majority = [c for t in coll.tasks if (c := majority_check(coll, t)) is not None]
    claims = claim_rows(coll, diffs, {(r["partition"], r["method"]): r for r in eff},
                        tuple(c.task.label for c in majority if not c.beaten), margin)
    return diffs, eff, majority, claims


def study_plan(specs: list[str], margin: float, finetune_seeds: int,
               test_n: dict[str, int], tasks: list[str] | None = None,
               planned_seeds: int | None = None) -> list[str]:
    """`bench study --plan`: the power plan of the records in `specs` (on `tasks`, by name;
    None: every task), for a design of `finetune_seeds` fine-tuning seeds on test sets of
    `test_n` examples and `planned_seeds` pretraining seeds (None: the records')."""
    coll = collect(specs, tasks)
    diffs, _, _, claims = verdict_rows(coll, margin)
    summary = [f"- {'Claim ' + str(c) if c != 'beyond' else 'Beyond the paper'}: "
               f"{claim_summary(claims, c)}"
               + (f" (it rests on: {claim_scope(claims, c)})" if claim_scope(claims, c) else "")
               for c in (1, 2, "beyond") if any(r["claim"] == c for r in claims)]
    return summary + [""] + power_plan(coll, diffs, claims, finetune_seeds, test_n,
                                       planned_seeds)


def make_report(specs: list[str], out: Path | None = None, command: str | None = None,
                margin: float = MARGIN_PTS, finetune_seeds: int | None = None,
                test_n: dict[str, int] | None = None, setup: list[str] = (),
                tasks: list[str] | None = None, planned_seeds: int | None = None) -> Report:
    """Read the records, then write the report folder `out` (built aside, then renamed).
    `margin`: the claims' equivalence margin (points); `finetune_seeds` and `test_n`
    (test examples per task name): the design the power plan prices (default: the
    records'); `setup`: more lines for the setup (a study's head warm-up); `tasks`: the
    downstream tasks reported, by name (None: every task the records hold)."""
    coll = collect(specs, tasks)  # every input error is raised here, before anything is written
    out = Path(out) if out is not None else default_out(coll)
    _check_out(out, coll)
    command = command or f"python -m bench report --runs {','.join(specs)}"
    diffs, eff, majority, claims = verdict_rows(coll, margin)
    down, prov = downstream_rows(coll, diffs), provenance_rows(coll)
    plan = power_plan(coll, diffs, claims, finetune_seeds, test_n or {}, planned_seeds)
    mean_of = mean_task_labels(coll, down, tuple(c.task.label for c in majority
                                                  if not c.beaten))
    points, ylabel = tradeoff_points(coll, eff, down, mean_of)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise DataError(f"--out: cannot write under {out.parent} ({exc.strerror})") from None
    try:
        done = draw_figures(coll, eff, down, points, ylabel, tmp / "figures")
        files = {
            "report.md": render(coll, eff, down, prov, done, command, ylabel, claims,
                                majority, margin, plan, dapt_md(coll, diffs, mean_of),
                                mean_of, list(setup), probe_md(coll)),
            "verdicts.csv": csv_text(claims) if claims else "",
            "efficiency.csv": csv_text(eff) if eff else "",
            "downstream.csv": csv_text(down) if down else "",
            "provenance.csv": csv_text(prov),
            "heldout_loss.csv": csv_text(rows) if (rows := curve_rows(coll)) else "",
            "tradeoff.csv": csv_text(points) if points else "",
        }
        for name, text in files.items():
            if text:
                (tmp / name).write_text(text, encoding="utf-8")
        umask = os.umask(0o022)
        os.umask(umask)
        for p in [tmp, *tmp.rglob("*")]:
            p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            if old is not None:
                os.replace(old, out)  # the previous report, as it was
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"--out: cannot write {out} ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    drawn = [f"figures/{s}.{ext}" for s, why in done.items() if why is None
             for ext in ("png", "pdf")]
    skipped = [f"{s}: {why}" for s, why in done.items() if why is not None]
    return Report(out, coll.notes, drawn, skipped)
