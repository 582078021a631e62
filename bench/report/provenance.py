"""The report's Table 3: one row per run record, and whether the records share one training
code."""
from __future__ import annotations

import subprocess
from pathlib import Path

from ..collect import Collection
from ..tables import md_table


def provenance_rows(coll: Collection) -> list[dict]:
    rows = []
    for part in coll.partitions:
        for m in coll.methods:
            cell = coll.cell(part, m)
            for r in sorted(cell.runs, key=lambda r: r.seed) if cell else []:
                env = r.rec.get("environment", {})
                rows.append({
                    "partition": part, "method": m, "seed": r.seed, "record": str(r.path),
                    "status": r.rec.get("status"), "corpus": r.corpus,
                    "synthetic": r.synthetic, "config_hash": r.rec.get("config_hash"),
                    "manifest_sha256": r.rec.get("manifest_sha256"),
                    "device": env.get("device"), "git_commit": env.get("git_commit"),
                    "git_dirty": env.get("git_dirty"),
                    "torch": env.get("packages", {}).get("torch"),
                })
    return rows


def training_code_changes(commits: list[str]) -> dict[tuple[str, str], list[str] | None]:
    """(older, newer) commit → the files of `fdapt_core/` (the training code) that differ
    between them, for commits consecutive in time (None: a commit this checkout lacks)."""
    root = Path(__file__).resolve().parents[2]

    def when(c: str) -> str:  # the commit time, so that consecutive means in history
        try:
            res = subprocess.run(["git", "show", "-s", "--format=%ct", c], cwd=root,
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return ""
        return res.stdout.strip().zfill(12) if res.returncode == 0 else ""

    commits = sorted(commits, key=when)
    out = {}
    for a, b in zip(commits, commits[1:]):
        try:
            res = subprocess.run(["git", "diff", "--name-only", a, b, "--", "fdapt_core/"],
                                 cwd=root, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            out[(a, b)] = None
            continue
        out[(a, b)] = res.stdout.split() if res.returncode == 0 else None
    return out


def _files_md(files: list[str], most: int = 8) -> str:
    """Changed files by name, so that a reader can tell a change of the training loop from
    one of, say, the study's grid or the report."""
    names = [f"`{f.removeprefix('fdapt_core/')}`" for f in files]
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _commits_md(rows: list[dict]) -> list[str]:
    """Whether the records were trained by one training code: their commits, whether
    `fdapt_core/` differs between them, and records trained on uncommitted changes."""
    commits = list(dict.fromkeys(r["git_commit"] for r in rows if r["git_commit"]))
    out = []
    dirty = [r for r in rows if r["git_dirty"]]
    unknown = [r for r in rows if r["git_dirty"] is None]
    if len(commits) > 1:
        changes = training_code_changes(commits)
        differ = [f"`{a[:10]}`→`{b[:10]}`: " + ("not in this checkout" if files is None
                                               else _files_md(files))
                  for (a, b), files in changes.items() if files != []]
        out.append(f"**The records span {len(commits)} commits.** "
                   + ("Between them `fdapt_core/` (the training code) changes: "
                      + "; ".join(differ) + ". Differences between methods may then include "
                      "differences of code." if differ else
                      "`fdapt_core/` (the training code) is the same in all of them."))
    if dirty:
        out.append(f"**{len(dirty)} record(s) were trained on uncommitted changes to "
                   "`fdapt_core/`** (git_dirty): their commit does not name their code.")
    bare = [r for r in unknown if r["git_commit"] is None and r["device"] is None]
    unknown = [r for r in unknown if r not in bare]
    if unknown and len(unknown) == len(rows):
        out.append("These records predate the dirty flag: whether their training code had "
                   "uncommitted changes is not recorded.")
    elif unknown:
        out.append(f"{len(unknown)} record(s) predate the dirty flag.")
    if bare:
        names = sorted({r["method"] for r in bare})
        out.append(f"{len(bare)} record(s) ({', '.join(names)}) carry no environment (written "
                   "before the starting model's record kept one): the code that scored them is "
                   "known only from the commits around them.")
    return [line for n in out for line in (n, "")]


def provenance_md(rows: list[dict]) -> list[str]:
    out = ["## Table 3: provenance", "",
           "One row per run record. The config hash covers the whole resolved config (seed "
           "included); the manifest hash covers the split (document ids per client and the "
           "held-out ids): methods of one partition and seed should share it.", ""]
    out += _commits_md(rows)
    table = [[r["partition"], r["method"], str(r["seed"]), f"`{r['record']}`",
              "synthetic" if r["synthetic"] else r["corpus"],
              f"`{r['config_hash'] or '-'}`", f"`{(r['manifest_sha256'] or '-')[:16]}`",
              r["device"] or "-", (r["git_commit"] or "-")[:10]
              + {True: " (dirty)", False: "", None: ""}[r["git_dirty"]]] for r in rows]
    return out + md_table(["partition", "method", "seed", "record", "corpus", "config hash",
                           "manifest sha256", "device", "git commit"], table, left=9)
