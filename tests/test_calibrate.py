"""The Diffuse MQAR calibration sweeps end to end on CPU: tiny runs of two candidates, then the report."""

import json

import pytest

from sessa_bench import calibrate

TINY = ["probe=false", "trainer=cpu", "budget=tiny", "logger=none", "trainer.enable_progress_bar=false", "trainer.max_steps=2",
        "trainer.val_check_interval=2", "trainer.log_every_n_steps=1", "data.batch_size=2", "task.n_train=20", "task.n_val=8",
        "task.n_test=8"]


def _rows(md: str) -> dict[str, str]:
    return {l.split(" | ")[0].strip("| ") + ("" if " * |" not in l else "*"): l for l in md.splitlines()
            if l[:3] == "| c" and l[3:4].isdigit()}


def test_first_sweep_trains_candidates_and_reports_them_from_run_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "calibration.md"
    args = [f"results_dir={tmp_path}/runs", *TINY]
    with pytest.raises(FileNotFoundError, match=r"no finished calibration run for \['c0', 'c5'\].*--run"):
        calibrate.build(["c0", "c5"], args, out=out, sweep="diffuse_mqar_first")
    md = calibrate.build(["c0", "c5"], args, run=True, out=out, sweep="diffuse_mqar_first")  # workers: test_tables
    assert out.read_text() == md
    rows = _rows(md)
    assert set(rows) == {"c0", "c5"} and "val acc" not in md
    assert "| 32 | 32-511 | 32-2044 | 640/2176 | 0.0156 |" in rows["c0"] and rows["c0"].endswith("| 2 | 0.001 |")
    assert "| 16 | 8-127 | 8-508 | 192/576 | 0.0156 |" in rows["c5"]
    for name in ("c0", "c5"):  # the accuracy shown is the run's own test accuracy
        summary = json.loads((tmp_path / "runs" / "calibrate_diffuse_mqar" / name / "summary.json").read_text())
        assert summary["steps"] == 2 and summary["family"] == "transformer"
        assert f"| {summary['final']['test/acc']:.4f} |" in rows[name]
    with pytest.raises(ValueError, match=r"candidate='c9': must be one of"):
        calibrate.build(["c9"], args, out=out, sweep="diffuse_mqar_first")


def test_lr_grid_sweep_marks_the_rate_chosen_on_validation(tmp_path, monkeypatch):
    """Every candidate at every rate of the grid (grown past a winning edge); the rate with the best val/acc is
    starred, and the target band line names exactly the candidates whose starred run lands in it (read back
    from the summaries)."""
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))
    spec = calibrate.load("diffuse_mqar")
    assert spec["lrs"] == [1e-4, 3e-4, 1e-3] and "trainer.max_steps=2000" in spec["base"]
    args = [f"results_dir={tmp_path}/runs", *TINY, "task.n_pairs=4", "task.n_queries=4", "task.train_lag=[4,15]"]
    md = calibrate.build(["c0"], args, run=True, jobs=1, out=tmp_path / "grid.md")  # in-process: no worker start-up
    folder = tmp_path / "runs" / spec["experiment_name"]
    summaries = {s["optim"]["lr"]: s for s in (json.loads(p.read_text()) for p in folder.glob("c0-lr*/summary.json"))}
    assert set(spec["lrs"]) <= set(summaries) and "Not final" not in md
    best = max(sorted(summaries), key=lambda lr: summaries[lr]["final"]["val/acc"])  # ties: the smaller rate
    assert best not in (min(summaries), max(summaries)) or len(summaries) == len(spec["lrs"]) + 2  # grid grew
    starred = [l for l in md.splitlines() if l.startswith("| c0") and l.endswith(" * |")]
    assert len(starred) == 1 and starred[0].endswith(f"| {best:g} * |")
    acc = summaries[best]["final"]["test/acc"]
    lo, hi = spec["target"]
    want = f"{acc:.4f}" if lo <= acc <= hi else "none"
    assert f"In the target band [{lo:g}, {hi:g}] of test accuracy: " in md
    assert (f"c0 ({want})" if want != "none" else "test accuracy: none.") in md


def summary_at(lr, acc):
    return {"optim": {"lr": lr}, "final": {"val/acc": acc}}


def test_a_best_rate_at_an_edge_grows_the_candidates_grid():
    """As the paper tables' sweeps (report.protocol.select_lr): best at the low edge -> lr / 3 is still to train;
    best inside -> chosen, nothing to train; at most two steps past the grid."""
    spec = calibrate.load("diffuse_mqar")
    found = {f"c0-lr{lr}": summary_at(lr, acc) for lr, acc in [(1e-4, 0.3), (3e-4, 0.2), (1e-3, 0.1)]}
    chosen, runs, todo = calibrate.plan_of(spec, "c0", [], found)
    assert chosen is None and list(todo) == ["c0-lr3.3e-05"] and "c0-lr3.3e-05" in runs
    found["c0-lr3.3e-05"] = summary_at(3.3e-05, 0.25)
    chosen, runs, todo = calibrate.plan_of(spec, "c0", [], found)
    assert chosen == "c0-lr0.0001" and not todo and len(runs) == 4
    found["c0-lr3.3e-05"] = summary_at(3.3e-05, 0.35)
    assert list(calibrate.plan_of(spec, "c0", [], found)[2]) == ["c0-lr1.1e-05"]
    found["c0-lr1.1e-05"] = summary_at(1.1e-05, 0.4)  # best at the edge again, but the grid grew twice
    assert calibrate.plan_of(spec, "c0", [], found)[:1] == ("c0-lr1.1e-05",)
