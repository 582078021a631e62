"""Whether a record's times compare with its neighbours' (contention, thread counts, and their
footnotes), the network its times are projected on, and savings in %."""
from __future__ import annotations

from collections import Counter

from fdapt_core.config.run import NetworkConfig
from fdapt_core.config.build import build_section
from fdapt_core.profiling.host import contended as judge


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
