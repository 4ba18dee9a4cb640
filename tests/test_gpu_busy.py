"""scripts/gpu_busy.py on CPU: nvidia-smi replaced by a command printing its CSV, so a typo cannot waste a GPU
lease; the summary's arithmetic against hand-counted samples."""

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_busy  # noqa: E402


def test_summary_counts_samples_after_the_skip():
    rows = [(0.0, "0", 0.0), (0.5, "1", 0.0), (2.0, "0", 90.0), (2.0, "1", 5.0), (3.0, "0", 50.0), (3.0, "1", 80.0)]
    s = gpu_busy.summarise(rows, skip=1.0, busy=10.0)
    assert s == {"0": {"samples": 2, "mean": 70.0, "busy_share": 1.0},
                 "1": {"samples": 2, "mean": 42.5, "busy_share": 0.5}}


def test_script_samples_while_the_command_runs(tmp_path):
    log = tmp_path / "util.csv"
    fake = "printf '0, 97\\n1, 3\\n'"
    cmd = [sys.executable, str(ROOT / "scripts" / "gpu_busy.py"), "--log", str(log), "--interval", "0.1",
           "--skip", "0", "--fake-smi", fake, "--min-busy", "0.5", "--", sys.executable, "-c",
           "import time; time.sleep(0.6)"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 3, res.stdout + res.stderr  # GPU 1 idle: below --min-busy
    assert "gpu 0: mean 97 %, busy (> 10 %) 100%" in res.stdout and "gpu 1: mean 3 %" in res.stdout
    lines = log.read_text().splitlines()
    assert lines[0] == "seconds,gpu,utilization" and len(lines) >= 5


def test_timeout_stops_the_whole_process_group_and_still_summarises(tmp_path):
    # the command's own child (a worker of the sweep) must die with it, or it trains on past the GPU call
    pidfile = tmp_path / "child.pid"
    cmd = [sys.executable, str(ROOT / "scripts" / "gpu_busy.py"), "--log", str(tmp_path / "u.csv"), "--interval",
           "0.1", "--skip", "0", "--fake-smi", "printf '0, 50\\n'", "--timeout", "1", "--", "bash", "-c",
           f"sleep 60 & echo $! > {pidfile}; wait"]
    t0 = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 124 and time.time() - t0 < 30, res.stdout + res.stderr
    assert "stopped after 1 s" in res.stdout and "gpu 0: mean 50 %" in res.stdout
    pid = int(pidfile.read_text())

    def gone() -> bool:
        try:
            return "zombie" in Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return True
    for _ in range(100):  # the signal is sent; on a loaded machine the kill can take longer than a fixed 0.2 s
        if gone():
            break
        time.sleep(0.1)
    assert gone()


def test_ddp_check_script_cpu_smoke(tmp_path):
    """scripts/ddp_check.py end to end on 2 CPU processes at a toy size (the GPU check the lead runs)."""
    import os

    env = {**os.environ, "SESSA_BENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "ddp_check.py"), "--out", str(tmp_path), "--cpu-smoke",
                          "--steps", "4", "--batch-size", "4", "--model", "transformer"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    md = (tmp_path / "ddp_check.md").read_text()
    assert "| val/acc: DDP run | eval of its ckpt |" in md and "NO" not in md
