"""The Diffuse MQAR calibration sweep end to end on CPU: tiny runs of two candidates, then the report."""

import json

import pytest

from sessa_bench import calibrate

TINY = ["probe=false", "trainer=cpu", "budget=tiny", "logger=none", "trainer.enable_progress_bar=false", "trainer.max_steps=2",
        "trainer.val_check_interval=2", "trainer.log_every_n_steps=1", "data.batch_size=2", "task.n_train=20", "task.n_val=8",
        "task.n_test=8"]


def test_sweep_trains_candidates_and_reports_them_from_run_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "calibration.md"
    args = [f"results_dir={tmp_path}/runs", *TINY]
    with pytest.raises(FileNotFoundError, match=r"no finished calibration run for \['c0', 'c5'\].*--run"):
        calibrate.build(["c0", "c5"], args, out=out)
    md = calibrate.build(["c0", "c5"], args, run=True, jobs=2, out=out)
    assert out.read_text() == md
    rows = {l.split(" | ")[0].strip("| "): l for l in md.splitlines() if l[:4] in ("| c0", "| c5")}
    assert set(rows) == {"c0", "c5"}
    assert "| 32 | 32-511 | 32-2044 | 640/2176 | 0.0156 |" in rows["c0"] and rows["c0"].endswith("| 2 | 0.001 |")
    assert "| 16 | 8-127 | 8-508 | 192/576 | 0.0156 |" in rows["c5"]
    for name in ("c0", "c5"):  # the accuracy shown is the run's own test accuracy
        summary = json.loads((tmp_path / "runs" / calibrate.EXPERIMENT / name / "summary.json").read_text())
        assert summary["steps"] == 2 and summary["family"] == "transformer"
        assert f"| {summary['final']['test/acc']:.4f} |" in rows[name]
    with pytest.raises(ValueError, match=r"candidate='c9': must be one of"):
        calibrate.build(["c9"], args, out=out)
