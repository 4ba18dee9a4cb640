"""`make table1|table2|ablation|tables`: ensure the runs of a paper table, then write it from run folders.

    python -m sessa_bench.tables table1|table2|ablation|all [--run|--plan [--jobs N] [--jobs-per-gpu K]
                                 [--max-steps-cap S] [--time-limit SECONDS] [--experiments E ...]]
                                 [--seeds S ...] [--results-dir DIR] [--out-dir results] [hydra overrides...]

With --run, the table's protocol (`sessa_bench/report/protocol.py`) trains what is missing, every run through
`sessa_bench.runs.ensure` (in this process, or in N worker processes with --jobs N, spread round robin over
the visible GPUs, at most K per GPU with --jobs-per-gpu K; --jobs-per-gpu alone: K on every GPU):
1. the sweep: seed 0 of every family at every learning rate of the experiment's `sweep.lr` grid (run names
   carry the rate); the grid grows past an edge that wins (x3 or /3, at most twice), then each family's
   rate is the one with the best validation metric (a best-so-far rate at an edge gets its extension in the
   same round as the rates still missing: `early` in the plan);
2. the other seeds at the chosen rate (seed 0 is the sweep's run; the seeds are --seeds, else the
   experiment's `sweep.seeds`, else 0 and 1);
3. convergence: while a family's runs at the chosen rate have not converged, all of them are extended to
   twice their steps (resumed from their last checkpoint; constant schedule), up to the experiment's
   `sweep.max_steps_cap` (absent: 4x its trainer.max_steps; --max-steps-cap S overrides every experiment's;
   a cap between two doublings is the last extension's length, so a lease that fits 3000 steps but not 4000
   can reach 3000).
Each family of each experiment (a cell) takes these steps on its own, since its rate depends on its own sweep
only; they train in rounds (a round: every cell's next runs, side by side), so one cell's seeds train beside
another's last sweep run. With --time-limit SECONDS
(counted from the command's start) no run starts whose estimated time (`sessa_bench/report/timing.py`,
from the run folders' summaries) exceeds the time left: a round that does not fit starts the part of it
that fits and keeps the workers busiest (`Clock.fit`; the rest is the next round of a rerun), and when no part fits
the protocol stops there, with one line saying so, before any folder of that round is reopened for an
extension, since a run killed midway (a GPU lease's hard limit) would leave its folder unfinished and lose
its shorter result; a later wave of a round that had no timing when it started is timed by its first wave
(sessa_bench.runs.ensure's deadline). Every step reads its state from the run folders, so a rerun (or a
rerun after a kill or a time-limit stop) continues where the last one stopped. Then results/<table>.md and
.csv and the plots are written from the run folders alone (`sessa_bench.report.paper`); without --run
nothing trains. --plan (instead of --run) prints the round that
--run would start next, each run with what it trains and its estimate, and whether the round fits
--time-limit, then stops: nothing trains and no file changes (`CUDA_VISIBLE_DEVICES=0` plans a lease of one
GPU on a machine without one; the round after it depends on this one's results, so it is not shown).

Overrides apply to every experiment of the table; `<experiment>:<override>` applies to one only, e.g.
`table1_diffuse_mqar:task.train_lag=[8,31]` (SymbolSoup has no such key), and `<model>:<override>` to one
family only, e.g. `mamba2:compile=false` (execution settings; the protocol's knobs stay shared). Only
runs whose task, budget and seed match the composed config are tabulated, so `task=bible` (the offline
stand-in for SimpleStories) builds Table 2 from the *-bible-* runs, and the table says so.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from sessa_bench.compose import available, compose_train
from sessa_bench.report.paper import TABLES, Table, experiments, with_families, write
from sessa_bench.report.protocol import Cell, Run, cell
from sessa_bench.report.timing import SAFETY, round_seconds, run_seconds, stand_ins
from sessa_bench.run_folder import ENV_BESIDE, RunFolder, beside_per_gpu


def split_overrides(overrides: list[str], names: list[str]) -> dict[str, list[str]]:
    """Overrides per experiment: plain ones go to all, `<experiment>:<override>` to that one only; a
    family-scoped `[<experiment>:]<model>:<override>` stays scoped (protocol.cell applies it to that model)."""
    known, models = set(available("experiment")), set(available("model"))
    out: dict[str, list[str]] = {n: [] for n in names}
    for o in overrides:
        head, sep, rest = o.partition(":")
        if sep and "=" not in head and head not in models:  # a colon before any '=': a scoped override
            if head not in known:
                raise ValueError(f"override {o!r}: {head!r} is neither an experiment nor a model; scoped "
                                 f"overrides are written <experiment>:<override> or <model>:<override>, with "
                                 f"experiment one of {sorted(known)} and model one of {sorted(models)}")
            if head in out:  # scoped to an experiment of another table: not for this one
                out[head].append(rest)
        else:
            for n in names:
                out[n].append(o)
    return out


def protocol(table: Table, seeds: list[int] | None, scoped: dict[str, list[str]], jobs: int | None = 1,
             max_steps_cap: int | None = None, only: list[str] | None = None, time_limit: float | None = None,
             started: float | None = None, plan: bool = False, pace: dict[str, float] | None = None,
             safety: float = SAFETY, **kw) -> None:
    """Train the table's runs by the protocol (module docstring), for the experiments in `only` (default:
    all of the table's); `kw` goes on to sessa_bench.runs.ensure. With time_limit (seconds from `started`, a
    time.monotonic(); default now), a round whose estimated time does not fit in what is left starts only the
    part of it that does (`Clock.fit`), and when none does the protocol stops there. A run of a later wave
    that ensure then does not start (its first wave overran the estimate) stays reopened and unfinished, as
    after a kill at a lease's end: the estimate's margin makes that rare. plan: print the next round
    (`describe`) and stop before it, so nothing trains and no folder changes (what the round after it holds
    depends on this one's results)."""
    names = [e for e in experiments(table) if only is None or e in only]
    cells = [cell(e, f, scoped[e], table.curve_metric) for e in names for f in table.families]
    cells = list({(c.experiment, c.family): c for c in cells}.values())
    clock = None if time_limit is None and not plan else \
        Clock(math.inf if time_limit is None else time_limit, started, jobs, kw.get("jobs_per_gpu"), pace, safety)
    # Each cell (experiment x family) goes its own way: the sweep, round by round (a round's grid extensions
    # are known only once it has finished), then the seeds at its chosen rate and extensions until converged
    # or capped. A round holds every cell's next runs, so a cell whose rate is chosen trains its seeds while
    # another cell's sweep still runs (its choice depends on its own sweep only), instead of a lease's GPUs
    # waiting on one cell's last sweep run.
    def next_round() -> tuple[str, list[Todo]]:
        sweep = [t for c in cells for t in sweep_runs(c)]
        swept = {(t.cell.experiment, t.cell.family) for t in sweep}
        rest = [t for c in cells if (c.experiment, c.family) not in swept
                for t in seed_runs(c, c.seed_list(seeds), max_steps_cap)]
        return ", ".join(k for k, v in (("sweep", sweep), ("seeds and extensions", rest)) if v), sweep + rest

    last = None
    while True:
        step, todo = next_round()
        if not todo:
            break
        if plan:
            print(describe(step, todo, clock), flush=True)
            return
        if (this := sorted(t.run.folder.path.name + str(t.run.steps_requested) for t in todo)) == last:
            raise RuntimeError(f"the tables protocol asks for the same {len(todo)} runs again after training "
                               f"them ({', '.join(this[:3])}...): a bug, stopping instead of looping")
        last = this
        note = ""
        if clock:  # before any reopen: a stop loses nothing
            todo, note = clock.admit(todo)
            if not todo:
                return
        reopen(todo)
        print(f"{step}: {len(todo)} runs{note}", flush=True)
        from sessa_bench.runs import ensure  # the trainer is imported only when something trains
        if ensure([t.run.overrides for t in todo], jobs, **kw,
                  **({} if clock is None else {"deadline": clock.end, "estimate": clock.run_estimate(todo)})):
            return  # runs of a later wave did not start: the time is up (ensure said which)
    if plan:
        print("plan: nothing left to train (every cell is finished, converged or at its cap)", flush=True)


def describe(step: str, todo: list[Todo], clock: Clock) -> str:
    """The round `protocol` would start next: each run with what it trains and its estimated seconds at the
    round's GPU sharing (sessa_bench.report.timing), the round's estimate and whether it fits the clock."""
    todo = interleave(todo)
    secs, est = clock.estimate(todo)
    sharing, beside = clock.runs_per_gpu(len(todo)), beside_per_gpu()
    lines = [f"plan: the next round is the {step}, {len(todo)} runs, {clock.slots} at a time"
             + ("" if sharing is None else f", {sharing} sharing the busiest GPU")
             + (f" with {beside} more process{'es' if beside > 1 else ''} beside them" if beside and sharing else "")]
    if sharing is None:  # planning a GPU lease on a CPU machine printed one lease's worth of runs as fitting
        lines.append("  (no GPU visible: each run at the GPU sharing it was timed at; to plan a lease, give its GPUs "
                     "as CUDA_VISIBLE_DEVICES, and with MPS any CUDA_MPS_PIPE_DIRECTORY)")
    for t, sec in zip(todo, secs):
        if t.extends is None:
            what = f"{t.run.steps_requested} steps from step 0"
        else:
            what = (f"extend {t.extends.steps} -> {t.run.steps_requested} steps, "
                    + ("resumed from its checkpoint" if t.extends.folder.checkpoint.exists()
                       else "retrained from step 0 (no checkpoint)"))
        early = " (early: past the grid's edge, asked for unless a rate still missing wins)" if t.early else ""
        lines.append(f"  {t.run.folder.path.name}: {what}{early}; ~{'?' if sec is None else f'{sec:.0f}'} s")
    left = clock.end - time.monotonic()
    start, part_est = clock.fit(todo)
    verdict = ("no estimate yet (no finished run times this round), so every run starts; one still going at the "
               "limit is cut and not kept" if est is None and start else
               "fits" if len(start) == len(todo) else "does not fit, nor does any part of it" if not start else
               f"does not fit; {len(start)} of its runs do (~{part_est:.0f} s) and start, the rest waits: "
               + ", ".join(t.run.folder.path.name for t in todo if t not in start))
    lines.append(f"  round: ~{'?' if est is None else f'{est:.0f}'} s (x{clock.safety} safety included)"
                 + ("" if math.isinf(left) else f"; {max(left, 0):.0f} s of --time-limit left: {verdict}"))
    return "\n".join(lines)


def reopen(todo: list[Todo]) -> None:
    """Make the finished runs that a round extends unfinished again, so they train (ensure skips finished
    runs) and resume from their last step, or retrain from step 0 without a checkpoint."""
    for t in todo:
        if t.extends is not None:
            t.run.folder.reopen(compose_train(t.run.overrides))  # composed last: its ${hydra:...} are its own


@dataclass
class Todo:
    """A run of the next round, with what its time is estimated from."""
    cell: Cell
    run: Run                       # what trains: its overrides, folder and steps
    extends: Run | None = None     # the finished shorter run it continues (reopened when the round starts)
    peers: list[dict] = field(default_factory=list)  # summaries of the cell's finished runs at its rate
    early: bool = False            # a sweep rate past the grid's edge, trained before the rates still missing
    #                                have scored (Cell.ahead): the edge rule asks for it unless one of them wins


def shorter_run(r: Run) -> Run | None:
    """The finished shorter run that r's folder holds, for r to extend (None: nothing finished there). r has
    no summary of its own, so a finished folder means fewer steps than r asks for."""
    if not r.folder.is_finished():
        return None
    return Run(r.lr, r.seed, r.overrides, r.folder, r.steps_requested, summary=r.folder.read_summary())


def sweep_runs(c: Cell) -> list[Todo]:
    """The sweep runs of one cell still to train: seed 0 at each rate its selection still needs. A folder
    that holds a finished shorter run (the experiment's step count was raised since) is extended."""
    _, tried, _, left = c.selection()
    return [Todo(c, r, extends=shorter_run(r), early=r.lr not in tried) for r in (c.run(lr, 0) for lr in left)]


def seed_runs(c: Cell, seeds: list[int], max_steps_cap: int | None) -> list[Todo]:
    """The runs of one cell still to train: missing seeds at its current step count, or, when all are
    finished and one has not converged, all of them at twice the steps, at most the cap (`extends`: to be
    reopened for resumption; nothing is reopened here, so a round that is not started changes no folder)."""
    lr = c.selection()[0]
    if lr is None:  # its sweep is not finished (another process reopened the chosen rate's run): a rerun's
        return []   # sweep step trains it first
    runs = [c.run(lr, s) for s in seeds]
    steps = max(r.steps for r in runs)
    runs = [c.run(lr, s, steps) for s in seeds]  # every seed trains as long as the longest
    if any(r.summary is None for r in runs):
        peers = [r.summary for r in [c.run(lr, 0, steps), *runs] if r.summary]  # seed 0: the sweep's run
        # a seed still at fewer steps than the others (a partial extension round, or one cut by a lease's end
        # and not imported) extends its finished shorter run; ensure would skip it as finished otherwise
        return [Todo(c, r, extends=shorter_run(r), peers=peers) for r in runs if r.summary is None]
    cap = max_steps_cap if max_steps_cap is not None else c.max_steps
    target = min(2 * steps, cap)  # the last extension stops at the cap: a cap between rungs is reached
    if all(c.converged(r)[0] for r in runs) or target <= steps or not c.constant:
        return []
    peers = [r.summary for r in runs]  # the cell's finished runs: their longest process times the round
    return [Todo(c, c.run(lr, s, target), extends=r, peers=peers) for s, r in zip(seeds, runs)]


SEARCH = 14  # Clock.fit tries every subset of a round of at most this many runs (2^14 estimates at most)


class Clock:
    """--time-limit: whether the next round fits in the time left (estimated by sessa_bench.report.timing)."""

    def __init__(self, limit: float, started: float | None, jobs: int | None, jobs_per_gpu: int | None,
                 pace: dict[str, float] | None = None, safety: float = SAFETY):
        from sessa_bench.runs import place, visible_gpus

        self.safety = safety  # --safety: the margin on every estimate
        self.pace = pace or {}  # --pace: [family:]execution -> factor on an eager pace that times such a run
        self.end = (time.monotonic() if started is None else started) + limit
        self.placed = place(jobs, visible_gpus(), jobs_per_gpu)  # the GPU of each slot, as ensure fills them
        self.slots = len(self.placed)  # as many at once as ensure trains

    def runs_per_gpu(self, n: int) -> int | None:
        """How many of a round of n runs share the busiest GPU (None on CPU: no sharing to scale by)."""
        used = [g for g in self.placed[:n] if g is not None]
        return max(used.count(g) for g in set(used)) if used else None

    def estimate(self, todo: list[Todo]) -> tuple[list[float | None], float | None]:
        """Seconds of each run of the round at its GPU sharing, and of the whole round (None: unknown)."""
        secs = estimates(todo, self.runs_per_gpu(len(todo)), self.pace)
        return secs, round_seconds(secs, self.slots, self.safety)

    def fit(self, todo: list[Todo]) -> tuple[list[Todo], float | None]:
        """The runs of a round to start now: all of them when the round fits in the time left or has no timing
        yet; else the part that fits and keeps the workers busiest: of the round's subsets (each in the
        families' interleaved order, a run taking the first slot to free), the one with the most estimated
        run-seconds whose round fits, ties going to more runs, then to earlier ones in that order. So a slot
        beside a long run takes the shorter runs that fit after each other there (the prefix alone left it
        idle: 2 x H200, a 1000 s run on each GPU and two 600 s runs waiting for the next lease). Rounds of more
        than SEARCH runs take their longest prefix that fits. Else none. With the part's estimate (the whole
        round's when none fits). A part is enough: every step reads its state from the run folders, so the
        rest of the round is the next round of a rerun."""
        left = self.end - time.monotonic()
        order = interleave(todo)
        secs = {}  # the runs' estimates at each GPU sharing a part can have: one read of the run folders each

        def at(n: int) -> list[float | None]:  # estimates when n runs are started (fewer share a GPU)
            k = self.runs_per_gpu(n)
            if k not in secs:
                secs[k] = estimates(order, k, self.pace)
            return secs[k]

        whole = round_seconds(at(len(order)), self.slots, self.safety)
        if left > 0 and (whole is None or whole <= left):
            return order, whole
        if left <= 0:
            return [], whole
        n = len(order)
        parts = (c for r in range(n, 0, -1) for c in combinations(range(n), r)) if n <= SEARCH else \
            (tuple(range(r)) for r in range(n, 0, -1))
        best, best_key, best_est = (), None, None
        for part in parts:
            sec = [at(len(part))[i] for i in part]
            est = round_seconds(sec, self.slots, self.safety)
            if est is None or est > left:
                continue
            key = (sum(stand_ins(sec)), len(part), tuple(-i for i in part))  # timed as round_seconds times it
            if best_key is None or key > best_key:
                best, best_key, best_est = part, key, est
        if not best:
            return [], whole
        return [order[i] for i in best], best_est

    def admit(self, todo: list[Todo]) -> tuple[list[Todo], str | None]:
        """`fit`'s runs and a note for the round's line; ([], None), after one line saying why, when no run
        of it fits."""
        left = self.end - time.monotonic()
        start, est = self.fit(todo)
        if not start:
            print(f"time limit: the next round ({len(todo)} runs{'' if est is None else f', ~{est:.0f} s estimated'}) "
                  f"does not fit in the {max(left, 0):.0f} s left; stopping here (rerun to continue)", flush=True)
            return [], None
        part = "" if len(start) == len(todo) else f"; {len(start)} of its {len(todo)} runs fit, the rest waits"
        return start, (f" (time limit: no timing yet, {left:.0f} s left)" if est is None else
                       f" (time limit: ~{est:.0f} s estimated, {left:.0f} s left{part})")

    def run_estimate(self, todo: list[Todo]):
        """For runs.ensure: the seconds (x the safety factor) of a run of this admitted round, given its overrides,
        estimated when its slot frees (from the runs finished by then), so a later wave of a round that had no
        timing when it started is not started past the time limit. None (start) for the first wave, which
        ensure starts at once: `admit` has just decided that, and a second look a moment later must not leave
        a folder it reopened unstarted."""
        by_overrides = {tuple(t.run.overrides): t for t in todo}
        first_wave = {tuple(t.run.overrides) for t in todo[:self.slots]}
        sharing = self.runs_per_gpu(len(todo))

        def estimate(overrides: list[str]) -> float | None:
            if tuple(overrides) in first_wave:
                return None
            sec = estimates([by_overrides[tuple(overrides)]], sharing, self.pace)[0]
            return None if sec is None else sec * self.safety
        return estimate


def interleave(todo: list[Todo]) -> list[Todo]:
    """The runs of a round, one of each cell (experiment and family) in turn, in their order within it."""
    cells: dict[tuple[str, str], list[Todo]] = {}
    for t in todo:
        cells.setdefault((t.cell.experiment, t.cell.family), []).append(t)
    out, queues = [], list(cells.values())
    while any(queues):
        out += [q.pop(0) for q in queues if q]
    return out


def estimates(todo: list[Todo], runs_per_gpu: int | None = None,
              pace: dict[str, float] | None = None) -> list[float | None]:
    """Seconds to train each run of a round (None: nothing to time it by), at its cell's pace
    (`sessa_bench.report.timing.pace`: its own run's and its seeds'), else at the slowest of its experiment's
    finished runs (read once each), scaled to `runs_per_gpu` runs sharing a GPU; a pace borrowed from runs
    that executed otherwise is scaled by `pace_factor(pace, ...)`, one from runs without a faster backend
    named in --pace by `backend_pace` (--pace)."""
    finished: dict[tuple, list[dict]] = {}
    out = []
    for t in todo:
        key = tuple(sorted(t.cell.names.items()))
        timing = dict(how=t.cell.execution, fallback=pace_factor(pace, t.cell.family, t.cell.execution),
                      family=t.cell.family, backend=backend_pace(pace, t.cell.family))
        if key not in finished:
            finished[key] = finished_runs(t.cell)
        if t.extends is not None:
            out.append(run_seconds(t.run.steps_requested, t.extends.summary, t.extends.folder.checkpoint.exists(),
                                   cell=t.peers, experiment=finished[key], runs_per_gpu=runs_per_gpu, **timing))
        else:
            out.append(run_seconds(t.run.steps_requested, cell=t.peers, experiment=finished[key],
                                   runs_per_gpu=runs_per_gpu, **timing))
    return out


EXECUTIONS = ("compile", "cuda_graphs")  # --pace keys: how a run executes (summary `compile`, `cuda_graphs`)
BACKENDS = ("conv_triton",)  # and faster kernels a run records in its summary's `backends`


def pace_factor(pace: dict[str, float] | None, family: str, how: str) -> float:
    """The --pace factor for a run of `family` executed `how`: `family:how` first, then `how`, else 1."""
    pace = pace or {}
    return pace.get(f"{family}:{how}", pace.get(how, 1.0))


def backend_pace(pace: dict[str, float] | None, family: str) -> tuple[str, float] | None:
    """(marker, factor) of the --pace backend for a run of `family` (`family:marker` first, then `marker`),
    or None: runs that did not record the marker time it scaled by the factor (report.timing.timed_by)."""
    pace = pace or {}
    for marker in BACKENDS:
        if (factor := pace.get(f"{family}:{marker}", pace.get(marker))) is not None:
            return marker, factor
    return None


def parse_pace(items: list[str]) -> dict[str, float]:
    """--pace values `[family:]execution=factor` or `[family:]backend=factor` -> {key: factor}, one clear
    error for a bad one."""
    out = {}
    families = sorted({f for t in TABLES.values() for f in t.families})
    for item in items:
        key, _, value = item.partition("=")
        family, _, how = key.rpartition(":")
        try:
            factor = float(value)
        except ValueError:
            factor = -1.0
        if how not in EXECUTIONS + BACKENDS or (family and family not in families) or not factor > 0:
            raise ValueError(f"--pace {item!r}: must be [family:]execution=factor with execution one of "
                             f"{', '.join(EXECUTIONS)}, or [family:]backend=factor with backend one of "
                             f"{', '.join(BACKENDS)}; family one of {families}, factor > 0 (e.g. "
                             f"sessa:cuda_graphs=0.5, mamba2:conv_triton=0.8)")
        out[key] = factor
    return out


def finished_runs(c: Cell) -> list[dict]:
    """Summaries of the finished runs in the folder of the cell's experiment with its task and budget."""
    root = Path(c.names["results_dir"]) / c.names["experiment_name"]
    summaries = [f.read_summary() for p in sorted(root.glob("*")) if (f := RunFolder(p)).is_finished()]
    return [s for s in summaries if (s.get("task"), s.get("budget")) == (c.names["task_name"], c.names["budget"])]


def build(name: str, seeds: list[int] | None = None, overrides: list[str] = (), run: bool = False,
          out_dir: str | Path = "results", plots: bool = True, jobs: int | None = 1,
          jobs_per_gpu: int | None = None, max_steps_cap: int | None = None,
          only: list[str] | None = None, time_limit: float | None = None,
          started: float | None = None, plan: bool = False, pace: list[str] = (),
          safety: float = SAFETY, families: list[str] | None = None) -> dict[str, Path]:
    """Run the protocol (run=True; no round is started that would not end within time_limit seconds of
    `started`, a time.monotonic(), default now), then write <out_dir>/<name>.md and .csv (and plots);
    returns paths. plan=True: print the protocol's next round instead, train and write nothing ({}).
    pace: --pace values (parse_pace), for the estimates; safety: the margin on them (--safety).
    families: the table's rows instead of the paper's families (--families: a baseline of conf/model/ added)."""
    if name not in TABLES:
        raise ValueError(f"table={name!r}: must be one of {sorted(TABLES)} or 'all'")
    if seeds is not None:  # None: each experiment's sweep.seeds, else 0 and 1
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("seeds: give at least one seed")
    if max_steps_cap is not None and max_steps_cap < 1:
        raise ValueError(f"max_steps_cap={max_steps_cap}: must be >= 1 (steps)")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit={time_limit:g} (--time-limit): must be > 0 (seconds from the start of "
                         f"the command)")
    if not safety >= 1:
        raise ValueError(f"safety={safety:g} (--safety): must be >= 1 (a factor on the estimates)")
    factors = parse_pace(list(pace))
    table = TABLES[name] if families is None else with_families(TABLES[name], families)
    if only is not None and (bad := [e for e in only if e not in experiments(table)]):
        raise ValueError(f"experiments={bad}: {name} has the experiments {experiments(table)}")
    scoped = split_overrides(list(overrides), experiments(table))
    if run or plan:
        protocol(table, seeds, scoped, jobs, max_steps_cap, only, time_limit, started, plan, factors, safety,
                 jobs_per_gpu=jobs_per_gpu)
    if plan:
        return {}
    return write(table, seeds, scoped, out_dir, plots)


def _jobs(args) -> int | None:
    """--jobs, else 1, else (with --jobs-per-gpu alone) None: K per visible GPU."""
    return args.jobs if args.jobs is not None else (None if args.jobs_per_gpu else 1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="rebuild the paper's tables from run folders (optionally run "
                                             "what is missing first)")
    ap.add_argument("table", choices=[*TABLES, "all"])
    ap.add_argument("--run", action="store_true", help="train missing runs first (skips finished ones)")
    ap.add_argument("--plan", action="store_true",
                    help="print the round --run would train next (runs, steps, estimated seconds; with "
                         "--time-limit, whether it fits) and stop: nothing trains, no file changes. On a "
                         "machine without GPUs, CUDA_VISIBLE_DEVICES=0 plans for one GPU")
    ap.add_argument("--jobs", type=int, default=None,
                    help="with --run: train up to this many runs at once, each in its own process, spread over "
                         "the visible GPUs (default 1, or K per GPU with --jobs-per-gpu)")
    ap.add_argument("--jobs-per-gpu", type=int, default=None,
                    help="with --run: at most this many runs share one GPU")
    ap.add_argument("--max-steps-cap", type=int, default=None,
                    help="with --run: extend unconverged runs (doubling their steps) up to this many steps, in "
                         "every experiment (default: each experiment's sweep.max_steps_cap, else 4x its "
                         "trainer.max_steps)")
    ap.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                    help="with --run: start no run (of the sweep, seeds or extensions) whose estimated time "
                         "does not fit in the SECONDS since this command started (of a round that does not fit, "
                         "the part that does); the table is written anyway")
    ap.add_argument("--pace", action="append", default=[], metavar="[FAMILY:]EXECUTION=FACTOR",
                    help="with --time-limit or --plan: a run that executes as EXECUTION (compile, cuda_graphs) "
                         "and has no finished run executed so to time it is timed by eager runs x FACTOR "
                         "(a measured ratio, e.g. sessa:cuda_graphs=0.5 from "
                         "results/bench/nvidia-h200-execution-ab.md); or [FAMILY:]BACKEND=FACTOR (BACKEND "
                         "conv_triton): runs that did not record that kernel in their summary's backends time "
                         "it x FACTOR until one that did has finished (e.g. mamba2:conv_triton=0.8); repeatable")
    ap.add_argument("--safety", type=float, default=SAFETY, metavar="FACTOR",
                    help=f"with --time-limit or --plan: the margin on every estimate (default {SAFETY}); lower "
                         "it only where the runs that time the round ran on the same code and machine kind")
    ap.add_argument("--beside", type=int, default=None, metavar="K",
                    help="with --run or --plan: K more training processes share each GPU with the table's runs "
                         "(a lease's BESIDE work): every estimate counts them, time-sliced, and the runs record "
                         "it (default: $" + ENV_BESIDE + ", else 0)")
    ap.add_argument("--experiments", nargs="+", metavar="EXPERIMENT",
                    help="with --run: train only these columns' experiments (e.g. table1_symbol_soup); the "
                         "table is still written with every column")
    ap.add_argument("--seeds", type=int, nargs="+",
                    help="the seeds of every cell (default: each experiment's sweep.seeds, else 0 1)")
    ap.add_argument("--families", nargs="+", metavar="MODEL",
                    help="the table's rows (conf/model/ names) instead of the paper's families, e.g. add a "
                         "baseline: --families sessa transformer mamba2 transformer_prenorm; with --run it gets "
                         "the same protocol; its paper cells are empty (use --out-dir to keep the committed "
                         "tables)")
    ap.add_argument("--results-dir", help="where the run folders are (default: the config's results_dir)")
    ap.add_argument("--out-dir", default="results", help="where <table>.md/.csv and plots go")
    started = time.monotonic()  # what --time-limit counts from
    args, overrides = ap.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        ap.error(f"unknown option(s) {bad}")
    if args.experiments and args.table == "all":
        ap.error("--experiments names columns of one table; give table1, table2 or ablation")
    if args.run and args.plan:
        ap.error("--plan shows what --run would do next; give one of them")
    if args.beside is not None:
        if args.beside < 0:
            ap.error(f"--beside {args.beside}: must be a count of processes, 0 or more")
        os.environ[ENV_BESIDE] = str(args.beside)  # the estimates read it, and the runs' workers inherit it
    if args.results_dir:
        overrides = [f"results_dir={args.results_dir}", *overrides]
    for name in (list(TABLES) if args.table == "all" else [args.table]):
        paths = build(name, args.seeds, overrides, args.run, args.out_dir, jobs=_jobs(args),
                      jobs_per_gpu=args.jobs_per_gpu, max_steps_cap=args.max_steps_cap,
                      only=args.experiments, time_limit=args.time_limit, started=started, plan=args.plan,
                      pace=args.pace, safety=args.safety, families=args.families)
        if paths:
            print(paths["md"].read_text())


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    with user_errors("python -m sessa_bench.tables"):
        main()
