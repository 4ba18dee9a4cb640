"""Reading finished run folders: the only input of every report."""

from __future__ import annotations

from pathlib import Path

from sessa_bench.run_folder import RunFolder


def collect(results_dir: str | Path, experiment: str) -> list[dict]:
    """summary.json of every finished run under <results_dir>/<experiment>/, in folder-name order."""
    root = Path(results_dir) / experiment
    runs = [RunFolder(p) for p in sorted(root.glob("*")) if p.is_dir()]
    return [r.read_summary() for r in runs if r.is_finished()]
