"""The paper-table protocol: learning-rate selection with edge extension, and the convergence rule, on
synthetic scores and metrics written out by hand; then one tiny real sweep (two families, best-checkpoint LM
config) whose choices, extensions and best checkpoints are checked against the run folders directly."""

import json
import math
from pathlib import Path

import pytest

from sessa_bench.report.protocol import convergence, select_lr
from sessa_bench.tables import build

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "simplestories"


# --- selection --------------------------------------------------------------------------------------------
def test_interior_winner_needs_no_extension():
    assert select_lr([1e-4, 3e-4, 1e-3], {1e-4: 0.30, 3e-4: 0.41, 1e-3: 0.05}, "max") == (3e-4, [1e-4, 3e-4, 1e-3], [])


def test_missing_runs_are_asked_for_first():
    assert select_lr([1e-4, 3e-4, 1e-3], {1e-4: 0.3}, "max") == (None, [1e-4, 3e-4, 1e-3], [3e-4, 1e-3])


def test_edge_winner_extends_the_grid_at_most_twice():
    grid = [1e-4, 3e-4, 1e-3]
    # the top edge wins: 3e-3 is asked for next
    assert select_lr(grid, {1e-4: 0.1, 3e-4: 0.2, 1e-3: 0.3}, "max") == (None, [1e-4, 3e-4, 1e-3, 3e-3], [3e-3])
    # 3e-3 wins again: 9e-3 next; it wins too, but two extensions are the limit
    s = {1e-4: 0.1, 3e-4: 0.2, 1e-3: 0.3, 3e-3: 0.4}
    assert select_lr(grid, s, "max")[2] == [9e-3]
    s[9e-3] = 0.5
    assert select_lr(grid, s, "max") == (9e-3, [1e-4, 3e-4, 1e-3, 3e-3, 9e-3], [])
    # the bottom edge wins (perplexity, lower is better): 1e-4 / 3 = 3.3e-05, rounded to 2 digits
    low = {1e-4: 7.0, 3e-4: 8.0, 1e-3: 9.0}
    assert select_lr(grid, low, "min") == (None, [3.3e-05, 1e-4, 3e-4, 1e-3], [3.3e-05])
    low[3.3e-05] = 7.5  # the extension loses: the old edge stays chosen
    assert select_lr(grid, low, "min")[0] == 1e-4


def test_a_rate_still_at_the_grids_end_after_its_extensions_is_marked():
    from types import SimpleNamespace
    from sessa_bench.report.paper import chosen_text
    c = SimpleNamespace(tried={"a": {1e-4: 30.0, 3e-4: 29.0, 1e-3: 28.0}, "b": {1e-4: 30.0, 3e-4: 28.0, 1e-3: 29.0},
                               "c": {1e-3: 28.0}, "d": {1e-4: None, 3e-4: None}},
                        chosen={"a": 1e-3, "b": 3e-4, "c": 1e-3, "d": None})
    assert chosen_text(c, "a") == "0.001 (grid edge)"
    assert chosen_text(c, "b") == "0.0003"  # inside the grid
    assert chosen_text(c, "c") == "0.001"  # a single rate is simply the rate (select_lr's rule)
    assert chosen_text(c, "d") == "?"


def test_a_cell_whose_sweep_is_under_way_says_so_instead_of_not_run():
    from types import SimpleNamespace
    from sessa_bench.report.paper import missing_text
    c = SimpleNamespace(tried={"a": {1e-4: 0.85, 3e-4: 0.62, 1e-3: None}, "b": {1e-4: None, 3e-4: None},
                               "c": {}, "d": {1e-4: 0.3, 3e-4: 0.4}},
                        chosen={"a": None, "b": None, "c": None, "d": 3e-4})
    assert missing_text(c, "a") == "sweep: 2 of 3 rates"
    assert missing_text(c, "b") == "not run"  # nothing scored yet
    assert missing_text(c, "c") == "not run"
    assert missing_text(c, "d") == "not run"  # chosen: its seeds are what is missing


def test_diverged_runs_lose_and_ties_go_to_the_smaller_rate():
    assert select_lr([1e-4, 3e-4, 1e-3], {1e-4: math.inf, 3e-4: 7.0, 1e-3: math.nan}, "min")[0] == 3e-4
    assert select_lr([1e-4, 3e-4, 1e-3], {1e-4: 0.2, 3e-4: 0.3, 1e-3: 0.3}, "max")[0] == 3e-4
    assert select_lr([1e-3], {1e-3: 0.5}, "max") == (1e-3, [1e-3], [])  # one rate: no edge rule


# --- convergence -------------------------------------------------------------------------------------------
def rows(metric, pts):
    return [{"step": s, "train/loss": 1.0} for s, _ in pts] + [{"step": s, metric: v} for s, v in pts]


@pytest.mark.parametrize("pts, steps, expect", [
    # 1000 steps: the window is the validation at 750 (last at or before 3/4) and those after it
    ([(250, 0.2), (500, 0.5), (750, 0.600), (1000, 0.609)], 1000, True),
    ([(250, 0.2), (500, 0.5), (750, 0.600), (1000, 0.611)], 1000, False),
    ([(250, 0.2), (500, 0.6), (600, 0.62), (1000, 0.605)], 1000, False),  # 600 is the reference: 0.015
    ([(250, 0.2), (500, 0.6), (750, 0.65), (875, 0.645), (1000, 0.654)], 1000, True),
    ([(1000, 0.6)], 1000, False),  # one point: unknown, so not converged
])
def test_accuracy_rule(pts, steps, expect):
    assert convergence(rows("val/acc", pts), "val/acc", steps)[0] is expect


def test_a_flat_curve_at_the_trivial_level_is_a_plateau_not_convergence():
    """SymbolSoup's small models sit at the symbol-count baseline (0.31) long before they learn the blocks."""
    from sessa_bench.report.protocol import trivial_level
    flat = rows("val/acc", [(500, 0.300), (750, 0.305), (1000, 0.309)])
    assert convergence(flat, "val/acc", 1000)[0]                      # no trivial level known: converged
    assert not convergence(flat, "val/acc", 1000, trivial=0.31)[0]    # at the baseline: a plateau
    assert convergence(flat, "val/acc", 1000, trivial=0.05)[0]        # well above chance: converged
    assert trivial_level({"chance": 0.05, "baseline": 0.31}) == 0.31 and trivial_level({"chance": 0.05}) == 0.05
    assert trivial_level({"chance": None, "baseline": None}) is None and trivial_level(None) is None
    ppl = rows("val/ppl", [(750, 10.02), (1000, 10.0)])
    assert convergence(ppl, "val/ppl", 1000, trivial=0.31)[0]         # perplexities have no trivial level here


def test_a_run_retrained_to_be_extended_is_scored_from_its_first_training():
    """Its first 1000 steps are not bit-identical the second time (GPU nondeterminism): the sweep's choice
    must not move when the chosen run is retrained to 2000 steps, nor when it is retrained again to 4000."""
    from sessa_bench.report.protocol import Cell, Run
    c = Cell("e", "f", [], "val/acc", [1e-4, 3e-4], 1e-4, 1000, True, False)
    first = rows("val/acc", [(999, 0.303)])  # a training of 1000 steps logs its last validation at step 999
    r = Run(1e-4, 0, [], None, 2000, summary={"steps": 2000},
            rows=rows("val/acc", [(999, 0.296), (1999, 0.40)]), earlier=[first])
    assert c.score(r) == 0.303
    r.earlier = []
    assert c.score(r) == 0.296
    # a grid of 2000 steps (the experiment's step count raised): the first training never got there, so the
    # run is scored at 2000 from its current lines, like the rates trained to 2000 from the start ...
    c.steps, r.earlier = 2000, [first]
    assert c.score(r) == 0.40
    # ... and once it has been retrained again (to 4000), from the 2000-step training it was chosen from
    r.rows, r.earlier = rows("val/acc", [(1999, 0.35), (3999, 0.45)]), [first, rows("val/acc", [(1999, 0.40)])]
    assert c.score(r) == 0.40


def test_retrains_keep_every_finished_training(tmp_path):
    """keep_training (before a retrain from step 0) appends the finished training's lines, tagged with its
    step count; a retrain killed before its first checkpoint and started again keeps nothing more."""
    import json
    from sessa_bench.run_folder import RunFolder
    f = RunFolder(tmp_path / "run")
    f.path.mkdir()
    f.metrics_prev.write_text(json.dumps({"step": 999, "val/acc": 0.30}) + "\n")  # untagged: the first training
    f.metrics.write_text("".join(json.dumps({"step": s, "val/acc": a}) + "\n" for s, a in [(999, .31), (1999, .36)]))
    f.previous.write_text(json.dumps({"steps": 2000}))
    f.keep_training()
    assert not f.metrics.exists()
    assert f.earlier_trainings() == [[{"step": 999, "val/acc": 0.30}],
                                     [{"step": 999, "val/acc": .31, "training_steps": 2000},
                                      {"step": 1999, "val/acc": .36, "training_steps": 2000}]]
    f.metrics.write_text(json.dumps({"step": 249, "val/acc": 0.1}) + "\n")  # the killed retrain's lines
    f.keep_training()
    assert not f.metrics.exists() and len(f.earlier_trainings()) == 2


def test_perplexity_rule_is_relative_and_best_so_far_for_best_checkpoints():
    assert convergence(rows("val/ppl", [(500, 12.0), (750, 10.05), (1000, 10.0)]), "val/ppl", 1000) == \
        (True, pytest.approx(0.005))
    assert not convergence(rows("val/ppl", [(750, 10.2), (1000, 10.0)]), "val/ppl", 1000)[0]
    overfit = rows("val/ppl", [(250, 20.0), (500, 9.0), (750, 9.5), (1000, 11.0)])
    assert not convergence(overfit, "val/ppl", 1000)[0]       # the last weights got worse
    assert convergence(overfit, "val/ppl", 1000, best=True)[0]  # the best checkpoint stopped improving


def test_a_run_that_reports_its_last_model_is_unconverged_where_the_best_is_asked_for():
    """SymbolSoup's Sessa seed 1 (8000 steps, kept before the paper tables kept the best checkpoint): its best
    val/acc stopped moving at 0.631 (step 5000) while its last model fell to 0.598 and reported that. Under
    the best-checkpoint config the curve counts as converged but the run does not: its test is not from the
    best model. The sweep scores a rate by sweep.score (last or best validation up to the grid's steps)."""
    from sessa_bench.report.protocol import Cell, Run, score_of
    pts = [(4999, 0.631), (5999, 0.609), (6999, 0.618), (7999, 0.598)]
    c = Cell("e", "f", [], "val/acc", [1e-4], 1e-4, 8000, True, True)
    r = Run(1e-4, 1, [], None, 8000, rows=rows("val/acc", pts),
            summary={"steps": 8000, "test_from": "last", "task_facts": {"chance": 0.05, "baseline": 0.31}})
    assert c.converged(r) == (False, pytest.approx(0.0))
    r.summary["test_from"] = "best"
    assert c.converged(r)[0]
    c.best = False  # a config without the best checkpoint follows the last model's curve, which still moves
    assert c.converged(r) == (False, pytest.approx(0.020))  # 0.609, 0.618, 0.598 from step 6000
    c.best, c.steps = True, 8000
    assert c.score(r) == 0.631                           # best up to the grid's steps (the default with best)
    c.score_best = False
    assert c.score(r) == 0.598                           # sweep.score: last
    assert score_of({}) is None and score_of({"score": "best"}) is True and score_of({"score": "last"}) is False
    with pytest.raises(ValueError, match=r"^sweep.score='max': must be best or last$"):
        score_of({"score": "max"})


# --- one tiny real sweep -----------------------------------------------------------------------------------
TINY = ["probe=false", "budget=tiny", "trainer=cpu", "logger=none", "trainer.max_steps=2", "trainer.val_check_interval=1",
        "callbacks.checkpoint.every_n_steps=2", "trainer.enable_progress_bar=false", "data.batch_size=2",
        "data.eval_batch_size=64", "optim.warmup_steps=1", f"task.data_dir={FIXTURE}", "task.vocab_size=300",
        "task.seq_len=32", "task.tokenizer=tasks/tokenizers/simplestories-fixture-bpe300.json",
        "sweep.lr=[0.001,0.01]"]


def test_tiny_sweep_seeds_and_extensions(tmp_path, monkeypatch):
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))
    paths = build("ablation", [0, 1], [f"results_dir={tmp_path / 'runs'}", *TINY], run=True, out_dir=tmp_path,
                  plots=False, max_steps_cap=4)
    root = tmp_path / "runs" / "table2_simplestories"
    md = paths["md"].read_text()
    for fam in ("sessa", "sessa_nofb"):
        runs = {}
        for d in root.glob(f"{fam}-*"):
            s = json.loads((d / "summary.json").read_text())
            runs[(s["optim"]["lr"], s["seed"])] = (d, s)
        # the score of a sweep run: best val/ppl (best checkpoint) up to the grid's 2 steps
        def score(lr):
            d, s = runs[(lr, 0)]
            lines = (d / "metrics.jsonl").read_text().splitlines()[:s["fit_metrics_lines"]]
            return min(r["val/ppl"] for r in map(json.loads, lines) if "val/ppl" in r and r["step"] <= 2)
        # two rates: the first winner is at an edge, so the grid grows (twice at most) until one inside wins
        grid = [0.001, 0.01]
        for _ in range(2):
            best = min(grid, key=lambda x: (score(x), x))
            if best not in (min(grid), max(grid)):
                break
            grid = sorted([*grid, round(best * 3, 5) if best == max(grid) else float(f"{best / 3:.2g}")])
        assert len(grid) >= 3
        chosen = min(grid, key=lambda x: (score(x), x))
        assert sorted({lr for lr, seed in runs if seed == 0}) == grid
        assert {lr for lr, seed in runs if seed == 1} == {chosen}  # the other seed only at the chosen rate
        steps = {runs[(chosen, s)][1]["steps"] for s in (0, 1)}
        assert len(steps) == 1 and steps <= {2, 4}  # both seeds equally long, within the cap
        for seed in (0, 1):
            d, s = runs[(chosen, seed)]
            assert s["test_from"] == "best"
            lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()[:s["fit_metrics_lines"]]]
            val = {r["step"]: r["val/ppl"] for r in lines if "val/ppl" in r}
            best_step = min(val, key=lambda k: (val[k], k))
            # Lightning logs the validation run after trainer step k at step k - 1 (metrics.jsonl's "step")
            assert s["best_step"] == best_step + 1 and s["final"]["val/ppl"] == pytest.approx(val[best_step], rel=1e-6)
        (line,) = [ln for ln in md.splitlines() if ln.startswith(f"| {fam} | table2_simplestories |")]
        edge = " (grid edge)" if chosen in (min(grid), max(grid)) else ""  # grown twice, still the best at an end
        assert f"| {chosen:g}{edge} |" in line and f"{chosen:g}**: {score(chosen):.4f}" in line


# --- seeds per experiment ----------------------------------------------------------------------------------
def test_an_experiment_asks_for_its_own_seeds_and_the_command_line_overrides_them():
    from sessa_bench.report.protocol import Cell, cell, seeds_of
    assert seeds_of({}) is None and seeds_of({"seeds": [0, 1, 2]}) == [0, 1, 2]
    for bad in ([1, 2], [0, 0], [0, -1], "0 1", [0, True], []):
        with pytest.raises(ValueError, match=r"sweep\.seeds=.*: must be a list of distinct seeds \(integers >= 0\) "
                                             r"holding 0"):
            seeds_of({"seeds": bad})
    c = Cell("e", "f", [], "val/acc", [1e-4], 1e-4, 1000, True, False)
    assert c.seed_list(None) == [0, 1]                       # no sweep.seeds: the tables' default
    c.seeds = [0, 1, 2]
    assert c.seed_list(None) == [0, 1, 2] and c.seed_list([0]) == [0]  # --seeds wins
    # the committed experiments: Diffuse MQAR asks for three, SymbolSoup for the default
    assert cell("table1_diffuse_mqar", "sessa", [], "val/acc").seed_list(None) == [0, 1, 2]
    assert cell("table1_symbol_soup", "sessa", [], "val/acc").seed_list(None) == [0, 1]


def test_the_protocol_trains_and_the_table_reports_each_experiments_seeds(tmp_path):
    """Table 1's header names the column whose experiment has more seeds; its seed round asks for seed 2."""
    from types import SimpleNamespace
    from sessa_bench.report.paper import TABLES, seeds_text
    from sessa_bench.report.protocol import Cell
    from sessa_bench.tables import seed_runs
    t = TABLES["table1"]
    cells = {e: Cell(e, "sessa", [], "val/acc", [], 1e-4, 10, True, False,
                     seeds=[0, 1, 2] if e == "table1_diffuse_mqar" else None)
             for e in {col.experiment for col in t.columns}}
    got = {e: SimpleNamespace(cells={"sessa": c}) for e, c in cells.items()}
    assert seeds_text(t, got, None) == "0, 1 (Diffuse MQAR token accuracy: 0, 1, 2)"
    assert seeds_text(t, got, [0, 1, 2]) == "0, 1, 2"
    c = cells["table1_diffuse_mqar"]
    c.names = {"results_dir": str(tmp_path)}
    asked = []
    c.selection = lambda: (1e-4, [1e-4], {}, [])
    c.run = lambda lr, s, steps=None: asked.append(s) or SimpleNamespace(steps=10, summary=None, folder=None)
    import sessa_bench.tables as tables
    orig = tables.shorter_run
    tables.shorter_run = lambda r: None
    try:
        todo = seed_runs(c, c.seed_list(None), None)
    finally:
        tables.shorter_run = orig
    assert len(todo) == 3 and set(asked) == {0, 1, 2}
