"""The one Markdown and CSV table writer of the code base, with the number formats every report shares."""

from __future__ import annotations

import csv
import io
import math
import statistics
from typing import Iterable, Sequence

NOT_RUN = "not run"


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; cells are printed with str()."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def csv_text(fields: Sequence[str], rows: Iterable[dict], lineterminator: str = "\n") -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), restval="", lineterminator=lineterminator)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def aggregate(values: list[float]) -> tuple[float, float | None] | None:
    """(mean, sample std or None for one value), or None for no values."""
    if not values:
        return None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def mean_std(agg: tuple[float, float | None] | None, digits: int = 4, missing: str = NOT_RUN) -> str:
    if agg is None:
        return missing
    m, s = agg
    return f"{m:.{digits}f}" if s is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def number(v, spec: str = ".2f") -> str:
    """A cell for a measured value that may be missing (None), not a number, or a marker such as "OOM"."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else format(v, spec)
    return str(v)


def device(summary: dict) -> str:
    hw = summary["hardware"]
    return hw.get("gpu") or f"CPU x{hw.get('cpu_count')}"


def short_commit(commit: str) -> str:
    return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")
