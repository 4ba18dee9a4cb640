"""scripts/mps_check.py without a GPU: the table it writes and its behaviour where MPS is missing (the trials
themselves train; `python3 scripts/mps_check.py --cpu` is their dry run on a CPU)."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "mps_check.py"
spec = importlib.util.spec_from_file_location("mps_check", SCRIPT)
mps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mps)


def row(label, tps, wall):
    return {"label": label, "runs": 2, "finished": 2, "codes": [0, 0], "wall_s": wall, "tokens_per_s": sum(tps),
            "per_run": {f"sessa-x-s{i}": v for i, v in enumerate(tps)}}


def test_table_gives_the_ratio_of_both_trials():
    text = mps.table([row("no MPS", [100.0, 200.0], 50.0), row("MPS", [300.0, 300.0], 40.0)], None, 150)
    assert "| no MPS | 2 | 2 | 300 | 50 | sessa 100, sessa 200 |" in text
    assert "MPS / no MPS, summed tokens/s: 2.00x; wall: 0.80x" in text and "skipped" not in text


def test_without_the_control_binary_the_mps_trial_is_skipped_with_the_reason(monkeypatch):
    monkeypatch.setattr(mps.shutil, "which", lambda name: None)
    why = mps.start_mps({"CUDA_MPS_PIPE_DIRECTORY": "/nonexistent/p", "CUDA_MPS_LOG_DIRECTORY": "/nonexistent/l"})
    assert why == "nvidia-cuda-mps-control not found"
    text = mps.table([row("no MPS", [100.0], 50.0)], why, 150)
    assert text.rstrip().endswith("MPS trial skipped: nvidia-cuda-mps-control not found") and " x;" not in text
