"""The run-folder contract (DESIGN section 6): results/runs/<experiment>/<run_name>/ holds

    config.yaml     the resolved config
    metrics.jsonl   one JSON line per logged step
    summary.json    final metrics, parameter counts, throughput, hardware, git commit, backends
    checkpoints/last.ckpt

summary.json is written last and atomically: a folder without it is an unfinished run (resumable), a folder
with it is finished and a rerun skips it. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import torch


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.jsonl"
        self.summary = self.path / "summary.json"
        self.checkpoint = self.path / "checkpoints" / "last.ckpt"

    def is_finished(self) -> bool:
        try:
            return "final" in json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return False

    def read_summary(self) -> dict:
        return json.loads(self.summary.read_text())

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.summary, json.dumps(summary, indent=2, sort_keys=True, default=str))

    def append_metrics(self, row: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with self.metrics.open("a") as f:
            f.write(json.dumps(row, default=float) + "\n")

    def truncate_metrics(self, after_step: int) -> None:
        """On resume, drop lines logged after the checkpoint so the file matches an uninterrupted run."""
        if not self.metrics.exists():
            return
        keep = [ln for ln in self.metrics.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= after_step]
        atomic_write_text(self.metrics, "".join(ln + "\n" for ln in keep))

    def read_metrics(self) -> list[dict]:
        if not self.metrics.exists():
            return []
        return [json.loads(ln) for ln in self.metrics.read_text().splitlines() if ln.strip()]


def git_commit() -> str:
    """The commit named by SESSA_BENCH_GIT_COMMIT when set (the GPU machine gets a copy of the working tree
    whose .git, if any, need not match it), else HEAD (+ "-dirty"), else "unknown"."""
    if os.environ.get("SESSA_BENCH_GIT_COMMIT"):
        return os.environ["SESSA_BENCH_GIT_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def hardware() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
    else:
        info["gpu"] = None
    return info
