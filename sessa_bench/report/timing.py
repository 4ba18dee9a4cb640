"""How long the protocol's next round will take, from run folders' summary.json alone.

The table runner (`sessa_bench.tables --time-limit`) must not start a round it cannot finish: a round killed
midway leaves its reopened folders unfinished, and the shorter finished results they held are lost with it.
So each estimate leans long: a run's pace includes its evaluation, the slowest known pace stands in for a run
without its own, and the round gets a safety factor on top. A process's start-up (the first training window's
excess: kernel autotuning, CUDA-graph capture) is counted once per run, not per step: scaled with the steps, a
cold Triton autotune of 245 s timed Mamba2's 16000-step retrain at 1729 s where its steps take ~1460 s with it
(results/bench/h200x2-run6-session.log).
"""

from __future__ import annotations

import math
import statistics

SAFETY = 1.2  # on top of the round's estimate: paces vary between runs and machines
# Fewer runs sharing a GPU than when a pace was measured: each goes faster, but not in proportion below the
# count that saturates the GPU (one H200, SymbolSoup `small`: 9 runs ~360k tokens/s together, 6 ~410k, 3
# ~330k, one alone ~200k), so the factor on a pace is never below this.
SHARING_FLOOR = 0.6
# Runs sharing a GPU through MPS overlap their kernels: two graphed Sessa runs of Table 1's shapes on one H200
# trained 1.32x the tokens/s together that they did time-sliced (results/bench/nvidia-h200-mps-check.md). Not
# measured for more runs; their gain is taken to be the same (it leans long where it is larger).
MPS_GAIN = 1.32


def trained_in_last_process(summary: dict) -> int:
    """Steps the run's last process trained: all of them, or those after the step it resumed from."""
    return (summary.get("steps") or 0) - (summary.get("resumed_from_step") or 0)


def startup_seconds(rows: list[dict], wall: float, trained: int, resumed_from_step: int | None = None) -> float:
    """Seconds a training process spent starting up, from its metrics lines (`rows`, metrics.jsonl): its first
    window of `train/tokens_per_s` (from the start of training to the first logged step) against the median of
    the later ones. With the first window r times slower than the steady ones and n steps long, the process's
    `wall` is its start-up n*p*(r-1) plus `trained` steps at p (evaluation included): solved for both. 0 when
    the first window is not slower or fewer than three windows were logged."""
    start = resumed_from_step or 0
    windows = [(int(r["step"]), float(r["train/tokens_per_s"])) for r in rows
               if "train/tokens_per_s" in r and int(r.get("step", -1)) >= start]
    if len(windows) < 3 or trained <= 0 or windows[0][1] <= 0:
        return 0.0
    (first_step, first), steady = windows[0], statistics.median(v for _, v in windows[1:])
    excess, n = steady / first - 1.0, first_step + 1 - start
    if excess <= 0 or n <= 0:
        return 0.0
    return n * excess * wall / (trained + n * excess)


def startup(summary: dict) -> float:
    """The run's last process's start-up (summary.json's `startup_seconds`; 0 where it is not recorded)."""
    return float(summary.get("startup_seconds") or 0.0)


def seconds_per_step(summary: dict) -> float | None:
    """Wall seconds per step of a finished run, evaluation included and its start-up (`startup`) not, or None
    when its summary does not tell. Timed over its last process, which trained steps - resumed_from_step
    steps (all of them when trained from step 0, e.g. an extension retrained without its checkpoint, whose
    wall_seconds_total also counts the first training). A last process that trained less than half of the steps is a rerun
    after a kill (an extension resumes for exactly half): its start-up dominates, and wall_seconds_total
    leaves out the killed process, so neither times the run."""
    steps, trained = summary.get("steps") or 0, trained_in_last_process(summary)
    wall = summary.get("wall_seconds_this_process", summary.get("wall_seconds_total"))
    if wall is None or steps <= 0 or 2 * trained < steps:
        return None
    return (float(wall) - startup(summary)) / trained


def load(runs: int, mps: bool, beside: int = 0) -> float:
    """A run's share of its GPU's time, inverted: `runs` time-sliced with `beside` other processes; through
    MPS the runs overlap (MPS_GAIN) in one context, which time-slices with those others."""
    if mps and runs > 1:
        return runs / MPS_GAIN * (1 + beside)
    return float(runs + beside)  # one run alone: the same with MPS or without


def sharing(summary: dict, runs_per_gpu: int | None, mps: bool | None = None, beside: int | None = None) -> float:
    """Factor on a run's measured pace when `runs_per_gpu` runs will share each GPU where its summary says
    `placement.runs_on_gpu` did: a saturated GPU divides its throughput among its runs, so the pace scales
    with the count (down to SHARING_FLOOR), by less where they share it through MPS, and with other
    processes beside them (`load`). `mps`, `beside`: the round's, by default this process's (an MPS client
    under gpu_session.sh's MPS=1; `tables --beside K`); 1 when either count is unknown (a run started by
    hand, CPU). Lease 14's Diffuse MQAR runs, two per GPU time-sliced beside one Bible run, took 1.45-1.65x
    their estimates, which counted two (3/2 by this)."""
    from sessa_bench.run_folder import beside_per_gpu, mps_client
    placed = summary.get("placement") or {}
    then = placed.get("runs_on_gpu")
    if not then or not runs_per_gpu:
        return 1.0
    now = load(runs_per_gpu, mps_client() if mps is None else mps, beside_per_gpu() if beside is None else beside)
    return max(now / load(then, bool(placed.get("mps")), int(placed.get("beside") or 0)), SHARING_FLOOR)


def execution(s: dict) -> str:
    """How a run trained, from its summary or resolved config: `compile` (torch.compile), `cuda_graphs`
    (sessa_bench/cuda_graphs.py) or `eager`."""
    return "compile" if s.get("compile") else "cuda_graphs" if s.get("cuda_graphs") else "eager"


def recorded_backend(s: dict, marker: str) -> bool:
    """Whether the run's summary records `marker` in one of its `backends` (e.g. Mamba2's `conv_triton`)."""
    return any(marker in b for b in s.get("backends") or ())


def pace(own: dict | None = None, cell: list[dict] = (), experiment: list[dict] = (),
         runs_per_gpu: int | None = None, how: str | None = None, fallback: float = 1.0,
         family: str | None = None, backend: tuple[str, float] | None = None) -> float | None:
    """Seconds per step for a run to train (`timed_by`'s pace), or None."""
    timed = timed_by(own, cell, experiment, runs_per_gpu, how, fallback, family, backend)
    return None if timed is None else timed[0]


def timed_by(own: dict | None = None, cell: list[dict] = (), experiment: list[dict] = (),
             runs_per_gpu: int | None = None, how: str | None = None, fallback: float = 1.0,
             family: str | None = None, backend: tuple[str, float] | None = None) -> tuple[float, dict] | None:
    """(seconds per step, the summary timing it) for a run to train: the pace of the longest last process
    among its own finished run (a run being extended), its cell's (same family, experiment and rate) and,
    where they trained longer processes than those, its family's at other rates of the experiment (a 2000-step
    sweep run retrained to 16000 steps was timed by its own old 2000-step process, not by its family's three
    16000-step ones), since start-up and evaluation weigh least there (a resumed half-length segment of the same run, timed
    while more runs shared the GPU, measured 0.52 s/step where its seed's full 2000-step process measured
    0.37); of those, the one timed at the GPU sharing nearest the round's (the least scaled: `sharing` is a
    rough model); ties: the one that finished last (summary.json's `finished_at`, absent before 2026-11-30:
    oldest), since the code a round runs is the newest (Mamba2's aligned in_proj and graphed evaluation,
    measured at 1.12x a step and 1.18x an eval batch, came after its 8000-step run), then the slowest;
    else the slowest of its experiment's finished runs of its `family` (a new rate of the sweep: a family's
    pace hardly depends on its rate; the experiment's slowest, Mamba2, timed Sessa's and the Transformer's
    2000-step Diffuse MQAR runs at 273 s where theirs took 91-195 s); else the slowest of its experiment's;
    else None. Each at the round's GPU sharing. With `how` (the run's `execution`), only runs trained the
    same way time it when there are any: a compiled run trains up to 2x faster
    (results/bench/nvidia-h200-small.md), so its pace must not time an eager one; an eager pace for a
    compiled or graphed run leans long, by what that execution saves: `fallback` scales such a borrowed pace
    (tables --pace, from a measured A/B such as results/bench/nvidia-h200-execution-ab.md; default 1: no
    saving assumed). `backend` = (marker, factor) likewise for a faster kernel the run will record in its
    `backends` (tables --pace mamba2:conv_triton=F): among the runs alike in execution, those that recorded
    the marker time it alone; without any, the others' pace is scaled by the factor (Mamba2's fused conv, 1.45x
    a graphed step, came after the long column's only finished Mamba2 run, whose conv1d pace kept every other
    Mamba2 run of the column out of a lease)."""
    def at_round(s: dict) -> float:  # its pace, scaled to the round's GPU sharing
        return seconds_per_step(s) * sharing(s, runs_per_gpu)

    def off(s: dict) -> float:  # how far its GPU sharing was from the round's (log scale; 0: unknown)
        then = (s.get("placement") or {}).get("runs_on_gpu")
        return abs(math.log(then / runs_per_gpu)) if then and runs_per_gpu else 0.0

    def alike(runs: list[dict]) -> tuple[list[dict], float]:
        timed = [s for s in runs if seconds_per_step(s) is not None]
        same = [s for s in timed if how is None or execution(s) == how]
        runs, scale = (same, 1.0) if same or how is None else (timed, fallback)
        if backend is None or not runs:
            return runs, scale
        marked = [s for s in runs if recorded_backend(s, backend[0])]
        return (marked, scale) if marked else (runs, scale * backend[1])

    pool = [*([own] if own is not None else []), *cell]
    if family:  # its family's runs of the experiment that trained longer processes time it better, at any rate
        longest = max((trained_in_last_process(s) for s in pool if seconds_per_step(s) is not None), default=0)
        pool += [s for s in experiment if s.get("family") == family and trained_in_last_process(s) > longest]
    mine, scale = alike(pool)
    if mine:
        best = max(mine, key=lambda s: (trained_in_last_process(s), -off(s), s.get("finished_at") or "",
                                        at_round(s)))
        return scale * at_round(best), best
    for group in ([s for s in experiment if s.get("family") == family] if family else [], list(experiment)):
        others, scale = alike(group)
        if others:
            slowest = max(others, key=at_round)
            return scale * at_round(slowest), slowest
    return None


def steps_to_train(target: int, done: int = 0, resumable: bool = False) -> int:
    """Steps a run trains to reach `target` when `done` are finished: it resumes from its checkpoint, or
    without one (a folder copied off another machine) retrains from step 0."""
    return target - done if resumable else target


def run_seconds(target: int, own: dict | None = None, resumable: bool = False, cell: list[dict] = (),
                experiment: list[dict] = (), runs_per_gpu: int | None = None,
                how: str | None = None, fallback: float = 1.0, family: str | None = None,
                backend: tuple[str, float] | None = None) -> float | None:
    """Seconds to train one run to `target` steps (None: no finished run to time it by): the start-up of the
    run that times it, then its steps at that run's pace. own: the finished shorter run it extends
    (resumable: its checkpoint exists); cell, experiment: finished runs to borrow a pace from (`timed_by`,
    which also takes `how`, `fallback` and `backend`)."""
    timed = timed_by(own, cell, experiment, runs_per_gpu, how, fallback, family, backend)
    if timed is None:
        return None
    p, by = timed
    return startup(by) + p * steps_to_train(target, own["steps"] if own is not None else 0,
                                            resumable and own is not None)


def round_seconds(runs: list[float | None], slots: int | None = None, safety: float = SAFETY) -> float | None:
    """Seconds for a round of runs trained side by side, at most `slots` at a time (None: all at once), times
    `safety`: the runs start in their order, each in the first slot to free (as runs.ensure's workers take
    them), and the round ends with its last run. A run with no timing stands in at the longest known one.
    None when no run's time is known. (It was the longest run times the number of waves, which left a slot
    idle once its short run had ended: a lease of 2 GPUs started 2 of 5 runs where 4 fit,
    results/bench/h200x2-run3-session.log.)"""
    timed = stand_ins(runs)
    if timed is None:
        return None
    free = [0.0] * min(slots or len(timed), len(timed))  # when each slot frees
    for sec in timed:
        i = free.index(min(free))
        free[i] += sec
    return max(free) * safety


def stand_ins(runs: list[float | None]) -> list[float] | None:
    """The runs' seconds, a run with no timing standing in at the longest known one; None when none is known."""
    known = [s for s in runs if s is not None]
    return [max(known) if s is None else s for s in runs] if known else None
