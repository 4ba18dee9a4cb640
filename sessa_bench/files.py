"""Atomic file writes: every result, cache and checkpoint file is written to a temporary name beside its
target and renamed over it, so a crash mid-write never leaves a file that a later run would trust."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) on a temporary path in the target's folder, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def keep_csv_rows_before(path: str | Path, step: int) -> None:
    """Rewrite a CSV log with a `step` column (Lightning's metrics.csv) atomically, keeping its rows logged
    before `step`: what a run resumed at `step`, or restored to a run of `step` steps, logged."""
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], [r for r in reader if int(r["step"]) < step]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)  # "\r\n" rows, as Lightning writes them
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, out.getvalue())
