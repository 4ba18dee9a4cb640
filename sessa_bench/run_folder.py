"""The run-folder contract: results/runs/<experiment>/<run_name>/ holds

    config.yaml     the resolved config
    metrics.jsonl   one JSON line per logged step
    summary.json    final metrics, the task's facts, parameter counts, throughput, hardware, git commit,
                    backends: everything a report needs, so reports read nothing else
    checkpoints/last.ckpt
    checkpoints/best.ckpt  the best-validation weights, where the config keeps them (callbacks.best): then
                    the model the run reports (summary.json's test_from), and the one probed and evaluated
    .lock           held (fcntl.flock) by the process running the run, so a second process with the same
                    run name stops instead of duplicating every metrics line; the OS releases the lock of a
                    process that dies, so a stale lock never blocks a rerun

metrics.interrupted.jsonl  the lines of an extension killed before it finished, where restore_previous put the
                    shorter finished run back (read by no report)

summary.json is written last and atomically: a folder without it is an unfinished run (resumable), a folder
with it is finished and a rerun skips it, provided the rerun asks for the same config (else it is an error
that lists the differences, so a result is never silently reused for another config). One change is
accepted: more `trainer.max_steps` under `optim.schedule=constant` (whose rate does not depend on the step
count) extends the run: `reopen` drops the summary and the final evaluation's metrics lines, and the run
resumes from checkpoints/last.ckpt (saved at the last step) as if it had been started with the larger count.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import platform
import subprocess
from pathlib import Path

import torch
from omegaconf import OmegaConf

from sessa_bench.files import atomic_write_text  # noqa: F401 (re-exported: the one atomic text write)
from sessa_bench.files import keep_csv_rows_before
from sessa_bench.report.timing import startup_seconds, trained_in_last_process

# Keys that may differ between a run and its rerun without changing what the run computes.
# The number of processes is one of them: data.batch_size is the global batch, split across the processes.
RUN_INDEPENDENT = ("resume", "debug", "trainer.enable_progress_bar", "logger", "results_dir", "run_dir", "sweep",
                   "probe", "compile",  # compiled == eager in tolerance: sessa_bench/compile_check.py, every run
                   "cuda_graphs",  # eager's kernels replayed, first batch checked too: sessa_bench/cuda_graphs.py
                   "trainer.devices", "trainer.num_nodes", "trainer.strategy")
# Keys an extension (more steps) may change besides trainer.max_steps: when checkpoints are written, and
# whether the best-validation weights are kept (callbacks.best, which needs trainer.enable_checkpointing): the
# training is the same, only the model evaluated at its end differs. A run kept without it reports its last
# model (summary.json's test_from), which the tables' protocol does not count as converged where the config
# asks for the best; its extension trains from step 0 (sessa_bench.train: the checkpoint holds no best).
EXTENSION_FREE = ("callbacks.checkpoint.every_n_steps", "callbacks.best", "trainer.enable_checkpointing")
# Keys added to the config after runs were made, with the value that every run made before implicitly used: an
# older config.yaml without the key is the same run as a new one holding that value.
IMPLICIT = {"model.embed_std": 0.02}
# How many runs shared the machine, and which GPU a worker was pinned to and how many workers shared that GPU
# (set by sessa_bench.runs for its workers; recorded in summary.json).
ENV_CONCURRENT = "SESSA_BENCH_CONCURRENT_RUNS"
ENV_GPU = "SESSA_BENCH_GPU"
ENV_RUNS_ON_GPU = "SESSA_BENCH_RUNS_ON_GPU"
ENV_BESIDE = "SESSA_BENCH_BESIDE_PER_GPU"  # other training processes on each GPU (tables --beside)

log = logging.getLogger("sessa_bench")


class RunInUse(RuntimeError):
    """Another live process holds this run folder's lock."""


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.jsonl"
        self.summary = self.path / "summary.json"
        self.previous = self.path / "summary.prev.json"  # the summary of a run before its extension
        # The training lines of every earlier training of a run retrained from step 0 to be extended (its
        # checkpoint stayed on another machine), each line tagged with its training's step count: what its
        # sweep score was read from (sessa_bench/report/protocol.py).
        self.metrics_prev = self.path / "metrics.prev.jsonl"
        self.checkpoint = self.path / "checkpoints" / "last.ckpt"
        self.best_checkpoint = self.path / "checkpoints" / "best.ckpt"  # callbacks.best's (sessa_bench.train)
        self.probe = self.path / "probe.json"  # the memory-tail probe of the trained model (sessa_bench/probe.py)
        self.probe_prev = self.path / "probe.prev.json"  # the probe of the model before an extension
        # The lines an extension logged before it was killed, once restore_previous() has put the finished
        # shorter run back: kept as evidence of what the longer training did, read by no report.
        self.metrics_interrupted = self.path / "metrics.interrupted.jsonl"
        self.lockfile = self.path / ".lock"
        self._lock_fd: int | None = None

    @classmethod
    def of(cls, cfg) -> "RunFolder":
        """The folder of a composed run config."""
        return cls(Path(cfg.results_dir) / cfg.experiment_name / cfg.run_name)

    def read_checkpoint(self, path: Path | None = None) -> dict:
        """The checkpoint's content (default last.ckpt), loaded as plain data only (weights_only=True): a file
        that would run code when unpickled, or any unreadable file, is a one-line error and nothing of it is
        executed."""
        path = path or self.checkpoint
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise RuntimeError(f"checkpoint {path} is corrupt, unreadable or not plain data "
                               f"({type(e).__name__}: {first}); delete it to restart this run from scratch, "
                               f"or pass resume=false") from None

    def is_finished(self) -> bool:
        try:
            return "final" in json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return False

    def read_summary(self) -> dict:
        """summary.json; one written before runs recorded `startup_seconds` (2026-11-30) gets it derived from
        metrics.jsonl here, as the run would have recorded it (`timing.startup_seconds`)."""
        summary = json.loads(self.summary.read_text())
        if "startup_seconds" not in summary:
            summary["startup_seconds"] = self.startup_seconds(summary)
        return summary

    def startup_seconds(self, summary: dict, fit: list[dict] | None = None) -> float:
        """The start-up of the run's last training process, from its training's metrics lines (`fit`, default
        the first fit_metrics_lines of metrics.jsonl) and `summary`'s wall time."""
        wall = summary.get("wall_seconds_this_process", summary.get("wall_seconds_total"))
        if wall is None:
            return 0.0
        if fit is None:
            fit = self.fit_metrics(summary)
        return startup_seconds(fit, float(wall), trained_in_last_process(summary),
                               summary.get("resumed_from_step"))

    def fit_metrics(self, summary: dict | None = None) -> list[dict]:
        """The metrics lines its training logged: the first fit_metrics_lines of metrics.jsonl. The lines after
        them are the final evaluation (of the best checkpoint, where one is kept, logged at the last step), not
        part of a training curve. All lines for a run without a summary (still training) or the count."""
        if summary is None:
            summary = json.loads(self.summary.read_text()) if self.summary.exists() else {}
        return self.read_metrics()[:summary.get("fit_metrics_lines")]

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.summary, json.dumps(summary, indent=2, sort_keys=True, default=str))

    def append_metrics(self, row: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with self.metrics.open("a") as f:
            f.write(json.dumps(row, default=float) + "\n")

    def truncate_metrics(self, before_step: int) -> None:
        """On resume from a checkpoint at step S, keep the lines logged before step S: Lightning logs the
        batch after the checkpoint at step S, so lines at S and later are redone by the resumed run."""
        if not self.metrics.exists():
            return
        keep = [row for row in self.read_metrics() if row.get("step", 0) < before_step]
        atomic_write_text(self.metrics, "".join(json.dumps(row) + "\n" for row in keep))

    def read_metrics(self, path: Path | None = None) -> list[dict]:
        """The logged rows (of metrics.jsonl, or of `path`: metrics_prev). A torn last line (a crash
        mid-append) is dropped with one log line; a corrupt line anywhere else is an error naming the file
        and the line."""
        path = path or self.metrics
        if not path.exists():
            return []
        lines = path.read_text().splitlines()
        rows = []
        for i, ln in enumerate(lines, 1):
            if not ln.strip():
                continue
            try:
                rows.append(json.loads(ln))
            except ValueError:
                if i == len(lines):
                    log.warning("%s: dropped a half-written last line (line %d; the process was killed "
                                "mid-write)", path, i)
                    continue
                raise ValueError(f"{path} line {i} is not JSON ({ln[:60]!r}); fix or delete that "
                                 f"line, or delete the run folder to start over") from None
        return rows

    def lock(self) -> None:
        """Take the run folder's exclusive lock for this process (released by unlock() or by the OS when
        the process ends, however it ends); a second process gets RunInUse."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunInUse(f"run folder {self.path} is in use by another process (pid {holder}); wait for it "
                           f"to finish, or choose another experiment_name or run_name") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def check_steps(self, summary: dict | None = None, config: dict | None = None) -> None:
        """Raise if this finished run's summary.json has fewer steps than its config.yaml asks for: a folder
        restored by an older restore_previous() (it kept the killed extension's trainer.max_steps), which
        `runs` would skip as that extension finished while `tables` plans to extend it. summary, config: the
        two files' contents where the caller has read them already."""
        if summary is None or config is None:
            if not (self.is_finished() and self.config.exists()):
                return
            summary = self.read_summary() if summary is None else summary
            config = OmegaConf.to_container(OmegaConf.load(self.config)) if config is None else config
        steps, asked = summary.get("steps"), (config.get("trainer") or {}).get("max_steps")
        if isinstance(steps, int) and isinstance(asked, int) and steps < asked:
            raise ValueError(f"run folder {self.path} finished at {steps} steps but its config.yaml says "
                             f"trainer.max_steps={asked}; set it to {steps} there (the finished run's) and rerun")

    def check_config(self, cfg, what: str) -> None:
        """Raise if this folder already holds `what` (a finished or unfinished run) of another config; an
        extension (see the module docstring) is not another config."""
        if not self.config.exists():
            return
        old, new = OmegaConf.to_container(OmegaConf.load(self.config)), resolved_config(cfg)
        changed = config_changes(old, new)
        if changed and extension_of(old, new) is None:
            hint = ("; a run can be extended to more trainer.max_steps only under optim.schedule=constant"
                    if any(c.startswith("trainer.max_steps:") for c in changed) else "")
            raise ValueError(f"run folder {self.path} holds {what} with a different config "
                             f"({', '.join(changed[:8])}){hint}; choose another experiment_name or run_name, "
                             f"or delete the folder to start over")

    def reopen(self, cfg) -> bool:
        """If this finished run is extended by `cfg` (more steps, same config otherwise), make it an
        unfinished run again: drop the metrics lines of its final evaluation, move its probe.json aside (as
        probe.prev.json: it measured the shorter run's model), then its summary.json (in this order, so a
        crash in between leaves a finished run that reopens the same way), kept as summary.prev.json for the
        time it spent. True when reopened."""
        if not self.is_finished() or not self.config.exists():
            return False
        self.check_config(cfg, "a finished run")
        if not extension_of(OmegaConf.to_container(OmegaConf.load(self.config)), resolved_config(cfg)):
            return False
        n = self.read_summary().get("fit_metrics_lines")
        if n is None:
            raise ValueError(f"run folder {self.path} predates extensions (its summary.json has no "
                             f"fit_metrics_lines); delete the folder to retrain it with more steps")
        lines = [ln for ln in self.metrics.read_text().splitlines() if ln.strip()][:n]
        atomic_write_text(self.metrics, "".join(ln + "\n" for ln in lines))
        if self.probe.exists():
            os.replace(self.probe, self.probe_prev)
        os.replace(self.summary, self.previous)
        return True

    def restore_previous(self) -> int:
        """Undo reopen() of an extension that was killed before it finished (a lease's time limit; its
        checkpoint stays on that machine): the finished shorter run comes back as it was reported, its
        summary.json, its training lines and its step count in config.yaml, and the killed extension's lines
        move to metrics.interrupted.jsonl. Only for an extension that resumed from its checkpoint (metrics.jsonl
        continues the shorter run's lines); one that retrained from step 0 is refused. Returns the restored
        run's step count."""
        if self.is_finished() or not self.previous.exists():
            raise ValueError(f"run folder {self.path} is not an interrupted extension (it needs "
                             f"{self.previous.name} and no {self.summary.name})")
        if self.metrics_prev.exists():
            raise ValueError(f"run folder {self.path} was retrained from step 0 for its extension; its shorter "
                             f"run's lines are in {self.metrics_prev.name}, not restorable here")
        prev = json.loads(self.previous.read_text())
        n, steps = prev.get("fit_metrics_lines"), int(prev["steps"])
        lines = [ln for ln in self.metrics.read_text().splitlines() if ln.strip()] if self.metrics.exists() else []
        if n is None or len(lines) < n or last_step([json.loads(ln) for ln in lines[:n]]) != steps - 1:
            raise ValueError(f"run folder {self.path}: metrics.jsonl does not begin with the {steps}-step run's "
                             f"{n} training lines; not restorable")
        atomic_write_text(self.metrics_interrupted, "".join(ln + "\n" for ln in lines[n:]))
        atomic_write_text(self.metrics, "".join(ln + "\n" for ln in lines[:n]))
        for log in self.path.glob("csv/metrics.csv"):  # Lightning's CSV log: the same cut
            keep_csv_rows_before(log, steps)
        if self.config.exists():  # the extension wrote its own step count there; a config saying more steps
            cfg = OmegaConf.load(self.config)  # than the summary made the same extension look finished
            cfg.trainer.max_steps = steps
            atomic_write_text(self.config, OmegaConf.to_yaml(cfg))
        if self.probe_prev.exists():
            os.replace(self.probe_prev, self.probe)
        os.replace(self.previous, self.summary)  # last: the folder is finished again only once all is back
        return steps

    def keep_training(self) -> None:
        """Before an extension retrains from step 0: keep the finished shorter training's lines (metrics.jsonl,
        as reopen() left them) in metrics.prev.jsonl, after those of earlier trainings, each tagged with
        `training_steps`, then drop metrics.jsonl. A retrain killed before its first checkpoint and started
        again finds that training kept already (a kept training reached its step count; every earlier one is
        at most half as long), so only the killed retrain's partial lines go."""
        steps = int(json.loads(self.previous.read_text())["steps"])
        if self.metrics.exists() and not any(last_step(rows) >= steps - 1 for rows in self.earlier_trainings()):
            old = self.metrics_prev.read_text() if self.metrics_prev.exists() else ""
            new = "".join(json.dumps({**row, "training_steps": steps}) + "\n" for row in self.read_metrics())
            atomic_write_text(self.metrics_prev, old + new)
        self.metrics.unlink(missing_ok=True)

    def earlier_trainings(self) -> list[list[dict]]:
        """The lines of each earlier training (metrics.prev.jsonl), shortest first. Lines without
        `training_steps` (folders written before it was recorded) are the first training."""
        groups: dict = {}
        for row in self.read_metrics(self.metrics_prev):
            groups.setdefault(row.get("training_steps"), []).append(row)
        return [groups[k] for k in sorted(groups, key=lambda k: -1 if k is None else k)]

    def reported(self) -> tuple[Path, str, int | None]:
        """(checkpoint, which, step) of the model this finished run reports: its best-validation weights
        (best.ckpt, summary.json's test_from == best) where it kept them, else its last ones (last.ckpt)."""
        summary = self.read_summary() if self.summary.exists() else {}
        if summary.get("test_from") == "best":
            return self.best_checkpoint, "best", summary.get("best_step")
        return self.checkpoint, "last", summary.get("steps")

    def probe_current(self) -> bool:
        """probe.json exists and measured the model this finished run reports: the step count it records
        equals the summary's (a probe written before an extension, by code that did not move it aside, does
        not), and so does the checkpoint (a probe without one measured the last weights)."""
        try:
            probed = json.loads(self.probe.read_text()).get("run", {})
            return (probed.get("steps") == self.read_summary().get("steps")
                    and probed.get("checkpoint", "last") == self.reported()[1])
        except (OSError, ValueError, AttributeError):
            return False

    def wall_seconds_before(self) -> float:
        """Training time of the segments before an extension (0 for a run never extended)."""
        try:
            prev = json.loads(self.previous.read_text())
        except (OSError, ValueError):
            return 0.0
        return float(prev.get("wall_seconds_total", prev.get("wall_seconds_this_process") or 0.0))


def last_step(rows: list[dict]) -> int:
    """The last step logged in these lines; a training of S steps logs its last validation at step S - 1."""
    return max((int(r.get("step", 0)) for r in rows), default=-1)


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
        a, b = old.get(key, IMPLICIT.get(name)), new.get(key, IMPLICIT.get(name))
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, name + ".")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def extension_of(old: dict, new: dict) -> int | None:
    """The new step count when config `new` extends a run of config `old` (more trainer.max_steps, both
    under optim.schedule=constant, otherwise equal but for EXTENSION_FREE keys), 0 when nothing changed
    that matters, else None."""
    changed = [c.split(":")[0] for c in config_changes(old, new)]
    if not changed:
        return 0
    rest = [c for c in changed if c not in EXTENSION_FREE]  # callbacks.best as a whole: added or removed
    if rest != ["trainer.max_steps"]:
        return 0 if not rest else None
    a, b = old["trainer"]["max_steps"], new["trainer"]["max_steps"]
    constant = old.get("optim", {}).get("schedule") == new["optim"].get("schedule") == "constant"
    return b if constant and b > a else None


def concurrent_runs() -> int:
    return int(os.environ.get(ENV_CONCURRENT, "1"))


def mps_client() -> bool:
    """Whether this process's CUDA work goes through an MPS daemon (scripts/gpu_session.sh's MPS=1 gives the
    table step's processes its pipe folder): runs sharing a GPU then overlap their kernels."""
    return bool(os.environ.get("CUDA_MPS_PIPE_DIRECTORY"))


def beside_per_gpu() -> int:
    """Training processes outside the table's that share each GPU with its runs (`tables --beside K`, a
    lease's BESIDE work): they slow the runs, and the estimates count them."""
    return int(os.environ.get(ENV_BESIDE) or 0)


def placement() -> dict | None:
    """{"gpu": the GPU a runs.ensure worker was pinned to, "runs_on_gpu": how many workers shared it, "mps":
    whether they shared it through MPS, "beside": other processes said to share it}, or None for a run that
    was not placed (in process, on CPU, or started by hand)."""
    if ENV_GPU not in os.environ:
        return None
    gpu = os.environ[ENV_GPU]
    return {"gpu": int(gpu) if gpu.isdigit() else gpu, "runs_on_gpu": int(os.environ.get(ENV_RUNS_ON_GPU, "1")),
            "mps": mps_client(), "beside": beside_per_gpu()}


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
