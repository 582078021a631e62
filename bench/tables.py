"""The comparison table: rows from run records, shown in the terminal, Markdown and CSV."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from rich.table import Table

from fdapt_core.records import write_text_atomic

# (csv column, header, format, in the terminal table) — csv names carry their units so that
# pandas reads them as they are; the terminal keeps the columns a first look needs.
COLUMNS = [
    ("method", "method", "{}", True),
    ("rounds", "rounds", "{}", True),
    ("clients", "clients", "{}", True),
    ("steps", "steps", "{:,}", False),
    ("tokens", "tokens", "{:,}", True),
    ("initial_loss", "loss start", "{:.3f}", True),
    ("final_loss", "loss", "{:.3f}", True),
    ("final_ppl", "ppl", "{:.1f}", True),
    ("wall_s", "wall s", "{:.1f}", True),
    ("train_wall_s", "train s", "{:.1f}", False),
    ("trainable_share_pct", "train %", "{:.1f}", True),
    ("bytes_up", "bytes up", "{:,}", False),
    ("reused", "reused", "{}", False),
]


def row_of(record: dict, reused: bool) -> dict:
    t = record["totals"]
    cfg = record["config"]
    return {
        "method": record["method"],
        "rounds": t["rounds"],
        "clients": 1 if record["base_method"] == "central" else cfg["fl"]["clients"],
        "steps": t["steps"],
        "tokens": t["tokens"],
        "initial_loss": record["initial_eval"]["loss"],
        "final_loss": record["final_eval"]["loss"],
        "final_ppl": record["final_eval"]["ppl"],
        "wall_s": t["wall_s"],
        "train_wall_s": t["train_wall_s"],
        "trainable_share_pct": 100.0 * t["trainable_share"],
        "bytes_up": t["bytes_up"],
        "reused": reused,
    }


def notes(records: list[dict]) -> list[str]:
    """Footnotes a reader needs to read the numbers right."""
    first = records[0]
    cfg, data = first["config"], first["data"]
    corpus = "SYNTHETIC corpus (generated in code, not real text)" if data["synthetic"] \
        else f"corpus {cfg['data']['path']}"
    out = [f"{corpus}: {data['train_documents']} training / {data['validation_documents']} "
           f"held-out documents, {data['train_tokens']:,} training tokens; "
           f"partition {cfg['partition']['method']} over {cfg['fl']['clients']} clients; "
           f"model {cfg['model']['preset'] or cfg['model']['name_or_path']}"]
    if any(r["base_method"] == "central" for r in records):
        budget = cfg["central"]["budget"]
        out.append("central: the same number of training steps as fdapt (so the same token "
                   "budget)" if budget == "match" else "central: one pass over the union of "
                   "the clients' text per round")
    out.append("held-out loss: MLM cross-entropy on the same masked held-out blocks for every "
               "method; 'loss start' (initial_loss) is the starting model's")
    return out


def rich_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    shown = [c for c in COLUMNS if c[3]]
    for key, header, _, _ in shown:
        table.add_column(header, justify="left" if key == "method" else "right", no_wrap=True)
    for row in rows:
        table.add_row(*[fmt.format(row[key]) for key, _, fmt, _ in shown])
    return table


def markdown(rows: list[dict], title: str, footnotes: list[str]) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(k for k, *_ in COLUMNS) + " |",
             "|" + "|".join(" --- " if k == "method" else " ---: " for k, *_ in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[k]) for k, _, fmt, _ in COLUMNS) + " |")
    lines += [""] + [f"- {n}" for n in footnotes]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[k for k, *_ in COLUMNS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_tables(folder: Path, rows: list[dict], title: str, footnotes: list[str]) -> None:
    write_text_atomic(folder / "compare.md", markdown(rows, title, footnotes))
    write_text_atomic(folder / "compare.csv", csv_text(rows))
