"""--time-limit: the round estimate on summaries written out by hand, and the protocol on fake run folders
(configs composed, summaries and metrics written here; nothing trains: sessa_bench.runs.ensure is replaced),
which must stop before a round that does not fit without touching any folder."""

import json
import re
import time
from pathlib import Path

import pytest

from sessa_bench.report.paper import TABLES
from sessa_bench.report.protocol import _compose, cell
from sessa_bench.report.timing import (SHARING_FLOOR, pace, round_seconds, run_seconds, seconds_per_step,
                                       startup_seconds)
from sessa_bench.run_folder import RunFolder
from sessa_bench.tables import build, protocol

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


def test_the_pace_is_that_of_the_longest_process_in_the_cell():
    """The lease of 2026-11-29: Mamba2's seed 1 resumed 1000 -> 2000 in 517 s while six runs shared the GPU;
    its seed 0 trained 0 -> 2000 in one 734 s process. The next round (both to 3000 from step 0) goes at the
    full process's 0.367 s/step, not at the half segment's 0.517, whose start-up and evaluation weigh double."""
    s1, s0 = summary(2000, 517.0, resumed=1000, total=842.0), summary(2000, 734.0)
    assert pace(own=s1, cell=[s0, s1]) == pytest.approx(0.367)
    assert run_seconds(3000, s1, resumable=False, cell=[s0, s1]) == pytest.approx(1101.0)
    assert pace(own=s1) == pytest.approx(0.517)  # alone, its own segment is all there is
    # equal lengths: the slower of the two
    assert pace(own=summary(1000, 500.0), cell=[summary(1000, 600.0)]) == pytest.approx(0.6)
    # ... unless one finished later: the newer code's pace (an older summary has no finished_at)
    newer = {**summary(1000, 500.0), "finished_at": "2026-11-30T01:00:00Z"}
    assert pace(own=newer, cell=[summary(1000, 600.0)]) == pytest.approx(0.5)
    assert pace(own=newer, cell=[{**summary(1000, 600.0), "finished_at": "2026-11-30T02:00:00Z"}]) == 0.6


def test_a_longer_process_of_its_family_at_another_rate_times_an_extension():
    """Diffuse MQAR, 2026-11-30: Mamba2's 2000-step sweep run at 3.3e-5 is retrained to 16000 steps; its
    family's 16000-step runs at other rates time it (the newest at equal length and sharing), not its own
    short process; a longer run of another family does not, and one no longer than its own adds nothing."""
    own = {**summary(2000, 400.0), "family": "mamba2"}
    long_old = {**summary(16000, 2400.0), "family": "mamba2", "finished_at": "2026-11-30T01:00:00Z"}
    long_new = {**summary(16000, 2000.0), "family": "mamba2", "finished_at": "2026-11-30T02:00:00Z"}
    other = {**summary(16000, 6400.0), "family": "sessa"}
    assert pace(own=own, experiment=[long_old, long_new, other], family="mamba2") == pytest.approx(0.125)
    assert pace(own=own, experiment=[other], family="mamba2") == pytest.approx(0.2)
    assert pace(own=own, experiment=[{**summary(2000, 800.0), "family": "mamba2"}], family="mamba2") == 0.2
    assert pace(own=own, experiment=[long_old]) == pytest.approx(0.2)  # no family given: its own


def test_a_missing_run_borrows_its_cell_pace_else_the_slowest_of_its_experiment():
    cell_runs = [summary(1000, 400.0)]
    experiment = [summary(1000, 300.0), summary(1000, 700.0), summary(1000, 80.0, resumed=900)]
    assert run_seconds(1000, cell=cell_runs, experiment=experiment) == 400.0
    assert run_seconds(2000, experiment=experiment) == 1400.0  # the slowest timed run: 0.7 s/step
    assert pace(cell=[summary(1000, 80.0, resumed=900)], experiment=experiment) == 0.7  # untimed: next group
    assert run_seconds(1000) is None and run_seconds(1000, experiment=[summary(1000, 80.0, resumed=900)]) is None


def windows(first_step, steady, first, n, every=10):
    """metrics.jsonl lines of a process: `n` windows of train/tokens_per_s logged every `every` steps from
    `first_step`, the first at `first` tokens/s, the others at `steady`, with a validation line among them."""
    rows = [{"step": first_step + i * every, "train/tokens_per_s": first if i == 0 else steady} for i in range(n)]
    return rows[:2] + [{"step": first_step + every, "val/acc": 0.3}] + rows[2:]


def test_a_process_start_up_is_solved_from_its_first_window():
    """1000 steps at 0.1 s (evaluation included) after 50 s of start-up: wall 150 s; the first 10-step window
    took 1 + 50 s, 51x a steady one. Solved back: 50 s."""
    assert startup_seconds(windows(9, 1000.0, 1000.0 / 51, 100), 150.0, 1000) == pytest.approx(50.0)
    # a resumed process: the lines before its step are the earlier process's (their slow first window is not
    # this one's start-up)
    rows = windows(9, 1000.0, 10.0, 50) + windows(1009, 1000.0, 1000.0 / 51, 100)
    assert startup_seconds(rows, 150.0, 1000, resumed_from_step=1000) == pytest.approx(50.0)
    assert startup_seconds(windows(9, 1000.0, 1000.0, 100), 150.0, 1000) == 0.0  # no slower first window
    assert startup_seconds(windows(9, 1000.0, 2000.0, 100), 150.0, 1000) == 0.0  # a faster one
    assert startup_seconds(windows(9, 1000.0, 1.0, 2), 150.0, 1000) == 0.0  # too few windows to tell
    assert startup_seconds([], 150.0, 1000) == 0.0


def test_a_run_start_up_is_counted_once_not_per_step():
    """Mamba2's seed 1 (this lease): 8000 steps in 865 s, 270 s of it a cold Triton autotune. Retrained to
    16000 steps: 270 + 2 x 595 s, not 2 x 865."""
    s1 = {**summary(8000, 865.0), "startup_seconds": 270.0}
    assert seconds_per_step(s1) == pytest.approx(595.0 / 8000)
    assert run_seconds(16000, s1, resumable=False) == pytest.approx(1460.0)
    assert run_seconds(16000, s1, resumable=True) == pytest.approx(865.0)  # 8000 more steps: one start-up
    # a missing run borrows the start-up of the run whose pace it borrows
    assert run_seconds(4000, experiment=[s1]) == pytest.approx(270.0 + 297.5)


def test_a_summary_without_its_start_up_gets_it_from_its_metrics(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.metrics.write_text("".join(json.dumps(r) + "\n" for r in windows(9, 1000.0, 1000.0 / 51, 100))
                              + json.dumps({"step": 1000, "test/acc": 0.5}) + "\n")
    folder.write_summary({**summary(1000, 150.0), "fit_metrics_lines": 101})
    assert folder.read_summary()["startup_seconds"] == pytest.approx(50.0)
    assert folder.startup_seconds(folder.read_summary()) == pytest.approx(50.0)
    folder.write_summary({**summary(1000, 150.0), "startup_seconds": 7.0})  # recorded: read as it is
    assert folder.read_summary()["startup_seconds"] == 7.0


def test_a_new_rate_borrows_its_family_pace_before_the_experiments_slowest():
    """The Diffuse MQAR sweep's 3.3e-5 runs of Sessa and the Transformer were timed by Mamba2's 273 s run,
    the experiment's slowest, where theirs took 91-195 s."""
    m = {**summary(2000, 273.0), "family": "mamba2"}
    t = {**summary(2000, 121.0), "family": "transformer"}
    t2 = {**summary(2000, 91.0), "family": "transformer"}
    assert run_seconds(2000, experiment=[m, t, t2], family="transformer") == pytest.approx(121.0)
    assert run_seconds(2000, experiment=[m, t, t2], family="sessa") == pytest.approx(273.0)  # none of its own
    assert run_seconds(2000, experiment=[m, t, t2]) == pytest.approx(273.0)


def test_the_safety_margin_is_a_flag():
    assert round_seconds([100.0, 300.0], safety=1.1) == pytest.approx(330.0)
    for bad in (0.9, 0, float("nan")):
        with pytest.raises(ValueError, match=r"^safety=\S+ \(--safety\): must be >= 1"):
            build("table1", run=True, safety=bad)


def test_a_round_fills_each_slot_as_it_frees_with_a_margin():
    assert round_seconds([100.0, 300.0, None]) == pytest.approx(360.0)  # side by side: the longest, x1.2
    assert round_seconds([100.0, 300.0, None], slots=3) == pytest.approx(360.0)
    # two slots: the unknown run (timed as the longest, 300) takes the slot the 100 s run frees
    assert round_seconds([100.0, 300.0, None], slots=2) == pytest.approx(480.0)
    assert round_seconds([100.0, 300.0, None], slots=1) == pytest.approx(840.0)  # one after another
    # the lease that started 2 of these 5 runs on 2 GPUs when waves were the model (round 2 x 600 s): filled
    # slot by slot the first four end at 938 s, the fifth at 1455 s
    lease = [469.0, 255.0, 600.0, 469.0, 600.0]
    assert round_seconds(lease[:4], slots=2) == pytest.approx(938 * 1.2)
    assert round_seconds(lease, slots=2) == pytest.approx(1455 * 1.2)
    assert round_seconds([None, None]) is None and round_seconds([]) is None


def test_time_limit_must_be_positive():
    for bad in (0, -5, float("nan")):
        with pytest.raises(ValueError, match=r"^time_limit=\S+ \(--time-limit\): must be > 0"):
            build("table1", run=True, time_limit=bad)


# --- the protocol on fake run folders -----------------------------------------------------------------------
EXP = "table1_symbol_soup"
FAMS = TABLES["table1"].families
STEPS = 100
PACE = {"sessa": 1.5, "transformer": 1.0, "mamba2": 1.0}  # seconds per step of each family's runs


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """Each test works in its own folder, and overrides() name the run folders' root relative to it: the same
    overrides in every test, so the protocol's cache of composed configs (report.protocol._compose) serves all
    of them, and each config is composed once in this module, not once per test (Hydra was most of its time)."""
    monkeypatch.chdir(tmp_path)


def overrides(tmp_path, grid):
    assert Path.cwd() == tmp_path  # results_dir=runs is tmp_path / "runs"
    return ["results_dir=runs", "budget=tiny", f"trainer.max_steps={STEPS}", f"sweep.lr={grid}"]


def finish(c, lr, seed, checkpoint=True, steps=STEPS, gain=1.0):
    """A finished run folder of cell c, unconverged (val/acc still climbing, times `gain`), timed at PACE."""
    r = c.run(lr, seed, steps)
    r.folder.path.mkdir(parents=True)
    # the run's resolved config as c.run just composed it (the protocol's own cache: one composition, not two)
    cfg = _compose(tuple(r.overrides))[1]
    r.folder.config.write_text(json.dumps(cfg))  # JSON is YAML
    rows = [{"step": s, "val/acc": gain * (0.1 + s / (2.5 * steps))}
            for s in (steps // 4, steps // 2, 3 * steps // 4, steps - 1)]
    r.folder.metrics.write_text("".join(json.dumps(x) + "\n" for x in rows)
                                + json.dumps({"step": steps - 1, "test/acc": 0.5}) + "\n")
    r.folder.write_summary({
        "final": {"val/acc": 0.5, "test/acc": 0.5}, "steps": steps, "fit_metrics_lines": len(rows),
        "wall_seconds_this_process": PACE[c.family] * steps, "wall_seconds_total": PACE[c.family] * steps,
        "resumed_from_step": None, "task": cfg["task_name"], "budget": cfg["budget"]["name"], "family": c.family,
        "task_facts": {"chance": 0.05, "baseline": None}})
    if checkpoint:
        r.folder.checkpoint.parent.mkdir()
        r.folder.checkpoint.write_bytes(b"")


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class Trained(Exception):
    """Raised by the fake ensure: the round started (nothing trains, so the protocol would go round again)."""


class Calls(list):
    """The run lists ensure was called with; `kw`: the keyword arguments of each call."""
    def __init__(self):
        super().__init__()
        self.kw = []


@pytest.fixture
def fake_ensure(monkeypatch):
    calls = Calls()

    def ensure(todo, jobs=1, **kw):
        calls.append(todo)
        calls.kw.append(kw)
        raise Trained

    monkeypatch.setattr("sessa_bench.runs.ensure", ensure)
    return calls


def run_protocol(tmp_path, grid, jobs=6, **kw):
    scoped = {EXP: overrides(tmp_path, grid)}
    protocol(TABLES["table1"], [0, 1], scoped, jobs=jobs, max_steps_cap=4 * STEPS, only=[EXP], **kw)


@pytest.fixture
def unconverged(tmp_path):
    """Seeds 0 and 1 of every family finished and unconverged at one rate: the next round extends all six
    to 2 x STEPS. Seed 0 kept its checkpoint (it resumes: STEPS more), seed 1 did not (it retrains 2 x STEPS)."""
    cells = [cell(EXP, f, overrides(tmp_path, "[0.001]"), "val/acc") for f in FAMS]
    for c in cells:
        for seed in (0, 1):
            finish(c, 0.001, seed, checkpoint=seed == 0)
    return tmp_path / "runs"


def test_protocol_stops_before_an_extension_round_that_does_not_fit_and_reopens_nothing(
        tmp_path, unconverged, fake_ensure, capsys):
    before = snapshot(unconverged)
    # the slowest: Sessa's seed 1, retrained for 2 x 100 steps at 1.5 s/step = 300 s; six runs in six slots;
    # and no part of the round fits either: its first run alone, Sessa's seed 0 resumed, is 150 s x 1.2
    run_protocol(tmp_path, "[0.001]", time_limit=100)
    out = capsys.readouterr().out
    m = re.search(r"^time limit: the next round \(6 runs, ~360 s estimated\) does not fit in the (\d+) s "
                  r"left; stopping here \(rerun to continue\)$", out, re.M)
    assert m and 50 < int(m[1]) <= 100, out  # left: the limit less the seconds spent composing
    assert fake_ensure == [] and "seeds and extensions" not in out
    assert snapshot(unconverged) == before  # no folder reopened: every summary.json is where it was
    assert not list(unconverged.rglob("summary.prev.json"))


def test_protocol_starts_the_part_of_a_round_that_fits_with_the_most_run_seconds(
        tmp_path, unconverged, fake_ensure, capsys):
    """The whole round (360 s: Sessa's seed 1 retrained, 300 s) does not fit in 300 s; every other run does
    (seed 0 resumed: 150, 100, 100 s; the Transformer's and Mamba2's seed 1 retrained: 200 s each; six slots,
    so 200 s x 1.2 = 240 s): those five are reopened and trained, Sessa's seed 1 waits for a rerun; ensure
    gets the deadline, to start no later wave past it."""
    with pytest.raises(Trained):
        run_protocol(tmp_path, "[0.001]", time_limit=300)
    out = capsys.readouterr().out
    m = re.search(r"^seeds and extensions: 5 runs \(time limit: ~240 s estimated, (\d+) s left; 5 of its 6 runs "
                  r"fit, the rest waits\)$", out, re.M)
    assert m and 250 < int(m[1]) <= 300, out
    (todo,) = fake_ensure
    assert sorted(RunFolder_name(ov).split("-")[0] + RunFolder_name(ov)[-3:] for ov in todo) == \
        ["mamba2-s0", "mamba2-s1", "sessa-s0", "transformer-s0", "transformer-s1"]
    (kw,) = fake_ensure.kw  # the deadline, and no second look at the first wave (it starts at once)
    assert 0 < kw["deadline"] - time.monotonic() <= 300 and kw["estimate"](todo[0]) is None
    reopened = sorted(p.parent.name for p in unconverged.rglob("summary.prev.json"))
    assert len(reopened) == 5 and "sessa-symbol_soup-tiny-lr0.001-s1" not in reopened
    assert len(list(unconverged.rglob("summary.json"))) == 1  # Sessa's seed 1 keeps its result


def test_a_part_packs_short_runs_one_after_the_other_beside_a_long_one(monkeypatch):
    """The next round of Table 1 on 2 x H200 (session 10's plan; seconds as estimated): Sessa and the
    Transformer to 16000 steps (~1010 s each), Mamba2 to 8000 (600 s each), 1540 s left. The interleaved
    prefix fitted two 1000 s runs and left 270 s of each GPU idle; Sessa's seed 0 beside both Mamba2 runs,
    one after the other, keeps the GPUs busiest (2217 run-seconds, the round ending at 1200 s x 1.2)."""
    from types import SimpleNamespace
    from sessa_bench import tables
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    secs = {("sessa", 0): 1017, ("transformer", 0): 1011, ("mamba2", 0): 600,
            ("sessa", 1): 1017, ("transformer", 1): 1011, ("mamba2", 1): 600}
    todo = [SimpleNamespace(cell=SimpleNamespace(experiment=EXP, family=f), seed=s) for f, s in secs]
    monkeypatch.setattr(tables, "estimates", lambda order, k, pace: [secs[(t.cell.family, t.seed)] for t in order])
    start, est = tables.Clock(1540, None, 2, None).fit(todo)
    assert [(t.cell.family, t.seed) for t in start] == [("sessa", 0), ("mamba2", 0), ("mamba2", 1)]
    assert est == pytest.approx(1200 * 1.2)
    start, est = tables.Clock(1000, None, 2, None).fit(todo)  # 833 s of runs: both Mamba2 runs side by side
    assert [(t.cell.family, t.seed) for t in start] == [("mamba2", 0), ("mamba2", 1)]
    # none fits: the whole round's estimate (in order, each run in the first slot to free: 2634 s)
    assert tables.Clock(500, None, 2, None).fit(todo) == ([], pytest.approx(2634 * 1.2))


def test_a_part_of_a_round_fills_the_slots_its_short_runs_free(tmp_path, unconverged, fake_ensure, capsys):
    """Two slots. In the interleaved order (Sessa, Transformer, Mamba2 seed 0 resumed: 150, 100, 100 s; then
    seed 1 retrained: 300, 200, 200 s) each run takes the first slot to free: the first five end at 450 s
    (x1.2 = 540, within 560), the sixth at 600. Counted in waves of two (the longest run per wave) only the
    first three fitted (360 s) and one slot idled from 100 s on."""
    with pytest.raises(Trained):
        run_protocol(tmp_path, "[0.001]", jobs=2, time_limit=560)
    out = capsys.readouterr().out
    assert re.search(r"^seeds and extensions: 5 runs \(time limit: ~540 s estimated, \d+ s left; 5 of its 6 runs "
                     r"fit, the rest waits\)$", out, re.M), out
    (todo,) = fake_ensure
    assert [RunFolder_name(ov).split("-")[0] + RunFolder_name(ov)[-3:] for ov in todo] == \
        ["sessa-s0", "transformer-s0", "mamba2-s0", "sessa-s1", "transformer-s1"]


def test_a_seed_left_behind_by_a_partial_round_extends_its_shorter_run(tmp_path, fake_ensure, capsys):
    """Seed 0 of every family extended to 2 x STEPS by an earlier (partial) round, seed 1 still at STEPS:
    seed 1 is the next round, extending its finished run (reopened first; ensure would skip a finished folder
    and the protocol would ask for it again forever)."""
    for f in FAMS:
        c = cell(EXP, f, overrides(tmp_path, "[0.001]"), "val/acc")
        finish(c, 0.001, 0, steps=2 * STEPS)
        finish(c, 0.001, 1, checkpoint=False)
    with pytest.raises(Trained):
        run_protocol(tmp_path, "[0.001]", time_limit=1000)
    assert "seeds and extensions: 3 runs (time limit:" in capsys.readouterr().out
    (todo,) = fake_ensure
    assert all(f"trainer.max_steps={2 * STEPS}" in ov and "seed=1" in ov for ov in todo), todo
    reopened = sorted(p.parent.name for p in (tmp_path / "runs").rglob("summary.prev.json"))
    assert len(reopened) == 3 and all(n.endswith("-s1") for n in reopened)


def test_a_family_whose_rate_is_chosen_trains_its_seeds_beside_another_familys_sweep(tmp_path, fake_ensure, capsys):
    """A family's rate depends on its own sweep only: Sessa's sweep is finished (one rate, so chosen), the
    others' are not; the round holds their sweep runs and Sessa's seed 1 side by side (the lease of
    2026-11-30: Mamba2's last sweep run would otherwise have kept the seeds of the other two waiting a lease)."""
    finish(cell(EXP, "sessa", overrides(tmp_path, "[0.001]"), "val/acc"), 0.001, 0)
    with pytest.raises(Trained):
        run_protocol(tmp_path, "[0.001]")
    assert capsys.readouterr().out.startswith("sweep, seeds and extensions: 3 runs\n")
    (todo,) = fake_ensure
    got = sorted((next(o for o in ov if o.startswith("model=")), next(o for o in ov if o.startswith("seed=")))
                 for ov in todo)
    assert got == [("model=mamba2", "seed=0"), ("model=sessa", "seed=1"), ("model=transformer", "seed=0")], got


def sweep_rates(todo: list[list[str]], family: str) -> list[str]:
    return sorted(next(o for o in ov if o.startswith("optim.lr=")) for ov in todo if f"model={family}" in ov)


def test_a_best_rate_at_the_grids_edge_trains_its_extension_beside_the_rates_still_missing(tmp_path, fake_ensure):
    """The long column, 2026-12-01: Sessa's 1e-4 beat 3e-4 while 1e-3 was still to train. Unless 1e-3 wins,
    the edge rule will ask for 3.3e-5, so it trains in the same round (a lease earlier); the choice is the
    rule's either way: a missing rate that wins leaves the early run out of the grid."""
    grid = "[0.001,0.003,0.01]"
    c = cell(EXP, "sessa", overrides(tmp_path, grid), "val/acc")
    finish(c, 0.001, 0)
    finish(c, 0.003, 0, gain=0.5)
    with pytest.raises(Trained):
        run_protocol(tmp_path, grid)
    (todo,) = fake_ensure
    assert sweep_rates(todo, "sessa") == ["optim.lr=0.00033", "optim.lr=0.01"]
    assert len(sweep_rates(todo, "transformer")) == 3  # nothing scored: nothing early
    chosen, tried, _, left = c.selection()
    assert (chosen, tried, left) == (None, [0.001, 0.003, 0.01], [0.01, 0.00033])

    finish(c, 0.00033, 0, gain=1.2)  # the early run wins too: the next one past it goes early as well
    assert c.selection()[3] == [0.01, 0.00011]
    finish(c, 0.00011, 0, gain=0.9)
    assert c.selection()[3] == [0.01]  # the edge moved inward: nothing more (two extensions at most anyway)
    finish(c, 0.01, 0, gain=0.2)
    assert c.selection()[::3] == (0.00033, [])
    assert c.selection()[1] == [0.00011, 0.00033, 0.001, 0.003, 0.01]


def test_a_missing_rate_that_wins_leaves_the_early_run_out_of_the_grid(tmp_path):
    grid = "[0.001,0.003,0.01]"
    c = cell(EXP, "sessa", overrides(tmp_path, grid), "val/acc")
    for lr, gain in ((0.001, 1.0), (0.003, 0.5), (0.00033, 1.1), (0.01, 1.5)):
        finish(c, lr, 0, gain=gain)
    chosen, tried, scores, left = c.selection()
    assert (chosen, tried, left) == (None, [0.001, 0.003, 0.01, 0.03], [0.03])  # the upper edge won: 3e-2
    assert 0.00033 not in scores  # better than 0.001, but not a rate the rule asked for


def RunFolder_name(ov: list[str]) -> str:
    return _compose(tuple(ov))[1]["run_name"]  # the folder name (composed once by the protocol, cached)


def test_protocol_starts_an_extension_round_that_fits_and_reopens_its_folders(
        tmp_path, unconverged, fake_ensure, capsys):
    with pytest.raises(Trained):
        run_protocol(tmp_path, "[0.001]", time_limit=400)
    out = capsys.readouterr().out
    m = re.search(r"^seeds and extensions: 6 runs \(time limit: ~360 s estimated, (\d+) s left\)$", out, re.M)
    assert m and 360 < int(m[1]) <= 400, out
    (todo,) = fake_ensure
    assert len(todo) == 6 and all(f"trainer.max_steps={2 * STEPS}" in ov for ov in todo)
    assert len(list(unconverged.rglob("summary.prev.json"))) == 6 and not list(unconverged.rglob("summary.json"))


def test_without_a_time_limit_nothing_changes(tmp_path, unconverged, fake_ensure, capsys):
    with pytest.raises(Trained):
        run_protocol(tmp_path, "[0.001]")
    assert "seeds and extensions: 6 runs\n" in capsys.readouterr().out and len(fake_ensure[0]) == 6


def test_a_sweep_round_is_timed_by_each_familys_runs(tmp_path, fake_ensure, capsys):
    """Rate 0.001 finished for every family, 0.01 missing: six sweep runs of 100 steps (0.01, and 0.00033
    early, since 0.001 is the best so far at the grid's lower edge), each at its family's pace, the round at
    Sessa's 1.5 s."""
    for f in FAMS:
        finish(cell(EXP, f, overrides(tmp_path, "[0.001,0.01]"), "val/acc"), 0.001, 0)
    before = snapshot(tmp_path / "runs")
    run_protocol(tmp_path, "[0.001,0.01]", time_limit=110)  # not even one 100 s run, x1.2
    out = capsys.readouterr().out
    assert "time limit: the next round (6 runs, ~180 s estimated) does not fit in the" in out, out
    assert fake_ensure == [] and snapshot(tmp_path / "runs") == before
    run_protocol(tmp_path, "[0.001,0.01]", plan=True)
    times = dict(re.findall(r"^  (\w+)-\S+: 100 steps from step 0; ~(\d+) s$", capsys.readouterr().out, re.M))
    assert times == {"sessa": "150", "transformer": "100", "mamba2": "100"}


def test_a_round_with_no_timing_yet_starts(tmp_path, fake_ensure, capsys):
    with pytest.raises(Trained):
        run_protocol(tmp_path, "[0.001]", time_limit=60)
    m = re.search(r"^sweep: 3 runs \(time limit: no timing yet, (\d+) s left\)$", capsys.readouterr().out, re.M)
    assert m and 10 < int(m[1]) <= 60
    assert len(fake_ensure[0]) == 3


def test_a_cap_between_two_doublings_is_the_last_extension(tmp_path, unconverged, fake_ensure):
    """Unconverged runs of STEPS steps with a cap of 1.5 x STEPS are extended to the cap (a lease that fits
    1.5 x but not 2 x can still take the step); with the cap at STEPS nothing is left to train."""
    scoped = {EXP: overrides(tmp_path, "[0.001]")}
    protocol(TABLES["table1"], [0, 1], scoped, jobs=6, max_steps_cap=STEPS, only=[EXP])
    assert fake_ensure == []
    with pytest.raises(Trained):
        protocol(TABLES["table1"], [0, 1], scoped, jobs=6, max_steps_cap=3 * STEPS // 2, only=[EXP])
    (todo,) = fake_ensure
    assert len(todo) == 6 and all(f"trainer.max_steps={3 * STEPS // 2}" in ov for ov in todo)


def test_the_experiments_own_cap_stops_extensions_unless_the_flag_overrides_it(tmp_path, unconverged,
                                                                              fake_ensure):
    """sweep.max_steps_cap in the experiment's config is the cap when --max-steps-cap is not given (Table 1's
    long column cannot finish a 16000-step run in one lease): at STEPS nothing is left to train; the flag
    still overrides it."""
    scoped = {EXP: overrides(tmp_path, "[0.001]") + [f"sweep.max_steps_cap={STEPS}"]}
    protocol(TABLES["table1"], [0, 1], scoped, jobs=6, only=[EXP])
    assert fake_ensure == []
    with pytest.raises(Trained):
        protocol(TABLES["table1"], [0, 1], scoped, jobs=6, max_steps_cap=2 * STEPS, only=[EXP])
    (todo,) = fake_ensure
    assert len(todo) == 6 and all(f"trainer.max_steps={2 * STEPS}" in ov for ov in todo)


def test_table1_caps_and_a_bad_cap():
    from sessa_bench.report.protocol import cap_of

    caps = {e: cell(e, "sessa", [], "val/acc").max_steps
            for e in ("table1_symbol_soup", "table1_symbol_soup_long", "table1_diffuse_mqar")}
    assert caps == {"table1_symbol_soup": 16000, "table1_symbol_soup_long": 4000, "table1_diffuse_mqar": 16000}
    assert cell("table2_simplestories", "sessa", [], "val/ppl").max_steps == 4 * 3000  # no cap: 4x the grid's
    for bad in (0, 2.5, "many", True):
        with pytest.raises(ValueError, match=r"sweep.max_steps_cap=.*: must be a positive integer \(steps\)"):
            cap_of({"max_steps_cap": bad})


def test_a_raised_grid_length_extends_the_sweep_runs(tmp_path, fake_ensure, capsys):
    """The experiment's step count raised from STEPS to 2 x STEPS after its sweep finished: the sweep runs
    are extended (reopened, then trained; ensure would skip them as finished otherwise, and the sweep would
    never end), each timed at its own pace: with its checkpoint, STEPS more steps; without, 2 x STEPS."""
    for f in FAMS:  # Sessa's folder (1.5 s/step) lost its checkpoint: it retrains from step 0
        finish(cell(EXP, f, overrides(tmp_path, "[0.001]"), "val/acc"), 0.001, 0, checkpoint=f != "sessa")
    longer = [o.replace(f"trainer.max_steps={STEPS}", f"trainer.max_steps={2 * STEPS}")
              for o in overrides(tmp_path, "[0.001]")]
    with pytest.raises(Trained):
        protocol(TABLES["table1"], [0, 1], {EXP: longer}, jobs=6, only=[EXP], time_limit=1000)
    out = capsys.readouterr().out
    assert "sweep: 3 runs (time limit: ~360 s estimated" in out, out  # Sessa: 200 steps at 1.5 s, x1.2
    (todo,) = fake_ensure
    assert len(todo) == 3 and all(f"trainer.max_steps={2 * STEPS}" in ov for ov in todo)
    root = tmp_path / "runs" / EXP
    assert len(list(root.rglob("summary.prev.json"))) == 3 and not list(root.rglob("summary.json"))


def test_a_pace_scales_with_the_runs_sharing_the_gpu():
    """Measured with 9 runs on the GPU, 0.7 s/step: with 7 the pace is 7/9 of it, with 18 twice; with 1 it is
    not 1/9 (one run does not get a saturated GPU's whole throughput) but the floor; unknown counts: as is."""
    s = {**summary(1000, 700.0), "placement": {"gpu": 0, "runs_on_gpu": 9}}
    assert pace(own=s, runs_per_gpu=7) == pytest.approx(0.7 * 7 / 9)
    assert pace(own=s, runs_per_gpu=18) == pytest.approx(1.4)
    assert pace(own=s, runs_per_gpu=1) == pytest.approx(0.7 * SHARING_FLOOR)
    assert pace(own=s) == pace(own=summary(1000, 700.0), runs_per_gpu=7) == pytest.approx(0.7)
    assert run_seconds(2000, s, resumable=False, runs_per_gpu=7) == pytest.approx(1400 * 7 / 9)


def test_runs_sharing_a_gpu_through_mps_are_timed_at_its_measured_gain(monkeypatch):
    """Two runs on a GPU through MPS train 1.32x what they do time-sliced: a pace measured time-sliced
    (2 runs) times an MPS round of 2 at 1/1.32 of it, and an MPS-measured pace times a time-sliced round of 2
    at 1.32x; one run alone is the same either way. The round's MPS is the table step's (an MPS client)."""
    from sessa_bench.report.timing import MPS_GAIN, sharing
    sliced = {**summary(1000, 800.0), "placement": {"gpu": 0, "runs_on_gpu": 2}}
    mps = {**summary(1000, 800.0), "placement": {"gpu": 0, "runs_on_gpu": 2, "mps": True}}
    assert sharing(sliced, 2, mps=True) == pytest.approx(1 / MPS_GAIN)
    assert sharing(mps, 2, mps=False) == pytest.approx(MPS_GAIN)
    assert sharing(mps, 2, mps=True) == sharing(sliced, 2, mps=False) == 1.0
    assert sharing(mps, 1, mps=True) == pytest.approx(max(MPS_GAIN / 2, SHARING_FLOOR))
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    assert pace(own=sliced, runs_per_gpu=2) == pytest.approx(0.8)
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", "/tmp/mps-pipe")
    assert pace(own=sliced, runs_per_gpu=2) == pytest.approx(0.8 / MPS_GAIN)


def test_processes_beside_the_table_runs_are_counted_time_sliced(monkeypatch):
    """Lease 14: two Diffuse MQAR runs per GPU, time-sliced, with one Bible run beside them on each GPU took
    1.45-1.65x the estimates, which counted the two runs only: `--beside 1` counts 3 (1.5x). Through MPS the
    runs' one context time-slices with the process beside it. A pace measured beside others is scaled back."""
    from sessa_bench.report.timing import MPS_GAIN, sharing
    from sessa_bench.run_folder import ENV_BESIDE
    two = {**summary(1000, 800.0), "placement": {"gpu": 0, "runs_on_gpu": 2}}
    assert sharing(two, 2, mps=False, beside=1) == pytest.approx(1.5)
    assert sharing(two, 2, mps=True, beside=1) == pytest.approx(2 / MPS_GAIN * 2 / 2)
    assert sharing(two, 1, mps=True, beside=1) == pytest.approx(1.0)  # one run and one beside: two slices
    measured_beside = {**summary(1000, 1200.0), "placement": {"gpu": 0, "runs_on_gpu": 2, "beside": 1}}
    assert sharing(measured_beside, 2, mps=False, beside=0) == pytest.approx(2 / 3)
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    monkeypatch.setenv(ENV_BESIDE, "1")  # what `tables --beside 1` sets for its estimates and its workers
    assert pace(own=two, runs_per_gpu=2) == pytest.approx(1.2)


def test_beside_flag_reaches_the_plan_and_a_bad_one_is_one_line(tmp_path, unconverged, fake_ensure, capsys,
                                                                monkeypatch):
    import os

    from sessa_bench.run_folder import ENV_BESIDE
    from sessa_bench.tables import main
    monkeypatch.setenv(ENV_BESIDE, "0")  # recorded, so main()'s own setting is undone after the test
    monkeypatch.setattr("sessa_bench.runs.visible_gpus", lambda: ["0", "1"])
    with pytest.raises(SystemExit):
        main(["table1", "--plan", "--beside", "-1"])
    assert "--beside -1: must be a count of processes, 0 or more" in capsys.readouterr().err
    main(["table1", "--plan", "--beside", "2", "--experiments", EXP, "--jobs-per-gpu", "3", "--results-dir",
          str(unconverged), "--out-dir", str(tmp_path / "out"), *overrides(tmp_path, "[0.001]")[1:]])
    out = capsys.readouterr().out
    assert out.startswith("plan: the next round is the seeds and extensions, 6 runs, 6 at a time, 3 sharing the "
                          "busiest GPU with 2 more processes beside them\n"), out
    assert "no GPU visible" not in out
    assert os.environ[ENV_BESIDE] == "2" and fake_ensure == []


def test_the_pace_measured_nearest_the_rounds_sharing_times_it():
    """The lease of 2026-11-29 (session 6): Mamba2's seed 0 trained 2000 steps in 1072 s beside 6 more runs,
    its seed 1 in 742 s beside 3 more. For a round of 2 runs sharing the GPU, seed 1's pace (measured at 4)
    scales less far than seed 0's (at 7, which the sharing floor would keep at 0.6 x 0.536 s/step)."""
    s0 = {**summary(2000, 1072.0), "placement": {"runs_on_gpu": 7}}
    s1 = {**summary(2000, 742.0), "placement": {"runs_on_gpu": 4}}
    assert pace(own=s0, cell=[s0, s1], runs_per_gpu=2) == pytest.approx(0.371 * SHARING_FLOOR)
    assert pace(own=s0, cell=[s0, s1], runs_per_gpu=7) == pytest.approx(0.536)
    # equally far (4 and 16 from 8): the slower at the round's sharing
    s2 = {**summary(2000, 1600.0), "placement": {"runs_on_gpu": 16}}
    assert pace(cell=[s1, s2], runs_per_gpu=8) == pytest.approx(max(0.371 * 2, 0.8 / 2))


def test_only_runs_trained_alike_time_a_run_when_there_are_any():
    """A compiled or graphed run trains up to 2x faster: its pace must not time an eager run; an eager one
    times a compiled run only when no compiled run is finished (it leans long)."""
    eager, fast = summary(1000, 500.0), {**summary(1000, 250.0), "compile": True}
    graphed = {**summary(1000, 100.0), "cuda_graphs": True}
    assert pace(cell=[eager, fast, graphed], how="eager") == 0.5
    assert pace(cell=[eager, fast, graphed], how="cuda_graphs") == 0.1
    assert pace(cell=[eager, fast], how="eager") == pace(cell=[eager, fast]) == 0.5
    assert pace(cell=[eager, fast], how="compile") == 0.25
    assert pace(cell=[eager], how="compile") == 0.5
    assert run_seconds(1000, experiment=[eager, fast], how="compile") == 250.0
    # --pace: an eager pace timing a graphed run is scaled by the measured ratio; a graphed run's own pace is not
    assert pace(cell=[eager], how="cuda_graphs", fallback=0.5) == 0.25
    assert pace(cell=[eager, graphed], how="cuda_graphs", fallback=0.5) == 0.1
    assert pace(experiment=[eager], how="cuda_graphs", fallback=0.5) == 0.25
    assert pace(cell=[eager], how="eager", fallback=0.5) == 0.5
    assert run_seconds(1000, cell=[eager], how="cuda_graphs", fallback=0.5) == 250.0


def test_pace_flag_values_are_checked_and_the_family_one_wins():
    from sessa_bench.tables import pace_factor, parse_pace
    p = parse_pace(["sessa:cuda_graphs=0.5", "cuda_graphs=0.8", "compile=0.6"])
    assert p == {"sessa:cuda_graphs": 0.5, "cuda_graphs": 0.8, "compile": 0.6}
    assert pace_factor(p, "sessa", "cuda_graphs") == 0.5 and pace_factor(p, "mamba2", "cuda_graphs") == 0.8
    assert pace_factor(p, "mamba2", "eager") == 1.0 and pace_factor(None, "sessa", "compile") == 1.0
    for bad in ("sessa:graphs=0.5", "mamba:cuda_graphs=0.5", "cuda_graphs=0", "cuda_graphs=fast", "eager=0.5",
                "mamba2:conv=0.8", "mamba2:conv_triton=-1"):
        with pytest.raises(ValueError, match=r"^--pace .*must be \[family:\]execution=factor"):
            parse_pace([bad])
    from sessa_bench.tables import backend_pace
    p = parse_pace(["mamba2:conv_triton=0.7", "conv_triton=0.9", "cuda_graphs=0.5"])
    assert backend_pace(p, "mamba2") == ("conv_triton", 0.7) and backend_pace(p, "sessa") == ("conv_triton", 0.9)
    assert backend_pace(parse_pace(["cuda_graphs=0.5"]), "mamba2") is None and backend_pace(None, "mamba2") is None


def test_a_faster_backend_scales_the_pace_of_runs_without_it_until_one_with_it_times_it():
    """Lease 21: Mamba2's long 1e-4 run trained with conv1d; its fused conv (1.45x a graphed step) came after.
    --pace mamba2:conv_triton=F scales the pace of runs that did not record it; once a run that did is
    finished, it alone times the rest, unscaled; the start-up is never scaled."""
    old = {**summary(1000, 500.0), "cuda_graphs": True, "backends": ["mamba_ssm"]}
    new = {**summary(1000, 300.0), "cuda_graphs": True, "backends": ["mamba_ssm+conv_triton"]}
    eager_new = {**summary(1000, 200.0), "backends": ["mamba_ssm+conv_triton"]}
    conv = ("conv_triton", 0.5)
    assert pace(cell=[old], how="cuda_graphs", backend=conv) == 0.25
    assert pace(cell=[old, new], how="cuda_graphs", backend=conv) == 0.3
    assert pace(cell=[old], how="cuda_graphs") == 0.5  # without the flag, unchanged
    # execution first: an eager run with the kernel does not time a graphed one while a graphed run exists
    assert pace(cell=[old, eager_new], how="cuda_graphs", backend=conv) == 0.25
    # both factors when neither matches: an eager pace without the kernel for a graphed run with it
    assert pace(experiment=[{**old, "cuda_graphs": False}], how="cuda_graphs", fallback=0.8, backend=conv) == 0.2
    started = {**old, **summary(1000, 600.0), "startup_seconds": 100.0}  # (600 - 100) s / 1000 steps
    assert run_seconds(1000, cell=[started], how="cuda_graphs", backend=conv) == pytest.approx(100.0 + 250.0)


def test_plan_prints_the_next_round_and_changes_nothing(tmp_path, unconverged, fake_ensure, capsys):
    """--plan: the round --run would start (each run, what it trains, its estimate; the round against the
    clock), then stop: nothing trains, no folder is reopened. Seed 0 resumes (STEPS more at its pace), seed 1
    retrains 2 x STEPS; the round is Sessa's seed 1 (300 s) x 1.2; all runs but that one fit (200 s x 1.2)."""
    before = snapshot(unconverged)
    run_protocol(tmp_path, "[0.001]", time_limit=300, plan=True)
    out = capsys.readouterr().out
    assert fake_ensure == [] and snapshot(unconverged) == before
    assert out.startswith("plan: the next round is the seeds and extensions, 6 runs, 6 at a time\n"
                          "  (no GPU visible: each run at the GPU sharing it was timed at;"), out
    assert re.search(r"^  sessa-\S+-s0: extend 100 -> 200 steps, resumed from its checkpoint; ~150 s$", out, re.M)
    assert re.search(r"^  sessa-\S+-s1: extend 100 -> 200 steps, retrained from step 0 \(no checkpoint\); ~300 s$",
                     out, re.M)
    m = re.search(r"^  round: ~360 s \(x1.2 safety included\); (\d+) s of --time-limit left: does not fit; 5 of "
                  r"its runs do \(~240 s\) and start, the rest waits: sessa-symbol_soup-tiny-lr0.001-s1$", out, re.M)
    assert m and 250 < int(m[1]) <= 300, out
    assert re.search(r"^  sessa-\S+-s0.*\n  transformer-\S+-s0.*\n  mamba2-\S+-s0", out, re.M), out  # interleaved
    run_protocol(tmp_path, "[0.001]", time_limit=100, plan=True)
    assert "left: does not fit, nor does any part of it\n" in capsys.readouterr().out
    run_protocol(tmp_path, "[0.001]", plan=True)  # no clock: the estimate alone
    assert re.search(r"^  round: ~360 s \(x1.2 safety included\)$", capsys.readouterr().out, re.M)


def test_plan_of_a_sweep_and_of_nothing_left(tmp_path, fake_ensure, capsys):
    # no finished run to time a first sweep: the plan says so rather than "fits"
    run_protocol(tmp_path, "[0.001,0.01]", time_limit=300, plan=True)
    assert re.search(r"^  round: ~\? s \(x1.2 safety included\); \d+ s of --time-limit left: no estimate yet \(no "
                     r"finished run times this round\), so every run starts; one still going at the limit is cut and "
                     r"not kept$", capsys.readouterr().out, re.M)
    for f in FAMS:
        finish(cell(EXP, f, overrides(tmp_path, "[0.001,0.01]"), "val/acc"), 0.001, 0)
    run_protocol(tmp_path, "[0.001,0.01]", plan=True)
    out = capsys.readouterr().out
    assert out.startswith("plan: the next round is the sweep, 6 runs") and out.count(": 100 steps from step 0;") == 3
    early = re.findall(r"^  (\w+)-symbol_soup-tiny-lr0.00033-s0: 100 steps from step 0 \(early: past the grid's "
                       r"edge, asked for unless a rate still missing wins\); ~\d+ s$", out, re.M)
    assert sorted(early) == sorted(FAMS), out
    scoped = {EXP: overrides(tmp_path, "[0.001]")}  # the cap at STEPS: nothing to extend, nothing to seed
    for f in FAMS:
        finish(cell(EXP, f, scoped[EXP], "val/acc"), 0.001, 1)
    protocol(TABLES["table1"], [0, 1], scoped, jobs=6, max_steps_cap=STEPS, only=[EXP], plan=True)
    assert capsys.readouterr().out == "plan: nothing left to train (every cell is finished, converged or at its cap)\n"
    assert fake_ensure == []


def test_plan_cli_writes_no_table(tmp_path, unconverged, fake_ensure, capsys):
    from sessa_bench.tables import main

    main(["table1", "--plan", "--experiments", EXP, "--jobs", "6", "--results-dir", str(unconverged),
          "--out-dir", str(tmp_path / "out"), *overrides(tmp_path, "[0.001]")[1:]])
    assert capsys.readouterr().out.startswith("plan: the next round is the seeds and extensions, 6 runs")
    assert not (tmp_path / "out").exists() and fake_ensure == []
    with pytest.raises(SystemExit):
        main(["table1", "--plan", "--run"])
    assert "--plan shows what --run would do next" in capsys.readouterr().err


def test_a_round_that_trains_nothing_stops_the_protocol_instead_of_looping(tmp_path, unconverged, monkeypatch):
    """An ensure that leaves its runs as they were (here: it puts back the summaries that reopening moved
    aside, as if it had skipped finished folders): the protocol would ask for the same runs forever; it
    raises instead."""
    def ensure(todo, jobs=1, **kw):
        for prev in unconverged.rglob("summary.prev.json"):
            prev.replace(prev.with_name("summary.json"))
        return []

    monkeypatch.setattr("sessa_bench.runs.ensure", ensure)
    with pytest.raises(RuntimeError, match=r"^the tables protocol asks for the same 6 runs again after training "
                                           r"them \(.*\): a bug, stopping instead of looping$"):
        run_protocol(tmp_path, "[0.001]")


def test_ensure_times_only_the_runs_that_wait_for_a_slot(tmp_path, unconverged):
    """One slot: Sessa's seed 0 (resumed, 150 s) starts at once, as admitted; seed 1 (retrained, 300 s) waits,
    and is timed when its turn comes (x1.2), from the runs finished by then."""
    from sessa_bench.tables import Clock, seed_runs

    c = cell(EXP, "sessa", overrides(tmp_path, "[0.001]"), "val/acc")
    todo = seed_runs(c, [0, 1], 4 * STEPS)
    est = Clock(1000, None, 1, None).run_estimate(todo)
    assert est(todo[0].run.overrides) is None and est(todo[1].run.overrides) == pytest.approx(360.0)


def test_a_cell_whose_sweep_run_was_reopened_meanwhile_waits_for_the_sweep(tmp_path, unconverged):
    """Another process reopened Sessa's seed-0 run (its chosen rate's sweep run) to extend it while this round
    trained: its rate is not chosen any more, so the seeds step has nothing for that cell until the sweep step
    of a rerun finishes it (it built `optim.lr=None` and stopped the whole table step: a lease in session 16)."""
    from sessa_bench.tables import seed_runs

    c = cell(EXP, "sessa", overrides(tmp_path, "[0.001]"), "val/acc")
    assert len(seed_runs(c, [0, 1], 4 * STEPS)) == 2
    c.run(0.001, 0).folder.reopen(_compose((f"experiment={EXP}", "model=sessa", "seed=0",
                                            *c.overrides, "optim.lr=0.001", f"trainer.max_steps={2 * STEPS}"))[0])
    assert c.selection()[0] is None and seed_runs(c, [0, 1], 4 * STEPS) == []
