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
    """Every candidate at every rate of the grid; the rate with the best val/acc is starred, and the target band
    line names exactly the candidates whose starred run lands in it (read back from the summaries)."""
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))
    spec = calibrate.load("diffuse_mqar")
    assert spec["lrs"] == [1e-4, 3e-4, 1e-3] and "trainer.max_steps=2000" in spec["base"]
    args = [f"results_dir={tmp_path}/runs", *TINY, "task.n_pairs=4", "task.n_queries=4", "task.train_lag=[4,15]"]
    md = calibrate.build(["c0"], args, run=True, jobs=1, out=tmp_path / "grid.md")  # in-process: no worker start-up
    folder = tmp_path / "runs" / spec["experiment_name"]
    summaries = {lr: json.loads((folder / f"c0-lr{lr}" / "summary.json").read_text()) for lr in spec["lrs"]}
    assert {s["optim"]["lr"] for s in summaries.values()} == set(spec["lrs"])
    best = max(spec["lrs"], key=lambda lr: summaries[lr]["final"]["val/acc"])  # first best on ties, as max
    starred = [l for l in md.splitlines() if l.startswith("| c0") and l.endswith(" * |")]
    assert len(starred) == 1 and starred[0].endswith(f"| {best:g} * |")
    acc = summaries[best]["final"]["test/acc"]
    lo, hi = spec["target"]
    want = f"{acc:.4f}" if lo <= acc <= hi else "none"
    assert f"In the target band [{lo:g}, {hi:g}] of test accuracy: " in md
    assert (f"c0 ({want})" if want != "none" else "test accuracy: none.") in md
