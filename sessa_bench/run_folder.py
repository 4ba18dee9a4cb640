"""The run-folder contract: results/runs/<experiment>/<run_name>/ holds

    config.yaml     the resolved config
    metrics.jsonl   one JSON line per logged step
    summary.json    final metrics, the task's facts, parameter counts, throughput, hardware, git commit,
                    backends: everything a report needs, so reports read nothing else
    checkpoints/last.ckpt

summary.json is written last and atomically: a folder without it is an unfinished run (resumable), a folder
with it is finished and a rerun skips it, provided the rerun asks for the same config (else it is an error
that lists the differences, so a result is never silently reused for another config).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import torch
from omegaconf import OmegaConf

from sessa_bench.files import atomic_write_text  # noqa: F401 (re-exported: the one atomic text write)

# Keys that may differ between a run and its rerun without changing what the run computes.
# The number of processes is one of them: data.batch_size is the global batch, split across the processes.
RUN_INDEPENDENT = ("resume", "debug", "trainer.enable_progress_bar", "logger", "results_dir", "run_dir",
                   "trainer.devices", "trainer.num_nodes", "trainer.strategy")
# How many runs shared the machine, and which GPU a worker was pinned to and how many workers shared that GPU
# (set by sessa_bench.runs for its workers; recorded in summary.json).
ENV_CONCURRENT = "SESSA_BENCH_CONCURRENT_RUNS"
ENV_GPU = "SESSA_BENCH_GPU"
ENV_RUNS_ON_GPU = "SESSA_BENCH_RUNS_ON_GPU"


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.jsonl"
        self.summary = self.path / "summary.json"
        self.checkpoint = self.path / "checkpoints" / "last.ckpt"

    @classmethod
    def of(cls, cfg) -> "RunFolder":
        """The folder of a composed run config."""
        return cls(Path(cfg.results_dir) / cfg.experiment_name / cfg.run_name)

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

    def check_config(self, cfg, what: str) -> None:
        """Raise if this folder already holds `what` (a finished or unfinished run) of another config."""
        if not self.config.exists():
            return
        changed = config_changes(OmegaConf.to_container(OmegaConf.load(self.config)), resolved_config(cfg))
        if changed:
            raise ValueError(f"run folder {self.path} holds {what} with a different config "
                             f"({', '.join(changed[:8])}); choose another experiment_name or run_name, "
                             f"or delete the folder to start over")


def resolved_config(cfg) -> dict:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)  # present when composed outside @hydra.main
    return resolved


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, ignoring RUN_INDEPENDENT ones."""
    out = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}{key}"
        if name in RUN_INDEPENDENT:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, name + ".")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def concurrent_runs() -> int:
    return int(os.environ.get(ENV_CONCURRENT, "1"))


def placement() -> dict | None:
    """{"gpu": the GPU a runs.ensure worker was pinned to, "runs_on_gpu": how many workers shared it}, or None
    for a run that was not placed (in process, on CPU, or started by hand)."""
    if ENV_GPU not in os.environ:
        return None
    gpu = os.environ[ENV_GPU]
    return {"gpu": int(gpu) if gpu.isdigit() else gpu, "runs_on_gpu": int(os.environ.get(ENV_RUNS_ON_GPU, "1"))}


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
