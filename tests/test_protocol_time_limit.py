"""--time-limit: the round estimate on summaries written out by hand."""

import json
from pathlib import Path

import pytest

from sessa_bench.report.timing import pace, round_seconds, run_seconds, seconds_per_step

ROOT = Path(__file__).resolve().parent.parent


# --- the estimate ------------------------------------------------------------------------------------------
def summary(steps, wall, resumed=None, total=None):
    return {"steps": steps, "wall_seconds_this_process": wall, "resumed_from_step": resumed,
            "wall_seconds_total": wall if total is None else total}


def test_pace_is_timed_over_the_last_process():
    assert seconds_per_step(summary(1000, 500.0)) == 0.5
    # resumed from 1000 to 2000: the second process trained 1000 steps in 600 s
    assert seconds_per_step(summary(2000, 600.0, resumed=1000, total=1100.0)) == 0.6
    # retrained from step 0 to 2000 (no checkpoint): its 1000 s cover all 2000 steps; the total counts the
    # first training too, which is not this run's pace
    assert seconds_per_step(summary(2000, 1000.0, total=1500.0)) == 0.5
    # rerun after a kill at step 900: 100 steps in a process whose start-up dominates: no pace
    assert seconds_per_step(summary(1000, 80.0, resumed=900)) is None
    assert seconds_per_step({"steps": 1000, "wall_seconds_total": 300.0}) == 0.3  # an older summary
    assert seconds_per_step({"steps": 0, "wall_seconds_total": 3.0}) is None
    assert seconds_per_step({"steps": 10}) is None


def test_a_committed_summary_gives_its_wall_time_per_step():
    path = next((ROOT / "results" / "runs" / "table1_symbol_soup").glob("*-s0/summary.json"))
    s = json.loads(path.read_text())
    assert seconds_per_step(s) == pytest.approx(s["wall_seconds_total"] / s["steps"])


def test_an_extension_resumes_or_retrains_at_its_own_pace():
    own = summary(1000, 500.0)
    assert run_seconds(2000, own, resumable=True) == 500.0    # 1000 more steps from its checkpoint
    assert run_seconds(2000, own, resumable=False) == 1000.0  # no checkpoint: 2000 steps from step 0
    # its own pace wins over a slower one of its experiment
    assert run_seconds(2000, own, True, experiment=[summary(1000, 900.0)]) == 500.0


def test_a_missing_run_borrows_its_cell_pace_else_the_slowest_of_its_experiment():
    cell_runs = [summary(1000, 400.0)]
    experiment = [summary(1000, 300.0), summary(1000, 700.0), summary(1000, 80.0, resumed=900)]
    assert run_seconds(1000, cell=cell_runs, experiment=experiment) == 400.0
    assert run_seconds(2000, experiment=experiment) == 1400.0  # the slowest timed run: 0.7 s/step
    assert pace(cell=[summary(1000, 80.0, resumed=900)], experiment=experiment) == 0.7  # untimed: next group
    assert run_seconds(1000) is None and run_seconds(1000, experiment=[summary(1000, 80.0, resumed=900)]) is None


def test_a_round_is_its_longest_run_per_wave_with_a_margin():
    assert round_seconds([100.0, 300.0, None]) == pytest.approx(360.0)  # side by side: the longest, x1.2
    assert round_seconds([100.0, 300.0, None], slots=3) == pytest.approx(360.0)
    assert round_seconds([100.0, 300.0, None], slots=2) == pytest.approx(720.0)  # two waves
    assert round_seconds([100.0, 300.0, None], slots=1) == pytest.approx(1080.0)
    assert round_seconds([None, None]) is None and round_seconds([]) is None

