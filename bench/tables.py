"""The comparison table: rows from run records, shown in the terminal, Markdown and CSV."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from rich.table import Table

from fdapt_core.records import loop_wall_s, write_text_atomic

from fdapt_core.network import summary

from .record_timing import (contended, contention_note, network_of, other_threads, saved_pct,
                            threads_note, usual_threads)

# (csv column, header, format, in the terminal table) — csv names carry their units so that
# pandas reads them as they are; the terminal keeps the columns a first look needs.
COLUMNS = [
    ("method", "method", "{}", True),
    ("rounds", "rounds", "{}", False),
    ("clients", "clients", "{}", True),
    ("steps", "steps", "{:,}", False),
    ("tokens", "tokens", "{:,}", True),
    ("initial_loss", "loss start", "{:.3f}", True),
    ("final_loss", "loss", "{:.3f}", True),
    ("final_ppl", "ppl", "{:.1f}", True),
    ("wall_s", "wall s", "{:.1f}", True),
    ("train_wall_s", "train s", "{:.1f}", False),
    ("local_train_s", "local s", "{:.1f}", False),
    ("train_wall_saved_pct", "time saved %", "{:.1f}", True),
    ("train_flops", "train FLOPs", "{:.3g}", False),
    ("flops_saved_pct", "FLOPs saved %", "{:.1f}", True),
    ("analytic_flops", "6ND estimate", "{:.3g}", False),
    ("trainable_share_pct", "train %", "{:.1f}", True),
    ("bytes_up", "bytes up", "{:,}", False),
    ("bytes_down", "bytes down", "{:,}", False),
    ("bytes_sent", "MB sent", "{:.1f}", True),
    ("bytes_up_dense", "bytes up uncompressed", "{:,}", False),
    ("round_s_projected", "round s (net)", "{:.1f}", False),
    ("transfer_share_pct", "transfer % (net)", "{:.1f}", False),
    ("time_to_target_s", "to target s", "{:.1f}", True),
    ("tokens_per_s", "tok/s", "{:,.0f}", True),
    ("tokens_per_train_wall_s", "tok/s (run)", "{:,.0f}", False),
    ("outside_train_pct", "outside %", "{:.1f}", False),
    ("peak_mem_mb", "peak MB", "{:,.0f}", True),
    ("mfu_pct", "MFU %", "{:.1f}", False),
    ("mfu_measured_peak_pct", "MFU % (measured peak)", "{:.1f}", False),
    ("threads", "threads", "{}", False),
    ("other_cpu_cores", "others' cores", "{:.2f}", False),
    ("contended", "contended", "{}", False),
    ("reused", "reused", "{}", False),
]
# shown in MB in the terminal; the CSV keeps bytes
SCALE = {"bytes_sent": 1e-6}
# wall-time figures: marked "!" in the terminal and Markdown when taken under contention
TIMED = ("wall_s", "train_wall_s", "local_train_s", "tokens_per_s", "tokens_per_train_wall_s",
         "outside_train_pct",
         "mfu_pct", "mfu_measured_peak_pct", "round_s_projected", "time_to_target_s")


def rows_of(records: list[dict], reused: list[bool], network=None,
            target_loss: float | None = None) -> list[dict]:
    """One row per record; savings are relative to the fdapt row when there is one. Round
    times and time to target are projected on `network` (a NetworkConfig; default: each
    record's own), the target being `target_loss` or else fdapt's final loss."""
    rows = [row_of(rec, r) for rec, r in zip(records, reused)]
    ref = next((row for row in rows if row["method"] == "fdapt"), None)
    target = target_loss if target_loss is not None else ref and ref["final_loss"]
    for row, rec in zip(rows, records):
        net = summary(rec, network or network_of(rec), target)
        row["round_s_projected"] = net["round_s"]
        row["transfer_share_pct"] = None if net["transfer_share"] is None \
            else 100 * net["transfer_share"]
        row["time_to_target_s"] = net["time_to_target_s"]
    usual = usual_threads(records)
    for row, rec in zip(rows, records):
        # timed apart: under contention, or on another thread count than the rest
        row["_apart"] = bool(row["contended"] or other_threads(rec, usual))
    for row in rows:
        row["flops_saved_pct"] = saved_pct(row["train_flops"], ref and ref["train_flops"])
        row["train_wall_saved_pct"] = saved_pct(row["local_train_s"],
                                                 ref and ref["local_train_s"])
        # a saving is as clean as the two timings it compares
        row["_saving_dirty"] = bool(row["_apart"] or (ref and ref["_apart"]))
    return rows


def row_of(record: dict, reused: bool) -> dict:
    t = record["totals"]
    cfg = record["config"]
    host = record.get("host") or {}  # older records have none
    # recomputed from the rounds: records before it summed parallel ranks' loops (a share
    # below 0)
    share = 1.0 - loop_wall_s(record["rounds"]) / t["wall_s"] if t["wall_s"] else None
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
        "local_train_s": t["local_train_s"],
        "train_wall_saved_pct": None,
        "train_flops": t["train_flops"],
        "flops_saved_pct": None,
        "analytic_flops": t["analytic_flops"],
        "trainable_share_pct": 100.0 * t["trainable_share"],
        "bytes_up": t["bytes_up"],
        "bytes_down": t["bytes_down"],
        "bytes_sent": t["bytes_sent"],
        "bytes_up_dense": t.get("bytes_up_dense", t["bytes_up"]),
        "tokens_per_s": t["tokens_per_s"],
        "tokens_per_train_wall_s": t["tokens"] / t["train_wall_s"] if t["train_wall_s"]
        else None,
        "outside_train_pct": None if share is None else 100.0 * share,
        "peak_mem_mb": t["peak_mem_mb"],
        "mfu_pct": None if t["mfu"] is None else 100.0 * t["mfu"],
        "mfu_measured_peak_pct": None if t.get("mfu_measured_peak") is None
        else 100.0 * t["mfu_measured_peak"],
        "threads": host.get("threads"),
        "other_cpu_cores": host.get("other_cpu_cores"),
        "contended": contended(record) if host else None,
        "reused": reused,
    }


def _cell(row: dict, key: str, fmt: str, scaled: bool = False) -> str:
    value = row[key]
    if value is None:
        return "-" if scaled else ""
    if scaled and key in SCALE:
        value = value * SCALE[key]
    dirty = row.get("_saving_dirty") if key == "train_wall_saved_pct" \
        else key in TIMED and (row.get("_apart") or row.get("contended"))
    return fmt.format(value) + ("!" if dirty else "")


def notes(records: list[dict], network=None, target_loss: float | None = None) -> list[str]:
    """Footnotes a reader needs to read the numbers right."""
    first = records[0]
    cfg, data = first["config"], first["data"]
    degraded = [f"{r['method']} DEGRADED: {r['degraded']}" for r in records
                if r.get("status") == "degraded"]
    corpus = "SYNTHETIC corpus (generated in code, not real text)" if data["synthetic"] \
        else f"corpus {cfg['data']['path']}"
    out = [f"{corpus}: {data['train_documents']} training / {data['validation_documents']} "
           f"held-out documents, {data['train_tokens']:,} training tokens; "
           f"partition {cfg['partition']['method']} over {cfg['fl']['clients']} clients; "
           f"model {cfg['model']['preset'] or cfg['model']['name_or_path']}"]
    central = next((r for r in records if r["base_method"] == "central"), None)
    if central is not None:
        fed = next((r for r in records if r["method"] == "fdapt"), None)
        if cfg["central"]["budget"] != "match":
            out.append("central: one pass over the union of the clients' text per round")
        elif fed is None or fed["totals"]["tokens"] == central["totals"]["tokens"]:
            out.append("central: as many training tokens per round as fdapt's clients (in "
                       "full batches, so it may take fewer steps)")
        else:  # an older record, or a federated run whose clients dropped out
            diff = central["totals"]["tokens"] / fed["totals"]["tokens"] - 1
            out.append(f"central trained {central['totals']['tokens']:,} tokens, fdapt "
                       f"{fed['totals']['tokens']:,} ({100 * diff:+.1f} %): not the same "
                       "token budget")
    net = network or network_of(first)
    out.append(f"(net): projected on {net.up_mbps:g}/{net.down_mbps:g} Mbit/s up/down, "
               f"{net.latency_ms:g} ms latency"
               + (f", per-client spread sigma {net.heterogeneity:g}" if net.heterogeneity
                  else "")
               + ": measured local training + transfer, the slowest client gating each round; "
               "to target: until the held-out loss reaches "
               + (f"{target_loss:g}" if target_loss is not None else "fdapt's final loss")
               + " (empty: never)")
    out.append("savings (time saved %, FLOPs saved %) are relative to fdapt; time is the "
               "clients' local-training loops; FLOPs are counted with FlopCounterMode on one "
               "step per frozen set (forward + backward), the 6ND estimate is blind to freezing; "
               "MB sent is uploads + downloads; peak MB is process RSS on CPU, CUDA max "
               "allocated on GPU")
    if not any(r["method"] == "fdapt" for r in records):
        out.append("no fdapt run in this comparison: time saved % and FLOPs saved % are left "
                   "empty")
    if first.get("objective") == "clm":
        out.append("held-out loss: next-token cross-entropy (CLM) on the same held-out blocks "
                   "for every method; 'loss start' (initial_loss) is the starting model's")
    else:
        out.append("held-out loss: MLM cross-entropy on the same masked held-out blocks for "
                   "every method; 'loss start' (initial_loss) is the starting model's")
    out += [contention_note(r["method"], r) for r in records if contended(r)]
    usual = usual_threads(records)
    out += [threads_note(r["method"], r, usual) for r in records if other_threads(r, usual)]
    return degraded + out  # first: a run that went on without a client


def downstream_columns(records: list[dict]) -> dict[str, tuple[str, str]]:
    """column key → (task, metric), for the downstream scores present in any record."""
    cols = {}
    for rec in records:
        for task, d in rec.get("downstream", {}).items():
            cols[f"{task}_{d['metric']}"] = (task, d["metric"])
    return cols


def add_downstream(rows: list[dict], records: list[dict],
                   cols: dict[str, tuple[str, str]]) -> list[tuple]:
    """Fill each row's downstream scores (points, mean over seeds); return their columns."""
    for row, rec in zip(rows, records):
        for key, (task, metric) in cols.items():
            d = rec.get("downstream", {}).get(task)
            row[key] = 100 * d["scores"][metric]["mean"] if d else None
    return [(key, f"{task} {metric}", "{:.2f}", True) for key, (task, metric) in cols.items()]


def rich_table(rows: list[dict], title: str, extra: list[tuple] = ()) -> Table:
    table = Table(title=title)
    shown = [c for c in [*COLUMNS, *extra] if c[3]]
    for key, header, _, _ in shown:
        table.add_column(header, justify="left" if key == "method" else "right", no_wrap=True)
    for row in rows:
        table.add_row(*[_cell(row, key, fmt, scaled=True) for key, _, fmt, _ in shown])
    return table


def markdown(rows: list[dict], title: str, footnotes: list[str] = (),
             columns: list[tuple] | None = None) -> str:
    """A Markdown table; `columns` as (key, header, format, shown), default: every row key."""
    cols = columns or [(k, k, "{:.4g}" if isinstance(v, float) else "{}", True)
                       for k, v in rows[0].items()]
    lines = [f"# {title}", "", "| " + " | ".join(k for k, *_ in cols) + " |",
             "|" + "|".join(" --- " if k == "method" else " ---: " for k, *_ in cols) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row, k, fmt) for k, _, fmt, _ in cols) + " |")
    lines += [""] + [f"- {n}" for n in footnotes]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict], fields: list[str] | None = None) -> str:
    buf = io.StringIO()
    fields = fields or [k for k in rows[0] if not k.startswith("_")]  # "_": display only
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_tables(folder: Path, rows: list[dict], title: str, footnotes: list[str],
                 extra: list[tuple] = ()) -> None:
    cols = [*COLUMNS, *extra]
    write_text_atomic(folder / "compare.md", markdown(rows, title, footnotes, cols))
    write_text_atomic(folder / "compare.csv", csv_text(rows, [k for k, *_ in cols]))


def md_table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """A Markdown table: the first `left` columns left-aligned, the rest right-aligned."""
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join(" --- " if i < left else " ---: " for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]
