"""Reading finished run folders: the only input of every report."""

from __future__ import annotations

import json
from pathlib import Path

from sessa_bench.run_folder import RunFolder

# What every report reads from a summary.json (train.py writes all of them; committed summaries have them).
REQUIRED = ("final", "experiment", "run_name", "family", "task", "task_facts", "budget", "seed", "params",
            "steps", "batch_size", "seq_len", "throughput_tokens_per_s", "optim", "hardware", "git_commit")


def _problem(folder: RunFolder) -> str | None:
    """Why this finished-looking folder cannot be reported, or None."""
    try:
        summary = json.loads(folder.summary.read_text())
    except (OSError, ValueError) as e:
        return f"{folder.path} (summary.json unreadable: {type(e).__name__})"
    if not isinstance(summary, dict):
        return f"{folder.path} (summary.json is not a JSON object)"
    missing = [k for k in REQUIRED if k not in summary]
    return f"{folder.path} (summary.json lacks {', '.join(missing)})" if missing else None


def collect(results_dir: str | Path, experiment: str) -> list[dict]:
    """summary.json of every finished run under <results_dir>/<experiment>/, in folder-name order. A folder
    whose summary.json exists but is corrupt or incomplete is an error (all such folders in one message):
    a report never silently leaves a run out."""
    root = Path(results_dir) / experiment
    runs = [RunFolder(p) for p in sorted(root.glob("*")) if p.is_dir() and (p / "summary.json").exists()]
    bad = [p for p in map(_problem, runs) if p]
    if bad:
        raise ValueError(f"{len(bad)} run folder(s) under {root} cannot be reported: {'; '.join(bad)}; "
                         f"delete their summary.json to rerun them")
    return [r.read_summary() for r in runs]
