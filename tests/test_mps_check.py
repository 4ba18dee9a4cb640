"""scripts/mps_check.py without a GPU: the table it writes and its behaviour where MPS is missing (the trials
themselves train; `python3 scripts/mps_check.py --cpu` is their dry run on a CPU)."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "mps_check.py"
spec = importlib.util.spec_from_file_location("mps_check", SCRIPT)
mps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mps)


def row(label, tps, wall):
    return {"label": label, "runs": len(tps), "finished": len(tps), "codes": [0, 0], "wall_s": wall, "tokens_per_s": sum(tps),
            "per_run": {f"sessa-x-s{i}": v for i, v in enumerate(tps)}}


def test_table_gives_each_count_against_the_first_and_mps_against_no_mps():
    rows = [row("no MPS, 1", [200.0], 30.0), row("no MPS, 2", [100.0, 200.0], 50.0), row("MPS, 2", [300.0, 300.0], 40.0)]
    text = mps.table(rows, None, 150)
    assert "| no MPS, 1 | 1 | 1 | 200 | 1.00 | 30 | sessa 200 |" in text
    assert "| no MPS, 2 | 2 | 2 | 300 | 1.50 | 50 | sessa 100, sessa 200 |" in text
    assert "| MPS, 2 | 2 | 2 | 600 | 3.00 | 40 |" in text
    assert "2 runs, MPS / no MPS, summed tokens/s: 2.00x; wall: 0.80x" in text and "skipped" not in text


def test_without_the_control_binary_the_mps_trial_is_skipped_with_the_reason(monkeypatch):
    monkeypatch.setattr(mps.shutil, "which", lambda name: None)
    why = mps.start_mps({"CUDA_MPS_PIPE_DIRECTORY": "/nonexistent/p", "CUDA_MPS_LOG_DIRECTORY": "/nonexistent/l"})
    assert why == "nvidia-cuda-mps-control not found"
    text = mps.table([row("no MPS, 1", [100.0], 50.0)], why, 150)
    assert text.rstrip().endswith("MPS trials skipped: nvidia-cuda-mps-control not found") and " x;" not in text


def test_a_trial_starts_runs_of_the_given_families_with_overrides_hydra_accepts(tmp_path, monkeypatch):
    """Each run of a trial is `sessa_bench.train` with overrides that compose (a trial's folder once held its
    label, whose comma Hydra refused as a results_dir: every run failed at start), its family from --families;
    the summed tokens/s come from the runs' summaries. The runs are faked here (the dry run, `--cpu`, trains)."""
    import json

    from sessa_bench.compose import compose_train

    started = []

    class FakeRun:
        def __init__(self, cmd, **kw):
            ov = cmd[cmd.index("sessa_bench.train") + 1:]
            cfg = compose_train(ov)  # raises on an override Hydra would refuse
            started.append(cfg.model.family)
            folder = tmp_path / "work" / "no_MPS__2" / "mps_check" / f"{cfg.model.family}-s{cfg.seed}"
            folder.mkdir(parents=True)
            (folder / "summary.json").write_text(json.dumps({"throughput_tokens_per_s": 100.0 + cfg.seed}))

        def wait(self):
            return 0

    monkeypatch.setattr(mps.subprocess, "Popen", FakeRun)
    r = mps.trial("no MPS, 2", 2, 5, tmp_path / "work", [], {}, ("sessa",))
    assert started == ["sessa", "sessa"] and r["finished"] == 2 and r["tokens_per_s"] == 201.0
