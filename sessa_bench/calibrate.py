"""Calibration sweep of the Diffuse MQAR defaults (conf/calibrate/<sweep>.yaml): ensure the candidate runs,
then write the calibration table from their run folders.

    python -m sessa_bench.calibrate [--sweep diffuse_mqar] [--run [--jobs N] [--jobs-per-gpu K] [--time-limit S]]
                                    [--candidates c0 c3 ...] [--results-dir DIR] [--out FILE] [hydra overrides...]

Each candidate is a few `task.*` overrides on top of the sweep's base (Table 1's Diffuse MQAR experiment with
the Transformer, seed 0). A sweep with `lrs` trains every candidate at every rate (runs <candidate>-lr<rate>)
and shows each candidate at the rate with the best validation accuracy, and which candidates land in its
`target` band of test accuracy; without `lrs` (diffuse_mqar_first) a run is named after its candidate. With
--run the missing runs are trained first (--jobs N: N at once, spread over the visible GPUs, at most K per GPU
with --jobs-per-gpu K; --time-limit S: a run starts only if its estimate, from the sweep's runs finished by
then, ends within S seconds of the command's start, so a lease's hard limit cuts no run midway; the table is
written once every run has finished).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from omegaconf import OmegaConf

from sessa_bench.compose import available, compose_file, compose_train
from sessa_bench.files import atomic_write_text
from sessa_bench.report.calibration import render, row
from sessa_bench.report.collect import collect
from sessa_bench.report.protocol import planned_execution, select_lr
from sessa_bench.report.timing import SAFETY, run_seconds

SWEEPS = available("calibrate")


def load(sweep: str) -> dict:
    if sweep not in SWEEPS:
        raise ValueError(f"sweep={sweep!r}: must be one of {SWEEPS} (conf/calibrate/)")
    return OmegaConf.to_container(compose_file(f"calibrate/{sweep}"))


def runs_of(sweep: dict, name: str, extra: list[str], lrs: list[float] | None = None) -> dict[str, list[str]]:
    """Run name -> overrides, for one candidate (one run per rate of `lrs`, default the sweep's `lrs`, if any)."""
    if name not in sweep["candidates"]:
        raise ValueError(f"candidate={name!r}: must be one of {sorted(sweep['candidates'])}")
    common = [*sweep["base"], f"experiment_name={sweep['experiment_name']}", *sweep["candidates"][name]]
    if not sweep.get("lrs"):
        return {name: [*common, f"run_name={name}", *extra]}
    return {f"{name}-lr{lr}": [*common, f"optim.lr={lr}", f"run_name={name}-lr{lr}", *extra]
            for lr in (sweep["lrs"] if lrs is None else lrs)}


def plan_of(sweep: dict, name: str, extra: list[str], found: dict[str, dict]):
    """(chosen run name or None, the runs of the rates tried, the runs still to train) of one candidate, given
    the finished runs `found` (run name -> summary). A grid's rate is chosen on val/acc as the paper tables
    choose theirs (report.protocol.select_lr): a best rate at an edge of the grid adds the next rate past it
    (x3 or /3, at most twice), so the candidate's row is not an edge of the grid's making."""
    if not sweep.get("lrs"):
        runs = runs_of(sweep, name, extra)
        return None, runs, {n: ov for n, ov in runs.items() if n not in found}
    scores: dict[float, float | None] = {}
    while True:
        chosen, tried, missing = select_lr(sweep["lrs"], scores, "max")
        new = [x for x in missing if f"{name}-lr{x}" in found]
        for x in new:
            scores[x] = found[f"{name}-lr{x}"]["final"].get("val/acc")
        if not new:
            return (None if chosen is None else f"{name}-lr{chosen}", runs_of(sweep, name, extra, tried),
                    runs_of(sweep, name, extra, missing))


def estimator(results_dir: Path, experiment: str, runs_per_gpu: int | None, runs: dict[str, list[str]]):
    """Seconds to train one of `runs` (name -> overrides), x SAFETY: its steps at the pace of the finished runs
    of its own candidate (the same task shapes; `timing.pace`: its longest process, trained as this run will
    be, eager or in CUDA graphs, where there is one), else the slowest of the sweep's; scaled to the runs
    sharing each GPU; read when asked, so a second wave is timed by the first. The slowest pace of the whole
    sweep (c0, eager, 640 tokens) timed c4's and c5's graphed 192-320-token runs at 372 s where they took
    85-106 s, so a lease's last 462 s started none of them (results/bench/h200x2-run5-session.log). Steps
    and execution are composed here, once: ensure asks from its worker threads, where Hydra cannot compose."""
    def facts(ov: list[str]) -> tuple[int, str]:
        cfg = compose_train(ov)
        return cfg.trainer.max_steps, planned_execution(OmegaConf.to_container(cfg, resolve=True))

    known = {tuple(ov): (name.rsplit("-lr", 1)[0], *facts(ov)) for name, ov in runs.items()}

    def estimate(overrides: list[str]) -> float | None:
        candidate, steps, how = known[tuple(overrides)]
        finished = collect(results_dir, experiment)
        own = [s for s in finished if str(s.get("run_name", "")).rsplit("-lr", 1)[0] == candidate]
        sec = run_seconds(steps, cell=own, experiment=finished, runs_per_gpu=runs_per_gpu, how=how)
        return None if sec is None else sec * SAFETY
    return estimate


def build(candidates: list[str] | None, overrides: list[str], run: bool = False, jobs: int | None = 1,
          out: str | Path | None = None, jobs_per_gpu: int | None = None, sweep: str = "diffuse_mqar",
          time_limit: float | None = None, started: float | None = None) -> str:
    """Train the missing runs (run=True; with time_limit, seconds from `started`, a time.monotonic(), default
    now: no run starts that its estimate says would end later), then write the table and return it; when the
    time limit left runs unstarted, return a line saying so instead (the table needs every run)."""
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit={time_limit:g} (--time-limit): must be > 0 (seconds from the start of "
                         f"the command)")
    spec = load(sweep)
    candidates = list(spec["candidates"]) if candidates is None else candidates
    results_dir = Path(compose_train(next(iter(runs_of(spec, candidates[0], overrides).values()))).results_dir)
    clock = None
    while True:  # train what the grids still need; a finished run can grow its candidate's grid
        found = {s["run_name"]: s for s in collect(results_dir, spec["experiment_name"])}
        plans = {c: plan_of(spec, c, overrides, found) for c in candidates}
        todo = {n: ov for _, _, missing in plans.values() for n, ov in missing.items()}
        if not todo or not run:
            break
        from sessa_bench.runs import ensure
        from sessa_bench.tables import Clock

        deadline = estimate = None
        if time_limit is not None:
            clock = clock or Clock(time_limit, started, jobs, jobs_per_gpu)  # jobs < 1 is an error there
            deadline = clock.end
            estimate = estimator(results_dir, spec["experiment_name"], clock.runs_per_gpu(clock.slots), todo)
        skipped = ensure(list(todo.values()), jobs, jobs_per_gpu, deadline, estimate)
        if skipped:
            return (f"time limit: {len(skipped)} of the {len(todo)} calibration runs left were not started "
                    f"({', '.join(f.path.name for f in skipped)}); rerun to train them, then the table is "
                    f"written")
    finished = {c: [n for n in runs if n in found] for c, (_, runs, _) in plans.items()}
    if todo and not all(finished.values()):
        raise FileNotFoundError(f"no finished calibration run for {sorted(todo)} under "
                                f"{results_dir / spec['experiment_name']}; add --run to train them")
    rows = []
    for c, (chosen, _, _) in plans.items():
        if chosen is None and len(finished[c]) > 1:  # grid still growing: the best so far, marked as such
            chosen = max(sorted(finished[c], key=lambda n: found[n]["optim"]["lr"]),
                         key=lambda n: found[n]["final"].get("val/acc") or -1.0)
        rows += [row(c, spec["candidates"][c], found[n], chosen=n == chosen) for n in finished[c]]
    md = render(rows, spec.get("target"), pending=sorted(todo))
    atomic_write_text(Path(out or spec["out"]), md)
    return md


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Diffuse MQAR calibration sweep (Transformer, small budget)")
    ap.add_argument("--sweep", default="diffuse_mqar", choices=SWEEPS,
                    help="conf/calibrate/<sweep>.yaml (default: diffuse_mqar, the learning-rate grid)")
    ap.add_argument("--run", action="store_true", help="train the missing candidate runs first")
    ap.add_argument("--jobs", type=int, default=None, help="with --run: runs trained at once (default 1, or K "
                                                           "per visible GPU with --jobs-per-gpu K)")
    ap.add_argument("--jobs-per-gpu", type=int, default=None, help="with --run: at most this many runs per GPU")
    ap.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                    help="with --run: start no run whose estimated time (from the sweep's finished runs) does "
                         "not fit in the SECONDS since this command started")
    ap.add_argument("--candidates", nargs="+", default=None, help="default: all of the sweep's")
    ap.add_argument("--results-dir", help="where the run folders are (default: the config's results_dir)")
    ap.add_argument("--out", help="the table (default: the sweep's `out`)")
    started = time.monotonic()  # what --time-limit counts from
    args, overrides = ap.parse_known_args(argv)
    if bad := [o for o in overrides if o.startswith("-")]:
        ap.error(f"unknown option(s) {bad}")
    if args.results_dir:
        overrides = [f"results_dir={args.results_dir}", *overrides]
    jobs = args.jobs if args.jobs is not None else (None if args.jobs_per_gpu else 1)
    print(build(args.candidates, overrides, args.run, jobs, args.out, args.jobs_per_gpu, args.sweep,
                args.time_limit, started))


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    with user_errors("python -m sessa_bench.calibrate"):
        main()
