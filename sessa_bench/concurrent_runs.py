"""Train several runs at once on one machine, each in its own `python -m sessa_bench.train` process.

A ~20M-parameter model leaves most of an H100 idle (kernel launches, host work, evaluation), so a few runs
sharing the device finish sooner than the same runs one after another. The runs themselves do not change:
same configs, seeds, folders and skip/resume rules as `train.run`; each is only slower. Every summary.json
records how many runs were allowed to share the device (`concurrent_runs`), so a table can say that its
summed wall time overstates the device time. `python -m sessa_bench.concurrent_runs --build-data
<overrides>` generates one run's task data into the cache (used to build distinct tasks side by side).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import OmegaConf

from sessa_bench import schema
from sessa_bench.compose import compose_train
from sessa_bench.run_folder import RunFolder

ENV_CONCURRENT = "SESSA_BENCH_CONCURRENT_RUNS"  # read by train.run into summary["concurrent_runs"]


def concurrent_runs() -> int:
    return int(os.environ.get(ENV_CONCURRENT, "1"))


def _build_splits(overrides: list[str]) -> None:
    """Generate (or load) every split of the task of this run's config into the task cache."""
    from sessa_bench.train import build_task

    task = build_task(compose_train(overrides))
    for split in ("train", "val", "test"):
        task.dataset(split)


def _build_in_subprocess(overrides: list[str]) -> None:
    r = subprocess.run([sys.executable, "-m", "sessa_bench.concurrent_runs", "--build-data", *overrides],
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"building the data of {overrides} failed:\n{r.stderr[-3000:]}")


def _pending(run_overrides: list[list[str]]):
    """(overrides, folder) of each run that is not finished yet; a finished one is checked, then skipped."""
    from sessa_bench.train import check_same_config

    pending, tasks = [], {}
    for ov in run_overrides:
        cfg = compose_train(ov)
        schema.validate(cfg)  # bad input fails here, once, before any worker starts
        folder = RunFolder(f"{cfg.results_dir}/{cfg.experiment_name}/{cfg.run_name}")
        if folder.is_finished():
            check_same_config(folder, cfg, "a finished run")
            print(f"skipping finished run {folder.path}", flush=True)
            continue
        pending.append((ov, folder))
        tasks.setdefault(OmegaConf.to_yaml(cfg.task), ov)
    # Build every split once here, so the workers load them from the task cache instead of each
    # generating the same data at the same time. A generator runs on one core, so distinct tasks (a sweep
    # over task settings) are generated side by side, each in its own process.
    builds = list(tasks.values())
    if len(builds) == 1:
        _build_splits(builds[0])
    elif builds:
        with ThreadPoolExecutor(min(len(builds), os.cpu_count() or 1)) as pool:
            list(pool.map(_build_in_subprocess, builds))
    return pending


def _train_one(ov: list[str], folder: RunFolder, env: dict) -> tuple[RunFolder, int, float, Path]:
    log = folder.path.parent / "logs" / f"{folder.path.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"start  {folder.path} (log {log})", flush=True)
    with open(log, "a") as f:
        rc = subprocess.run([sys.executable, "-m", "sessa_bench.train", *ov], stdout=f,
                            stderr=subprocess.STDOUT, env=env).returncode
    dt = time.time() - t0
    print(f"{'done ' if rc == 0 else 'FAILED'} {folder.path} in {dt:.0f} s (exit {rc})", flush=True)
    return folder, rc, dt, log


def train_concurrently(run_overrides: list[list[str]], jobs: int) -> None:
    """Train every unfinished run (each given as its Hydra overrides), at most `jobs` at a time. All runs
    are attempted; if any fails, one error lists them with the end of their logs."""
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: must be >= 1")
    pending = _pending(run_overrides)
    env = {**os.environ, ENV_CONCURRENT: str(jobs)}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(lambda p: _train_one(*p, env), pending))
    failed = [(folder, rc, log) for folder, rc, _, log in results if rc != 0]
    if failed:
        tails = "\n".join(f"--- {folder.path} (exit {rc}, log {log}):\n"
                          + "\n".join(log.read_text().splitlines()[-15:]) for folder, rc, log in failed)
        raise RuntimeError(f"{len(failed)} of {len(pending)} runs failed:\n{tails}")


if __name__ == "__main__":  # python -m sessa_bench.concurrent_runs --build-data <overrides>: one task's data
    if sys.argv[1:2] != ["--build-data"]:
        sys.exit("usage: python -m sessa_bench.concurrent_runs --build-data <hydra overrides of a run>")
    _build_splits(sys.argv[2:])
