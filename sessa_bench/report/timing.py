"""How long the protocol's next round will take, from run folders' summary.json alone.

The table runner (`sessa_bench.tables --time-limit`) must not start a round it cannot finish: a round killed
midway leaves its reopened folders unfinished, and the shorter finished results they held are lost with it.
So each estimate leans long: a run's pace includes its start-up and evaluation, the slowest known pace stands
in for a run without its own, and the round gets a safety factor on top.
"""

from __future__ import annotations

import math

SAFETY = 1.2  # on top of the round's estimate: paces vary between runs and machines
# Fewer runs sharing a GPU than when a pace was measured: each goes faster, but not in proportion below the
# count that saturates the GPU (one H200, SymbolSoup `small`: 9 runs ~360k tokens/s together, 6 ~410k, 3
# ~330k, one alone ~200k), so the factor on a pace is never below this.
SHARING_FLOOR = 0.6


def trained_in_last_process(summary: dict) -> int:
    """Steps the run's last process trained: all of them, or those after the step it resumed from."""
    return (summary.get("steps") or 0) - (summary.get("resumed_from_step") or 0)


def seconds_per_step(summary: dict) -> float | None:
    """Wall seconds per step of a finished run, start-up and evaluation included, or None when its summary
    does not tell. Timed over its last process, which trained steps - resumed_from_step steps (all of them
    when trained from step 0, e.g. an extension retrained without its checkpoint, whose wall_seconds_total
    also counts the first training). A last process that trained less than half of the steps is a rerun
    after a kill (an extension resumes for exactly half): its start-up dominates, and wall_seconds_total
    leaves out the killed process, so neither times the run."""
    steps, trained = summary.get("steps") or 0, trained_in_last_process(summary)
    wall = summary.get("wall_seconds_this_process", summary.get("wall_seconds_total"))
    if wall is None or steps <= 0 or 2 * trained < steps:
        return None
    return float(wall) / trained


def sharing(summary: dict, runs_per_gpu: int | None) -> float:
    """Factor on a run's measured pace when `runs_per_gpu` runs will share each GPU where its summary says
    `placement.runs_on_gpu` did: a saturated GPU divides its throughput among its runs, so the pace scales
    with the count (down to SHARING_FLOOR); 1 when either count is unknown (a run started by hand, CPU)."""
    then = (summary.get("placement") or {}).get("runs_on_gpu")
    if not then or not runs_per_gpu:
        return 1.0
    return max(runs_per_gpu / then, SHARING_FLOOR)


def execution(s: dict) -> str:
    """How a run trained, from its summary or resolved config: `compile` (torch.compile), `cuda_graphs`
    (sessa_bench/cuda_graphs.py) or `eager`."""
    return "compile" if s.get("compile") else "cuda_graphs" if s.get("cuda_graphs") else "eager"


def pace(own: dict | None = None, cell: list[dict] = (), experiment: list[dict] = (),
         runs_per_gpu: int | None = None, how: str | None = None, fallback: float = 1.0) -> float | None:
    """Seconds per step for a run to train: that of the longest last process among its own finished run (a
    run being extended) and its cell's (same family, experiment and rate), since start-up and evaluation
    weigh least there (a resumed half-length segment of the same run, timed while more runs shared the GPU,
    measured 0.52 s/step where its seed's full 2000-step process measured 0.37); of those, the one timed at
    the GPU sharing nearest the round's (the least scaled: `sharing` is a rough model); ties: the one that
    finished last (summary.json's `finished_at`, absent before 2026-11-30: oldest), since the code a round
    runs is the newest (Mamba2's aligned in_proj and graphed evaluation, measured at 1.12x a step and 1.18x
    an eval batch, came after its 8000-step run), then the slowest;
    else the slowest of its experiment's finished runs; else None. Each at the round's GPU sharing. With
    `how` (the run's `execution`), only runs trained the same way time it when there are any: a compiled run
    trains up to 2x faster (results/bench/nvidia-h200-small.md), so its pace must not time an eager one; an
    eager pace for a compiled or graphed run leans long, by what that execution saves: `fallback` scales
    such a borrowed pace (tables --pace, from a measured A/B such as results/bench/nvidia-h200-execution-ab.md;
    default 1: no saving assumed)."""
    def at_round(s: dict) -> float:  # its pace, scaled to the round's GPU sharing
        return seconds_per_step(s) * sharing(s, runs_per_gpu)

    def off(s: dict) -> float:  # how far its GPU sharing was from the round's (log scale; 0: unknown)
        then = (s.get("placement") or {}).get("runs_on_gpu")
        return abs(math.log(then / runs_per_gpu)) if then and runs_per_gpu else 0.0

    def alike(runs: list[dict]) -> tuple[list[dict], float]:
        timed = [s for s in runs if seconds_per_step(s) is not None]
        same = [s for s in timed if how is None or execution(s) == how]
        return (same, 1.0) if same or how is None else (timed, fallback)

    mine, scale = alike([*([own] if own is not None else []), *cell])
    if mine:
        return scale * at_round(max(mine, key=lambda s: (trained_in_last_process(s), -off(s),
                                                         s.get("finished_at") or "", at_round(s))))
    others, scale = alike(list(experiment))
    known = [at_round(s) for s in others]
    return scale * max(known) if known else None


def steps_to_train(target: int, done: int = 0, resumable: bool = False) -> int:
    """Steps a run trains to reach `target` when `done` are finished: it resumes from its checkpoint, or
    without one (a folder copied off another machine) retrains from step 0."""
    return target - done if resumable else target


def run_seconds(target: int, own: dict | None = None, resumable: bool = False, cell: list[dict] = (),
                experiment: list[dict] = (), runs_per_gpu: int | None = None,
                how: str | None = None, fallback: float = 1.0) -> float | None:
    """Seconds to train one run to `target` steps (None: no finished run to time it by). own: the finished
    shorter run it extends (resumable: its checkpoint exists); cell, experiment: finished runs to borrow a
    pace from (`pace`, which also takes `how` and `fallback`)."""
    p = pace(own, cell, experiment, runs_per_gpu, how, fallback)
    if p is None:
        return None
    return p * steps_to_train(target, own["steps"] if own is not None else 0, resumable and own is not None)


def round_seconds(runs: list[float | None], slots: int | None = None) -> float | None:
    """Seconds for a round of runs trained side by side, at most `slots` at a time (None: all at once), times
    SAFETY: the runs start in their order, each in the first slot to free (as runs.ensure's workers take
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
    return max(free) * SAFETY


def stand_ins(runs: list[float | None]) -> list[float] | None:
    """The runs' seconds, a run with no timing standing in at the longest known one; None when none is known."""
    known = [s for s in runs if s is not None]
    return [max(known) if s is None else s for s in runs] if known else None
