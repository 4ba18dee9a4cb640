"""One run on two processes (DDP, gloo on CPU) against the same run on one process, both started by
`python -m sessa_bench.train` as a user would: the same evaluation metrics exactly, the same training loss,
only rank 0 writing, and resume on another number of processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sessa_bench.run_folder import RunFolder

ROOT = Path(__file__).resolve().parent.parent
RUN = "transformer-symbol_soup-tiny-s0"
# n_val=41: the two ranks evaluate 20 and 21 examples (an uneven shard and an uneven number of batches).
TINY = ["logger=none", "trainer.enable_progress_bar=false", "budget=tiny", "model=transformer",
        "trainer.accelerator=cpu", "trainer.strategy=ddp", "trainer.max_steps=6", "trainer.val_check_interval=3",
        "callbacks.checkpoint.every_n_steps=2", "trainer.log_every_n_steps=1", "data.batch_size=4",
        "data.eval_batch_size=4", "task.min_len=41", "task.max_len=61", "task.n_train=200", "task.n_val=41",
        "task.n_test=40"]


def train(tmp, *args, multirun=False):
    env = {**os.environ, "SESSA_BENCH_CACHE": str(tmp / "cache"), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for v in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR"):
        env.pop(v, None)
    return subprocess.run([sys.executable, "-m", "sessa_bench.train", *(["-m"] if multirun else []),
                           f"results_dir={tmp / 'runs'}", *TINY, *args],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    """A multirun of the same run on 1 then 2 processes (the DDP job comes second: its other rank must run
    this job alone, not the whole sweep that is on the command line)."""
    tmp = tmp_path_factory.mktemp("ddp")
    res = train(tmp, "experiment_name=p${trainer.devices}", "trainer.devices=1,2", multirun=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # every process prints the header of the run it trains: job p1 once, job p2 once per rank; the sweep is
    # launched once (Lightning's own relaunch of the command line would launch it again in the second rank)
    out = res.stdout + res.stderr
    assert (out.count(f"[p1/{RUN}]"), out.count(f"[p2/{RUN}]"), out.count("Launching 2 jobs")) == (1, 2, 1), out[-3000:]
    return tmp, RunFolder(tmp / "runs" / "p1" / RUN), RunFolder(tmp / "runs" / "p2" / RUN)


def train_losses(folder):
    return [(r["step"], r["train/loss"]) for r in folder.read_metrics() if "train/loss" in r]


def test_two_processes_match_one(one_and_two):
    tmp, one, two = one_and_two
    s1, s2 = one.read_summary(), two.read_summary()
    assert (s1["world_size"], s2["world_size"]) == (1, 2) and s1["steps"] == s2["steps"] == 6
    # the same global batches and gradients: evaluation counts are identical, losses within float32 rounding
    # of the gradient all-reduce (on this CPU they come out bit-identical)
    assert set(s1["final"]) == set(s2["final"]) >= {"val/acc", "val/loss", "test/acc", "test/loss"}
    for k, v in s1["final"].items():
        assert s2["final"][k] == pytest.approx(v, rel=1e-5, abs=0), k
        if "/acc" in k:
            assert s2["final"][k] == v, k
    l1, l2 = train_losses(one), train_losses(two)
    assert [s for s, _ in l1] == [s for s, _ in l2] == list(range(6))  # one line per step: rank 0 alone logs
    assert [v for _, v in l2] == pytest.approx([v for _, v in l1], rel=1e-4)
    # nothing but the run folders, the multirun.yaml and the cache (no per-rank Hydra output folders)
    assert sorted(p.name for p in tmp.iterdir()) == ["cache", "runs"]
    # (.lock: the run folder's lock file, kept so that no two processes ever hold locks on different files)
    assert sorted(p.name for p in two.path.iterdir()) == [".lock", "checkpoints", "config.yaml", "metrics.jsonl",
                                                          "summary.json"]


def test_resume_on_another_number_of_processes(one_and_two):
    """Killed at step 4 on 2 processes, resumed on 1: the same run as the uninterrupted 1-process one."""
    tmp, one, _ = one_and_two
    killed = train(tmp, "experiment_name=resumed", "trainer.devices=2", "debug.kill_at_step=4")
    assert killed.returncode == 17, killed.stdout[-2000:] + killed.stderr[-2000:]
    folder = RunFolder(tmp / "runs" / "resumed" / RUN)
    assert folder.checkpoint.exists() and not folder.is_finished()
    resumed = train(tmp, "experiment_name=resumed", "trainer.devices=1")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    s, ref = folder.read_summary(), one.read_summary()
    assert s["resumed_from_step"] == 4 and s["world_size"] == 1
    for k, v in ref["final"].items():
        assert s["final"][k] == pytest.approx(v, rel=1e-5, abs=0), k
    # (the kill comes before Lightning logs the killed step's loss, as on one process: compare logged steps)
    ref_losses = dict(train_losses(one))
    got = dict(train_losses(folder))
    assert len(got) >= 5 and list(got.values()) == pytest.approx([ref_losses[s] for s in got], rel=1e-4)

