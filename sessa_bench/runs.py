"""Turn a list of runs (each given as its Hydra overrides) into finished run folders: the one place that
trains several runs, for the demo, the paper tables, calibration sweeps and anything else.

Every run is composed and validated first, so bad input fails before anything trains; finished runs are
checked (same config) and skipped. What is left trains in this process one after another (jobs=1, the
`local` launcher's semantics), or in `jobs` worker processes (`python -m sessa_bench.train`) sharing the
machine: a ~20M-parameter model leaves most of a GPU idle, so a few runs side by side finish sooner.
On a machine with GPUs the workers are spread over all visible GPUs, round robin (`place`), each pinned to
its GPU with CUDA_VISIBLE_DEVICES; `jobs_per_gpu` caps how many share one GPU. The runs themselves do not
change; every summary.json records how many shared its device (`concurrent_runs`) and, on GPUs, which GPU
(`placement`), so a table can say that its summed wall time overstates the device time.

    python -m sessa_bench.runs --jobs 4 [--jobs-per-gpu K] model=sessa,transformer seed=0,1   # a sweep
    python -m sessa_bench.runs --build-data <overrides>    # one run's task data into the cache (workers)

The first form is a Hydra-style multirun (comma lists and range() expand to their product) trained by
`ensure`, so its runs spread over the GPUs of this machine.
"""

from __future__ import annotations

import itertools
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from omegaconf import OmegaConf

from sessa_bench import schema
from sessa_bench.compose import compose_train
from sessa_bench.run_folder import ENV_CONCURRENT, ENV_GPU, ENV_RUNS_ON_GPU, RunFolder


def pending(run_overrides: list[list[str]]) -> list[tuple[list[str], RunFolder]]:
    """(overrides, folder) of each run not finished yet; a finished one is checked, then skipped."""
    out = []
    for ov in run_overrides:
        cfg = compose_train(ov)
        schema.validate(cfg)  # bad input fails here, once, before anything trains
        folder = RunFolder.of(cfg)
        if folder.is_finished():
            folder.check_config(cfg, "a finished run")
            folder.check_steps()
            print(f"skipping finished run {folder.path}", flush=True)
            continue
        out.append((ov, folder))
    return out


def visible_gpus() -> list[str]:
    """The GPUs workers may use: CUDA_VISIBLE_DEVICES when set (ids or UUIDs; empty: none), else every
    device torch counts (without creating a CUDA context in this process)."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def place(jobs: int | None, gpus: list[str], jobs_per_gpu: int | None = None) -> list[str | None]:
    """The GPU of each worker slot: slot i on gpus[i % len(gpus)] (round robin, so the GPUs differ by at most
    one worker); [None] * jobs without GPUs. jobs=None: one slot per GPU, or jobs_per_gpu per GPU."""
    if jobs_per_gpu is not None and jobs_per_gpu < 1:
        raise ValueError(f"jobs_per_gpu={jobs_per_gpu}: must be >= 1")
    if jobs is None:
        jobs = len(gpus) * (jobs_per_gpu or 1) if gpus else 1
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: must be >= 1")
    if not gpus:
        return [None] * jobs
    if jobs_per_gpu is not None and jobs > len(gpus) * jobs_per_gpu:
        raise ValueError(f"jobs={jobs}: more than jobs_per_gpu={jobs_per_gpu} x {len(gpus)} visible GPUs "
                         f"({','.join(gpus)}); lower jobs or raise jobs_per_gpu")
    return [gpus[i % len(gpus)] for i in range(jobs)]


def worker_envs(slots: list[str | None], base: dict | None = None) -> list[dict]:
    """The environment of each worker slot: pinned to its GPU, and told how many runs share its device."""
    base = dict(os.environ if base is None else base)
    envs = []
    for gpu in slots:
        if gpu is None:  # no GPUs: every worker shares the machine, as before
            envs.append({**base, ENV_CONCURRENT: str(len(slots))})
        else:
            k = slots.count(gpu)
            envs.append({**base, "CUDA_VISIBLE_DEVICES": gpu, ENV_GPU: gpu, ENV_RUNS_ON_GPU: str(k),
                         ENV_CONCURRENT: str(k)})
    return envs


def ensure(run_overrides: list[list[str]], jobs: int | None = 1, jobs_per_gpu: int | None = None,
           deadline: float | None = None, estimate: Callable[[list[str]], float | None] | None = None
           ) -> list[RunFolder]:
    """Train every unfinished run, at most `jobs` at a time (None: one per visible GPU, or jobs_per_gpu per
    GPU), spread over the visible GPUs. With workers, all runs are attempted; if any fails, one error lists
    them with the end of their logs. With a deadline (a time.monotonic()), a run whose turn comes is started
    only if `estimate(its overrides)` seconds (None: unknown, it starts) end before the deadline, so a GPU
    lease's hard limit does not kill it midway: estimated when its slot frees, from the runs finished by then
    (one estimate at a time, from the worker threads: it must not compose configs). Returns the runs not
    started."""
    slots = place(jobs, visible_gpus(), jobs_per_gpu)
    todo = pending(run_overrides)
    # runs over several GPUs (DDP: it starts its other ranks itself); only GPU slots need to know (composed)
    multi = [] if slots[0] is None else [folder.path.name for ov, folder in todo
                                         if compose_train(ov).trainer.devices != 1]
    # One slot: in this process on CPU, or for such runs. One GPU's runs go to a worker each, one after another,
    # as `sessa-bench train` runs: a CUDA error ends the process that hits it, and one run in a process after
    # others on the GPU is not what a run alone sees (lease 16: the bench's sixth run in one process hit an
    # illegal memory access that no run alone did).
    in_process = len(slots) == 1 and (slots[0] is None or bool(multi))
    # No more workers than runs: a slot without a run would idle, and each run records how many shared its
    # GPU (the tables' device-hours divide by it): 4 runs in 7 slots share it 4 ways, not 7.
    slots = slots[:max(len(todo), 1)]
    one_at_a_time = threading.Lock()

    def fits(ov: list[str], folder: RunFolder, say: bool = True) -> bool:
        if deadline is None:
            return True
        with one_at_a_time:
            est = estimate(ov) if estimate is not None else None
        left = deadline - time.monotonic()
        if left > 0 and (est is None or est <= left):
            return True
        if say:
            print(f"not started {folder.path} (time limit: {'?' if est is None else f'~{est:.0f}'} s estimated, "
                  f"{max(left, 0):.0f} s left)\n", end="", flush=True)
        return False

    if in_process:  # one at a time, in this process
        from sessa_bench.train import run  # heavy import (Lightning) only when training
        skipped = []
        for ov, folder in todo:
            if fits(ov, folder):
                run(compose_train(ov))
            else:
                skipped.append(folder)
        return skipped
    if multi:  # several slots, pinned to one GPU each
        raise ValueError(f"runs {multi[:3]} use several devices (trainer.devices != 1), but workers are pinned to "
                         f"one GPU each; train them with jobs=1")
    # The data of the runs that can start now only: six Diffuse MQAR tasks took ~150 s of a lease that then
    # started nothing (results/bench/h200x2-run4-session.log), and ~180 s of the next one's last 462 s
    # (h200x2-run5-session.log). A run that fits only later builds its own data when it starts.
    startable = [ov for ov, folder in todo if fits(ov, folder, say=False)]
    if not startable:
        return [folder for ov, folder in todo if not fits(ov, folder)]
    build_data(startable)
    free: queue.Queue = queue.Queue()
    for slot in zip(slots, worker_envs(slots)):
        free.put(slot)

    def train(p):
        gpu, env = free.get()  # never waits: at most len(slots) runs are in flight
        try:
            return _train_in_worker(*p, env, gpu) if fits(*p) else (p[1], None, None)  # rc None: not started
        finally:
            free.put((gpu, env))

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        results = list(pool.map(train, todo))
    failed = [(folder, rc, log) for folder, rc, log in results if rc not in (0, None)]
    if failed:
        tails = "\n".join(f"--- {folder.path} (exit {rc}, log {log}):\n"
                          + "\n".join(log.read_text().splitlines()[-15:]) for folder, rc, log in failed)
        raise RuntimeError(f"{len(failed)} of {len(todo)} runs failed:\n{tails}")
    return [folder for folder, rc, _ in results if rc is None]


def build_data(run_overrides: list[list[str]]) -> None:
    """Build every split of each distinct task once, before the workers start, so they load it from the
    task cache instead of each generating the same data at the same time. A generator runs on one core,
    so distinct tasks (a sweep over task settings) are generated side by side, each in its own process."""
    tasks = {}
    for ov in run_overrides:
        tasks.setdefault(OmegaConf.to_yaml(compose_train(ov).task), ov)
    builds = list(tasks.values())
    if len(builds) == 1:
        _build_splits(builds[0])
    elif builds:
        with ThreadPoolExecutor(min(len(builds), os.cpu_count() or 1)) as pool:
            list(pool.map(_build_in_subprocess, builds))


def _build_splits(overrides: list[str]) -> None:
    from sessa_bench.train import build_task

    task = build_task(compose_train(overrides))
    for split in ("train", "val", "test"):
        task.dataset(split)


def _build_in_subprocess(overrides: list[str]) -> None:
    r = subprocess.run([sys.executable, "-m", "sessa_bench.runs", "--build-data", *overrides],
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"building the data of {overrides} failed:\n{r.stderr[-3000:]}")


def _train_in_worker(ov: list[str], folder: RunFolder, env: dict, gpu: str | None = None
                     ) -> tuple[RunFolder, int, Path]:
    log = folder.path.parent / "logs" / f"{folder.path.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    # one write per line: the workers' threads print at the same time
    print(f"start  {folder.path}{'' if gpu is None else f' on GPU {gpu}'} (log {log})\n", end="", flush=True)
    with open(log, "a") as f:
        rc = subprocess.run([sys.executable, "-m", "sessa_bench.train", *ov], stdout=f,
                            stderr=subprocess.STDOUT, env=env).returncode
    print(f"{'done ' if rc == 0 else 'FAILED'} {folder.path} in {time.time() - t0:.0f} s (exit {rc})\n", end="",
          flush=True)
    return folder, rc, log


def expand(overrides: list[str]) -> list[list[str]]:
    """The runs of a sweep written as on the command line of a Hydra multirun (`model=a,b seed=range(2)`):
    one override list per element of the product of the sweeps, in Hydra's order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override():
            key = o.get_key_element()
            choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    return [list(run) for run in itertools.product(*choices)]


def main(argv=None) -> None:
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--build-data"]:
        return _build_splits(argv[1:])
    ap = argparse.ArgumentParser(description="train the runs of a sweep (Hydra multirun syntax), spread over "
                                             "the visible GPUs; finished runs are skipped")
    ap.add_argument("--jobs", type=int, default=None, help="runs at once (default 1, or K per GPU with "
                                                            "--jobs-per-gpu K)")
    ap.add_argument("--jobs-per-gpu", type=int, default=None, help="at most this many runs per GPU")
    args, overrides = ap.parse_known_args(argv)
    if bad := [o for o in overrides if o.startswith("-")]:
        ap.error(f"unknown option(s) {bad}")
    jobs = args.jobs if args.jobs is not None else (None if args.jobs_per_gpu else 1)
    ensure(expand(overrides), jobs, args.jobs_per_gpu)


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    with user_errors("python -m sessa_bench.runs"):
        main()
