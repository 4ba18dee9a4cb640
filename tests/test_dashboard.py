"""The dashboards, offline: the W&B workspace and reports are built and serialised (never uploaded), the
HTML page is opened in a real headless Chromium, and `sessa-bench wandb sync` finds runs and fails
clearly without credentials. Everything is checked against numbers computed here by hand from synthetic
run folders, not against the code's own output."""

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from sessa_bench.dashboard import browser
from sessa_bench.dashboard.spec import sections
from sessa_bench.report.paper import TABLES
from sessa_bench.run_folder import RunFolder

ROOT = Path(__file__).resolve().parent.parent
FAMS = ("sessa", "transformer", "mamba2")
# Table 1's experiments in its column order; D is Diffuse MQAR's index (the one with lag slices)
EXPS = {"table1_symbol_soup": ("symbol_soup", []), "table1_symbol_soup_long": ("symbol_soup", []),
        "table1_diffuse_mqar": ("diffuse_mqar", ["lag=32-63", "lag=64-127"])}
D = 2
STEPS = (10, 20, 30)


def acc(exp_i, fam_i, seed, key=""):
    return 0.1 * fam_i + 0.01 * seed + 0.001 * exp_i + 0.0001 * len(key)


def curve(fam_i, seed, step):
    return step / 100 + 0.02 * seed + fam_i


def tokens_per_s(fam_i, seed):
    return 1000.0 * (fam_i + 1) + 100 * seed


@pytest.fixture
def results(tmp_path):
    """Finished run folders of every Table 1 experiment: 3 families x seeds 0, 1."""
    root = tmp_path / "runs"
    for exp_i, (exp, (task, slices)) in enumerate(EXPS.items()):
        for fam_i, fam in enumerate(FAMS):
            for seed in (0, 1):
                d = root / exp / f"{fam}-{task}-small-s{seed}"
                d.mkdir(parents=True)
                final = {"test/acc": acc(exp_i, fam_i, seed), "val/acc": acc(exp_i, fam_i, seed, "v")}
                final.update({f"test/acc/{s}": acc(exp_i, fam_i, seed, s) for s in slices})
                summary = {"experiment": exp, "run_name": d.name, "family": fam, "seed": seed, "task": task,
                           "budget": "small", "final": final, "throughput_tokens_per_s": tokens_per_s(fam_i, seed),
                           "task_facts": {"slice_names": slices},
                           # the rest of the run-folder contract, which every report may read
                           "params": {"total": 20_000_000, "target": 20_000_000, "deviation": 0.0},
                           "steps": STEPS[-1], "batch_size": 32, "seq_len": 599, "optim": {"lr": 3e-4},
                           "hardware": {"gpu": None, "cpu_count": 2, "torch": "2.13.0"}, "git_commit": "0" * 40}
                (d / "summary.json").write_text(json.dumps(summary))
                (d / "metrics.jsonl").write_text("".join(
                    json.dumps({"step": s, "train/loss": 1.0}) + "\n" + json.dumps({"step": s, "val/acc": curve(fam_i, seed, s)}) + "\n"
                    for s in STEPS))
    return root


def ours(exp_i, fam_i, seeds=(0, 1)):
    vals = [acc(exp_i, fam_i, s) for s in seeds]
    return f"{statistics.mean(vals):.4f}" + (f" ± {statistics.stdev(vals):.4f}" if len(vals) > 1 else "")


# ---------------------------------------------------------------- W&B workspace and reports

def test_wandb_workspace_and_reports_are_built_from_the_table_specs(results, tmp_path):
    from sessa_bench.wandb_dashboard import main
    out = tmp_path / "wandb.json"
    main(["--project", "proj", "--entity", "me", "--results", str(results), "--dry-run", str(out)])
    spec = json.loads(out.read_text())

    view = spec["workspace"]
    assert (view["entity"], view["project"]) == ("me", "proj")
    secs = view["spec"]["section"]["panelBankConfig"]["sections"]
    assert [s["name"] for s in secs] == [t.title for t in TABLES.values()]
    t1 = {p["config"]["chartTitle"]: p for p in secs[0]["panels"]}
    kinds = sorted((p["viewType"], tuple(p["config"]["metrics"])) for p in t1.values())
    assert kinds == sorted([("Run History Line Plot", ("val/acc",))] * 3 + [("Bar Chart", ("test/acc",))] * 3
                           + [("Bar Chart", ("throughput_tokens_per_s",))] * 3
                           + [("Bar Chart", ("test/acc/lag=32-63", "test/acc/lag=64-127"))])
    assert all(p["config"]["groupBy"] == "model.family.value" for s in secs for p in s["panels"])
    grouping = view["spec"]["section"]["runSets"][0]["grouping"]
    assert grouping == [{"section": "run", "name": "group"}, {"section": "config", "name": "model.family.value"}]
    # Table 2's curve panel plots its own metric
    assert any(p["config"]["metrics"] == ["val/ppl"] for p in secs[1]["panels"])

    reports = spec["reports"]
    assert sorted(reports) == sorted(TABLES)
    blocks = reports["table1"]["blocks"]
    text = blocks[0]["text"]
    for fam_i, fam in enumerate(FAMS):  # our numbers beside the paper's, per family
        row = "| " + " | ".join([fam] + [x for i in range(len(EXPS)) for x in (ours(i, fam_i), _paper("table1", fam, i))]) + " |"
        assert row in text, row
    grids = [b for b in blocks if "runsets" in b]
    assert [g["runsets"][0]["name"] for g in grids] == list(EXPS)
    filters = grids[0]["runsets"][0]["filters"]
    assert "table1_symbol_soup" in filters and "family:sessa" in filters and "table1_diffuse_mqar" not in filters
    assert "not run" in reports["table2"]["blocks"][0]["text"]  # no Table 2 runs in this folder


def _paper(table, fam, i):
    m, s = TABLES[table].paper[fam][i]
    d = TABLES[table].columns[i].digits
    return f"{m:.{d}f} ± {s:.{d}f}"


# ---------------------------------------------------------------- the offline page in a real browser

@pytest.fixture
def chromium():
    why = browser.missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the dashboard test needs a browser in CI: {why}")
        pytest.skip(why)


def _panels(page):
    return page.evaluate("""() => [...document.querySelectorAll('.panel')].map(d => ({
        kind: d.dataset.kind, experiment: d.dataset.experiment, title: d.layout.title.text,
        traces: d.data.map(t => ({name: t.name, x: t.x, y: t.y}))}))""")


def test_offline_page_draws_every_panel_and_filters(results, tmp_path, chromium):
    from sessa_bench.dashboard.page import build
    html = build(results, tmp_path / "dashboard.html")
    with browser.open_page(html) as (page, errors):
        panels = _panels(page)
        expected = [(p.kind, p.experiment) for s in sections(results) for p in s.panels]
        assert [(p["kind"], p["experiment"]) for p in panels] == expected
        for p in panels:
            names = [t["name"] for t in p["traces"]]
            if p["experiment"] in EXPS:  # Table 1 and its families, 2 seeds each
                assert names == [f"{f} (2 runs)" for f in FAMS], p["title"]
            else:  # Table 2 / ablation: no runs in this folder
                assert names == [], p["title"]
        by = {(p["kind"], p["experiment"]): p for p in panels}
        for fam_i, fam in enumerate(FAMS):
            c = by[("curve", "table1_symbol_soup")]["traces"][fam_i]
            assert c["x"] == list(STEPS)
            assert c["y"] == pytest.approx([statistics.mean(curve(fam_i, s, st) for s in (0, 1)) for st in STEPS])
            f = by[("final", "table1_diffuse_mqar")]["traces"][fam_i]
            assert f["y"] == pytest.approx([statistics.mean(acc(D, fam_i, s) for s in (0, 1))])
            t = by[("throughput", "table1_symbol_soup")]["traces"][fam_i]
            assert t["y"] == pytest.approx([statistics.mean(tokens_per_s(fam_i, s) for s in (0, 1))])
            lag = by[("slices", "table1_diffuse_mqar")]["traces"][fam_i]
            assert lag["x"] == ["lag=32-63", "lag=64-127"]
            assert lag["y"] == pytest.approx([statistics.mean(acc(D, fam_i, s, f"lag={k}") for s in (0, 1))
                                              for k in ("32-63", "64-127")])
        assert _table(page, "table1")[1:1 + len(FAMS)] == [
            [f] + [x for e in range(len(EXPS)) for x in (ours(e, i), _paper("table1", f, e))] for i, f in enumerate(FAMS)]

        page.uncheck('input[data-field="seed"][value="1"]')
        page.uncheck('input[data-field="family"][value="mamba2"]')
        assert _table(page, "table1")[1][1] == ours(0, 0, seeds=(0,))
        assert _table(page, "table1")[3][1] == "not run"
        for p in _panels(page):
            if p["experiment"] in EXPS:
                assert [t["name"] for t in p["traces"]] == ["sessa (1 run)", "transformer (1 run)"], p["title"]
        page.uncheck('input[data-field="experiment"][value="table1_symbol_soup"]')
        assert all(not p["traces"] for p in _panels(page) if p["experiment"] == "table1_symbol_soup")
        assert errors == []


def test_a_cell_whose_sweep_is_under_way_says_so_on_the_page(results, tmp_path, chromium, monkeypatch):
    """As results/table1.md: `sweep: k of n rates` in place of `not run` while no rate is chosen; its runs are
    the sweep's, one tick away under `other runs`."""
    import sessa_bench.dashboard.page as pg
    from sessa_bench.dashboard.spec import Undecided
    under_way = {("table1_symbol_soup", "mamba2"): Undecided("sweep: 2 of 3 rates")}
    monkeypatch.setattr(pg, "chosen_rates", lambda *_: under_way)
    with browser.open_page(pg.build(results, tmp_path / "dashboard.html")) as (page, errors):
        assert _table(page, "table1")[3][1] == "sweep: 2 of 3 rates"
        assert _table(page, "table1")[1][1] == ours(0, 0)  # a cell without a sweep: as before
        page.check('input[data-field="rate"][value="other runs"]')
        assert _table(page, "table1")[3][1] == ours(0, 2)
        assert errors == []


def test_page_opens_on_the_chosen_rates_and_other_rates_are_one_tick_away(results, tmp_path, chromium, monkeypatch):
    """A run whose family's sweep chose another rate is labelled `other runs` and starts unticked."""
    import sessa_bench.dashboard.page as pg
    monkeypatch.setattr(pg, "chosen_rates", lambda *_: {("table1_symbol_soup", "mamba2"): 1e-3})
    labels = {(r["experiment"], r["family"]): r["rate"] for r in pg.page_data(results)["runs"]}
    assert labels[("table1_symbol_soup", "mamba2")] == "other runs"  # the fixture's runs record no rate
    assert labels[("table1_symbol_soup", "sessa")] == "chosen"        # no finished sweep: nothing to hide
    with browser.open_page(pg.build(results, tmp_path / "dashboard.html")) as (page, errors):
        assert _table(page, "table1")[3][1] == "not run"
        page.check('input[data-field="rate"][value="other runs"]')
        assert _table(page, "table1")[3][1] == ours(0, 2)
        assert errors == []


def test_page_marks_unconverged_cells_and_missing_seeds_as_the_table_does(results, tmp_path, chromium,
                                                                         monkeypatch):
    """A cell whose counted runs include an unconverged one reads `*`, one with fewer seeds than it asks
    `(k of n seeds)`, as in results/table1.md; the marks follow the seed filter."""
    import sessa_bench.dashboard.page as pg
    from sessa_bench.dashboard.spec import Chosen
    names = frozenset({"sessa-symbol_soup-small-s0", "sessa-symbol_soup-small-s1"})
    monkeypatch.setattr(pg, "chosen_rates", lambda *_: {
        ("table1_symbol_soup", "sessa"): Chosen(3e-4, names, frozenset({"sessa-symbol_soup-small-s1"}), 3)})
    with browser.open_page(pg.build(results, tmp_path / "dashboard.html")) as (page, errors):
        assert _table(page, "table1")[1][1] == ours(0, 0) + "* (2 of 3 seeds)"
        assert _table(page, "table1")[2][1] == ours(0, 1)  # a cell without a chosen rate: no marks
        page.uncheck('input[data-field="seed"][value="1"]')
        assert _table(page, "table1")[1][1] == ours(0, 0, seeds=(0,)) + " (1 of 3 seeds)"
        assert errors == []


def _table(page, name):
    return page.evaluate(f"""() => [...document.querySelectorAll('table[data-table="{name}"] tr')]
        .map(tr => [...tr.children].map(c => c.textContent))""")


def test_dashboard_cli_on_a_missing_folder_is_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "sessa_bench.cli", "dashboard", str(tmp_path / "nope")],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [f"sessa-bench dashboard: error: {tmp_path / 'nope'}: no such folder "
                                               "of run folders (results/runs/<experiment>/<run>)"]


# ---------------------------------------------------------------- wandb sync

def _offline_run(run_dir: Path, stamp: str, synced=False) -> Path:
    d = run_dir / "wandb" / f"offline-run-{stamp}-{run_dir.name}"
    d.mkdir(parents=True)
    (d / f"run-{run_dir.name}.wandb").write_bytes(b":W&B")
    if synced:
        (d / f"run-{run_dir.name}.wandb.synced").write_text("")
    link = run_dir / "wandb" / "latest-run"
    link.unlink(missing_ok=True)
    link.symlink_to(d.name)
    return d


def test_sync_finds_offline_runs_and_skips_synced(tmp_path):
    from sessa_bench.wandb_sync import is_synced, offline_runs
    a = _offline_run(tmp_path / "exp" / "a", "20260101_000000")
    a2 = _offline_run(tmp_path / "exp" / "a", "20260102_000000")  # the same run folder, resumed
    b = _offline_run(tmp_path / "exp" / "b", "20260101_000000", synced=True)
    (tmp_path / "exp" / "c").mkdir()  # logged without W&B
    assert offline_runs(tmp_path) == [a, a2, b]
    assert offline_runs(tmp_path / "exp" / "a") == [a, a2]
    assert [is_synced(r) for r in (a, a2, b)] == [False, False, True]
    res = _sync_cli(tmp_path, "--dry-run", env={"WANDB_MODE": "offline"})
    assert res.returncode == 0 and "3 offline W&B runs" in res.stdout and "1 already synced, 2 to upload" in res.stdout


def _sync_cli(path, *args, env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    base.update(HOME=str(path / "home"), NETRC=str(path / "home" / ".netrc"), **env)
    return subprocess.run([sys.executable, "-m", "sessa_bench.cli", "wandb", "sync", str(path), *args],
                          cwd=ROOT, capture_output=True, text=True, env=base)


@pytest.mark.parametrize("env, message", [
    ({"WANDB_MODE": "offline"}, "WANDB_MODE=offline: unset it (or set WANDB_MODE=online) to upload to W&B"),
    ({}, "not logged in to W&B at https://api.wandb.ai: run `wandb login` or set WANDB_API_KEY"),
])
def test_sync_without_credentials_is_one_clear_line(tmp_path, env, message):
    _offline_run(tmp_path / "exp" / "a", "20260101_000000")
    res = _sync_cli(tmp_path, env=env)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1] == f"sessa-bench wandb: error: {message}"
    assert len(res.stderr.strip().splitlines()) == 1


def test_report_table_is_the_committed_table1():
    """The W&B report's table and results/table1.md come from the same runs: the seeds at each family's
    chosen rate (the committed sweep holds other rates too, which must not be averaged in), and only those
    the table counts (Mamba2's Diffuse MQAR seed 1 at 8000 steps, where the experiment trains 16000, was
    averaged in: 0.8424 on the dashboard against the table's 0.9927). Every column of ours."""
    from sessa_bench.dashboard.spec import table_rows
    _, got = table_rows(TABLES["table1"], ROOT / "results" / "runs")
    md = (ROOT / "results" / "table1.md").read_text().split("\n\n")[2].splitlines()[2:5]
    ours = [0] + list(range(1, 2 * len(TABLES["table1"].columns), 2))  # family, then every other column
    want = [[line.strip("|").split("|")[i].strip() for i in ours] for line in md]  # with its marks
    assert [[row[i] for i in ours] for row in got] == want
    # the marks are compared too (`*`, `(k of n seeds)`; their rules: the next test and test_tables); which
    # ones the committed table holds depends on the runs so far, so only that some cell carries one
    assert any("*" in c or " seeds)" in c for row in want for c in row)


def test_a_cells_marks_say_what_the_paper_tables_say():
    """`*` when a shown run is unconverged, `(k of n seeds)` when the shown runs are the table's and fewer
    than asked; neither for runs of another rate mixed in (the `other runs` filter), nor for no run."""
    from sessa_bench.dashboard.spec import Chosen
    c = Chosen(1e-4, frozenset({"a", "b"}), frozenset({"b"}), 3)
    run = lambda name: {"run_name": name}
    assert c.marks([run("a"), run("b")]) == "* (2 of 3 seeds)"
    assert c.marks([run("a")]) == " (1 of 3 seeds)"
    assert c.marks([run("a"), run("x")]) == ""  # another rate's run shown beside: no seed count
    assert c.marks([]) == ""
    assert Chosen(1e-4, frozenset({"a", "b"}), frozenset(), 2).marks([run("a"), run("b")]) == ""


def test_a_sweep_under_way_has_no_chosen_rate_and_runs_of_your_own_are_all_shown(tmp_path):
    """Sessa: one protocol sweep run (seed 0 at 1e-4 of the grid 1e-4, 3e-4, 1e-3) and no others: no rate is
    chosen yet, so the table has no value for it but the sweep's progress, as results/table1.md. The
    Transformer: runs of your own (not named by the protocol): all of them are averaged."""
    from omegaconf import OmegaConf

    from sessa_bench.compose import compose_train
    from sessa_bench.dashboard.spec import Undecided, chosen_rates, table_rows
    from sessa_bench.run_folder import resolved_config

    def write(d, fam, seed, lr, acc):
        d.mkdir(parents=True)
        summary = {"experiment": "table1_symbol_soup", "run_name": d.name, "family": fam, "seed": seed,
                   "task": "symbol_soup", "budget": "small", "final": {"test/acc": acc, "val/acc": acc},
                   "steps": 2000, "optim": {"lr": lr}, "task_facts": {"slice_names": []},
                   # the rest of the run-folder contract
                   "params": {"total": 20_000_000, "target": 20_000_000, "deviation": 0.0}, "batch_size": 32,
                   "seq_len": 599, "throughput_tokens_per_s": 1000.0, "git_commit": "0" * 40,
                   "hardware": {"gpu": None, "cpu_count": 2, "torch": "2.13.0"}}
        (d / "summary.json").write_text(json.dumps(summary))
        (d / "metrics.jsonl").write_text(json.dumps({"step": 2000, "val/acc": acc}) + "\n")

    root = tmp_path / "runs"
    cfg = compose_train(["experiment=table1_symbol_soup", "model=sessa", "seed=0", "optim.lr=0.0001",
                         f"results_dir={root}"])
    sweep_run = root / "table1_symbol_soup" / cfg.run_name
    write(sweep_run, "sessa", 0, 1e-4, 0.4)
    (sweep_run / "config.yaml").write_text(OmegaConf.to_yaml(resolved_config(cfg)))  # as train writes it
    for seed, acc in ((0, 0.3), (1, 0.5)):
        write(root / "table1_symbol_soup" / f"mine-s{seed}", "transformer", seed, 3e-4, acc)
    rates = chosen_rates(root, {("table1_symbol_soup", "sessa"), ("table1_symbol_soup", "transformer")})
    assert rates[("table1_symbol_soup", "sessa")] == Undecided("sweep: 1 of 3 rates")
    assert ("table1_symbol_soup", "transformer") not in rates
    _, got = table_rows(TABLES["table1"], root)
    cells = {row[0]: row[1] for row in got}
    assert cells["sessa"] == "sweep: 1 of 3 rates" and cells["transformer"] == "0.4000 ± 0.1414"


def test_a_runs_curve_on_the_page_leaves_out_its_best_checkpoints_final_evaluation(tmp_path):
    """A run keeping its best checkpoint logs that checkpoint's validation at the last step after training;
    the page drew it as the curve's last point (the Bible's Table 2: val/ppl 73 at step 599, then 28.6)."""
    from sessa_bench.dashboard.page import run_record
    d = tmp_path / "t2" / "r"
    f = RunFolder(d)
    for row in ({"step": 299, "val/ppl": 27.3}, {"step": 599, "val/ppl": 73.0}, {"step": 600, "val/ppl": 28.6}):
        f.append_metrics(row)
    summary = {"experiment": "t2", "run_name": "r", "family": "sessa", "seed": 0, "task": "bible",
               "budget": "small", "final": {"val/ppl": 28.6}, "fit_metrics_lines": 2}
    assert run_record(tmp_path, summary, {"val/ppl"}, None)["curves"]["val/ppl"] == [[299, 27.3], [599, 73.0]]


def test_an_empty_panel_says_when_the_rate_filter_hides_its_sweep(results, tmp_path, chromium, monkeypatch):
    """An experiment whose runs are all at rates its tables do not report (the long column while its sweep runs)
    opens with empty panels that say to tick `other runs`; a panel emptied by another filter says only that
    nothing is selected."""
    import sessa_bench.dashboard.page as pg
    long = "table1_symbol_soup_long"
    monkeypatch.setattr(pg, "chosen_rates", lambda *_: {(long, f): 1e-3 for f in FAMS})

    def notes(page, exp):  # the panels' annotations (SVG text: textContent)
        sel = f'.panel[data-experiment="{exp}"] .annotation-text'
        return page.evaluate(f"""() => [...document.querySelectorAll('{sel}')].map(a => a.textContent)""")
    with browser.open_page(pg.build(results, tmp_path / "dashboard.html")) as (page, errors):
        assert notes(page, long) and all("tick \u201cother runs\u201d" in t for t in notes(page, long))
        assert notes(page, "table1_symbol_soup") == []  # its runs are shown
        page.check('input[data-field="rate"][value="other runs"]')
        assert notes(page, long) == []
        for fam in FAMS:
            page.uncheck(f'input[data-field="family"][value="{fam}"]')
        assert notes(page, long) and set(notes(page, long)) == {"no selected runs"}
        assert errors == []
