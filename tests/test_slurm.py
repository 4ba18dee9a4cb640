"""The submitit launcher end to end without a cluster: hydra/launcher=submitit_local runs each job of a
multirun through submitit (pickled job, its own process), the code path of submitit_slurm."""

import os
import subprocess
import sys
from pathlib import Path

from sessa_bench.compose import compose_train
from sessa_bench.run_folder import RunFolder

ROOT = Path(__file__).resolve().parent.parent


def test_submitit_local_multirun_finishes_every_run(tmp_path):
    env = {**os.environ, "SESSA_BENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    args = [f"results_dir={tmp_path / 'runs'}", "logger=none", "trainer.enable_progress_bar=false", "budget=tiny",
            "model=transformer", "trainer.max_steps=2", "trainer.val_check_interval=2",
            "callbacks.checkpoint.every_n_steps=2", "data.batch_size=4", "task.min_len=41", "task.max_len=61",
            "task.n_train=40", "task.n_val=8", "task.n_test=8", "seed=0,1"]
    res = subprocess.run([sys.executable, "-m", "sessa_bench.train", "-m", "hydra/launcher=submitit_local", *args],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    exp = tmp_path / "runs" / "default"
    for seed in (0, 1):
        folder = RunFolder(exp / f"transformer-symbol_soup-tiny-s{seed}")
        assert folder.is_finished(), sorted(p.name for p in exp.rglob("*"))
        s = folder.read_summary()
        assert s["seed"] == seed and s["steps"] == 2 and s["world_size"] == 1
    # one submitit job per run, its logs beside the run folders
    assert len(list((exp / ".submitit").glob("*/*_0_log.out"))) == 2


def test_slurm_launcher_requeues_with_resume():
    slurm = compose_train(["hydra/launcher=submitit_slurm"]).hydra.launcher
    assert slurm.max_num_timeout > 0 and slurm.signal_delay_s > 0 and slurm.gpus_per_node == 1
    local = compose_train(["hydra/launcher=submitit_local"]).hydra.launcher
    assert local._target_.endswith("submitit_launcher.LocalLauncher")
