"""Scale-out without processes: the per-rank step sampler, evaluation shards, GPU placement of runs.ensure
workers and the environment each worker gets, and which process writes the run folder."""

import re
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader

from sessa_bench import runs
from sessa_bench.compose import compose_train
from sessa_bench.data import StepBatchSampler, TaskDataModule, eval_shard
from sessa_bench.distributed import is_rank_zero, rank_command
from sessa_bench.run_folder import ENV_CONCURRENT, ENV_GPU, ENV_RUNS_ON_GPU, RunFolder, config_changes, placement


@pytest.mark.parametrize("world", [2, 3, 4, 12])
def test_ranks_slices_make_the_one_process_batch(world):
    """At every step the ranks' slices, in rank order, are the 1-process batch of that step (same examples,
    same order), also across pass boundaries; starting at a resumed step changes nothing."""
    n, batch, seed = 17, 12, 5
    one = StepBatchSampler(n, batch, seed)
    ranks = [StepBatchSampler(n, batch, seed, start_step=lambda: 3, rank=r, world=world) for r in range(world)]
    iters = [iter(r) for r in ranks]
    for step in range(3, 9):  # 12 x 6 draws cross several passes over 17 examples
        slices = [next(it) for it in iters]
        assert all(len(s) == batch // world for s in slices)
        assert sum(slices, []) == one.batch(step)
    # the global batch is a permutation stream: a pass covers every example once
    stream = sum((one.batch(s) for s in range(6)), [])
    assert sorted(stream[:n]) == list(range(n))


def test_global_batch_must_split_evenly():
    with pytest.raises(ValueError, match=r"data.batch_size=6 is the global batch and must be divisible by the "
                                         r"number of processes \(4 = trainer.devices x trainer.num_nodes\)"):
        StepBatchSampler(10, 6, 0, rank=0, world=4)


@pytest.mark.parametrize("n,world", [(40, 2), (41, 2), (7, 3), (2, 4), (0, 2), (100, 8)])
def test_eval_shards_partition_the_split(n, world):
    shards = [list(eval_shard(n, r, world)) for r in range(world)]
    assert sum(shards, []) == list(range(n))  # disjoint, in order, nothing padded or repeated
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


class _Trainer:  # what the data module reads from a trainer
    def __init__(self, rank, world, step=0, device="cpu"):
        self.global_rank, self.world_size, self.global_step = rank, world, step
        self.strategy = SimpleNamespace(root_device=torch.device(device))


def test_data_module_loaders_shard_by_the_trainers_rank(tmp_path, monkeypatch):
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path))
    from sessa_bench.train import build_task

    task = build_task(compose_train(["task.min_len=21", "task.max_len=31", "task.n_train=20", "task.n_val=9",
                                     "task.n_test=9"]))
    seen, first = [], []
    for rank in range(2):
        dm = TaskDataModule(task, batch_size=4, eval_batch_size=2, seed=1)
        dm.trainer = _Trainer(rank, 2, step=5)
        val = dm.val_dataloader()
        assert isinstance(val, DataLoader)
        seen += [int(y) for b in val for y in b["labels"]]
        first.append(next(iter(dm.train_dataloader()))["labels"])
    assert seen == [int(dm.split("val")[i]["labels"]) for i in range(9)]
    one = TaskDataModule(task, batch_size=4, seed=1)
    one.trainer = _Trainer(0, 1, step=5)
    assert torch.equal(torch.cat(first), next(iter(one.train_dataloader()))["labels"])
    # pinned host batches only under a GPU trainer (a pageable copy to the GPU syncs its stream first)
    assert not one.train_dataloader().pin_memory and not one.val_dataloader().pin_memory
    one.trainer = _Trainer(0, 1, device="cuda")
    assert one.train_dataloader().pin_memory and one.val_dataloader().pin_memory and one.test_dataloader().pin_memory


# --- many runs across GPUs -------------------------------------------------------------------------------
def test_place_round_robin_and_jobs_per_gpu():
    assert runs.place(4, []) == [None] * 4  # no GPUs: as before, workers share the machine
    assert runs.place(None, []) == [None]
    assert runs.place(4, ["0", "1", "2", "3"]) == ["0", "1", "2", "3"]
    assert runs.place(6, ["0", "1", "2", "3"]) == ["0", "1", "2", "3", "0", "1"]  # differ by at most one
    assert runs.place(None, ["0", "1"]) == ["0", "1"]  # one per GPU
    assert runs.place(None, ["0", "1"], jobs_per_gpu=3) == ["0", "1"] * 3
    assert runs.place(3, ["5", "7"], jobs_per_gpu=2) == ["5", "7", "5"]  # ids as CUDA_VISIBLE_DEVICES names them
    with pytest.raises(ValueError, match=r"jobs=5: more than jobs_per_gpu=2 x 2 visible GPUs \(0,1\)"):
        runs.place(5, ["0", "1"], jobs_per_gpu=2)
    with pytest.raises(ValueError, match="jobs=0: must be >= 1"):
        runs.place(0, ["0"])
    with pytest.raises(ValueError, match="jobs_per_gpu=0: must be >= 1"):
        runs.place(2, ["0"], jobs_per_gpu=0)


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert runs.visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert runs.visible_gpus() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert runs.visible_gpus() == ["0", "1", "2"]


def test_worker_envs_pin_one_gpu_and_record_sharing(monkeypatch):
    envs = runs.worker_envs(["0", "1", "0"], base={"PATH": "/bin"})
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0"]
    assert [e[ENV_RUNS_ON_GPU] for e in envs] == ["2", "1", "2"] == [e[ENV_CONCURRENT] for e in envs]
    assert all(e["PATH"] == "/bin" for e in envs)
    cpu = runs.worker_envs([None, None], base={})
    assert cpu == [{ENV_CONCURRENT: "2"}] * 2
    # what a worker records in its summary
    monkeypatch.setenv(ENV_GPU, "1")
    monkeypatch.setenv(ENV_RUNS_ON_GPU, "2")
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    monkeypatch.delenv("SESSA_BENCH_BESIDE_PER_GPU", raising=False)
    assert placement() == {"gpu": 1, "runs_on_gpu": 2, "mps": False, "beside": 0}
    monkeypatch.setenv("SESSA_BENCH_BESIDE_PER_GPU", "1")  # tables --beside 1
    assert placement()["beside"] == 1
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", "/tmp/mps-pipe")  # an MPS client (gpu_session.sh MPS=1)
    assert placement()["mps"] is True
    monkeypatch.delenv(ENV_GPU)
    assert placement() is None


def _fake_workers(monkeypatch, gpus):
    """runs.ensure with `gpus` visible and the worker processes replaced by a recorder."""
    started = []
    monkeypatch.setattr(runs, "visible_gpus", lambda: list(gpus))
    monkeypatch.setattr(runs, "build_data", lambda ovs: None)

    def fake(ov, folder, env, gpu=None):
        started.append((folder.path.name, env.get("CUDA_VISIBLE_DEVICES"), env.get(ENV_RUNS_ON_GPU),
                        env[ENV_CONCURRENT]))
        return folder, 0, None

    monkeypatch.setattr(runs, "_train_in_worker", fake)
    return started


def test_ensure_spreads_workers_over_the_gpus(tmp_path, monkeypatch):
    started = _fake_workers(monkeypatch, ["0", "1", "2", "3"])
    ovs = [[f"results_dir={tmp_path}", f"seed={s}"] for s in range(8)]
    runs.ensure(ovs, jobs=8)
    assert len(started) == 8
    per_gpu = {g: sum(1 for _, gg, _, _ in started if gg == g) for g in "0123"}
    assert per_gpu == {"0": 2, "1": 2, "2": 2, "3": 2}  # 8 slots, two on each GPU, each used once
    assert {(k, c) for _, _, k, c in started} == {("2", "2")}
    started.clear()
    runs.ensure(ovs[:3], jobs=None, jobs_per_gpu=1)  # one per GPU: three runs on three distinct GPUs
    assert sorted(g for _, g, _, _ in started) == ["0", "1", "2"]
    assert {k for _, _, k, _ in started} == {"1"}
    started.clear()
    runs.ensure(ovs[:4], jobs=None, jobs_per_gpu=7)  # 4 runs in 28 slots: one per GPU, each alone on it
    assert sorted(g for _, g, _, _ in started) == ["0", "1", "2", "3"]
    assert {(k, c) for _, _, k, c in started} == {("1", "1")}


def test_ensure_refuses_multi_device_runs_on_pinned_workers(tmp_path, monkeypatch):
    _fake_workers(monkeypatch, ["0", "1"])
    with pytest.raises(ValueError, match=r"use several devices \(trainer.devices != 1\), but workers are "
                                         r"pinned to one GPU each; train them with jobs=1"):
        runs.ensure([[f"results_dir={tmp_path}", "trainer.devices=2", f"seed={s}"] for s in range(2)], jobs=2)


def test_ensure_without_gpus_runs_workers_as_before(tmp_path, monkeypatch):
    started = _fake_workers(monkeypatch, [])
    runs.ensure([[f"results_dir={tmp_path}", f"seed={s}"] for s in range(3)], jobs=2)
    assert {(g, k, c) for _, g, k, c in started} == {(None, None, "2")}


def test_ensure_starts_no_run_past_its_deadline(tmp_path, monkeypatch, capsys):
    """A run starts only if its estimate ends before the deadline (unknown: it starts); the rest are returned,
    each with one line; with workers and in this process alike."""
    started = _fake_workers(monkeypatch, ["0"])
    built = []  # the tasks' data is built only when a run can start (it cost a lease ~150 s for nothing)
    monkeypatch.setattr(runs, "build_data", lambda ovs: built.append(len(ovs)))
    ovs = [[f"results_dir={tmp_path}", f"seed={s}"] for s in range(3)]
    estimate = {0: 10.0, 1: 1e6, 2: None}  # seconds: fits, does not fit, unknown
    seconds = lambda ov: estimate[int(ov[1].split("=")[1])]
    skipped = runs.ensure(ovs, jobs=2, deadline=time.monotonic() + 600, estimate=seconds)
    assert sorted(name for name, *_ in started) == ["sessa-symbol_soup-tiny-s0", "sessa-symbol_soup-tiny-s2"]
    assert [f.path.name for f in skipped] == ["sessa-symbol_soup-tiny-s1"]
    assert built == [2]  # s0 and s2: not the data of s1, which cannot start
    assert re.search(r"^not started \S+-s1 \(time limit: ~1000000 s estimated, \d+ s left\)$", capsys.readouterr().out,
                     re.M)
    started.clear()
    assert len(runs.ensure(ovs, jobs=2, deadline=time.monotonic() - 1)) == 3 and started == []  # nothing left
    assert built == [2] and len(re.findall("^not started", capsys.readouterr().out, re.M)) == 3
    assert runs.ensure(ovs, jobs=2, estimate=seconds) == [] and len(started) == 3  # no deadline: all start
    trained = []
    monkeypatch.setattr("sessa_bench.train.run", lambda cfg: trained.append(cfg.seed))
    monkeypatch.setattr(runs, "visible_gpus", lambda: [])  # one slot without a GPU: in this process
    skipped = runs.ensure(ovs, jobs=1, deadline=time.monotonic() + 600, estimate=seconds)
    assert trained == [0, 2] and [f.path.name for f in skipped] == ["sessa-symbol_soup-tiny-s1"]


def test_one_gpus_runs_each_train_in_their_own_process(tmp_path, monkeypatch):
    """jobs=1 on a GPU: each run in a worker of its own, one after another (a CUDA error ends its process, and
    the bench's sixth run in one process hit one that no run alone did, lease 16); runs over several GPUs
    (DDP: it starts its ranks itself) and runs on a machine without GPUs train in this process."""
    started = _fake_workers(monkeypatch, ["0"])
    trained = []
    monkeypatch.setattr("sessa_bench.train.run", lambda cfg: trained.append(cfg.seed))
    ovs = [[f"results_dir={tmp_path}", f"seed={s}"] for s in range(2)]
    runs.ensure(ovs, jobs=1)
    assert [(name[-2:], gpu, k) for name, gpu, k, _ in started] == [("s0", "0", "1"), ("s1", "0", "1")]
    assert trained == []
    started.clear()
    runs.ensure([[*ov, "trainer.devices=2"] for ov in ovs], jobs=1)
    assert trained == [0, 1] and started == []


def test_calibrate_estimates_a_run_from_its_candidates_finished_runs(tmp_path, monkeypatch):
    """The estimate a calibration run is admitted by: its steps at the pace of its own candidate's finished
    runs (same task shapes), else the slowest of the sweep's, scaled to the GPU's sharing, x SAFETY; None before
    any run has finished. The sweep's slowest pace timed short candidates at 3.5x their time, so a lease's last
    462 s started none of them."""
    from sessa_bench import calibrate

    done = []
    monkeypatch.setattr(calibrate, "collect", lambda results_dir, experiment: list(done))
    ov = ["experiment=table1_diffuse_mqar", f"results_dir={tmp_path}", "trainer.max_steps=2000"]
    est = calibrate.estimator(tmp_path, "calibrate_diffuse_mqar_lr", 7, {"c4-lr3.3e-05": ov})
    assert est(ov) is None
    gpu7 = {"gpu": 0, "runs_on_gpu": 7}
    done += [{"run_name": "c0-lr0.0001", "steps": 2000, "wall_seconds_this_process": 1000.0, "placement": gpu7},
             {"run_name": "c1-lr0.0001", "steps": 2000, "wall_seconds_this_process": 1400.0, "placement": gpu7}]
    assert est(ov) == pytest.approx(1400.0 * 1.2)  # no run of c4 yet: the sweep's slowest
    assert calibrate.estimator(tmp_path, "x", 14, {"c4-lr0.01": ov})(ov) == pytest.approx(2800.0 * 1.2)
    done.append({"run_name": "c4-lr0.0001", "steps": 2000, "wall_seconds_this_process": 300.0, "placement": gpu7})
    assert est(ov) == pytest.approx(300.0 * 1.2)  # c4's own run times it


def test_calibrate_with_runs_left_unstarted_says_so_and_writes_no_table(tmp_path, monkeypatch):
    from sessa_bench import calibrate

    monkeypatch.setattr(runs, "ensure", lambda ovs, jobs, jobs_per_gpu, deadline, estimate:
                        [RunFolder(tmp_path / "calibrate_diffuse_mqar_lr" / "c0-lr0.0001")])
    out = calibrate.build(["c0"], [f"results_dir={tmp_path}"], run=True, out=tmp_path / "t.md", time_limit=100)
    assert out == ("time limit: 1 of the 3 calibration runs left were not started (c0-lr0.0001); rerun to train "
                   "them, then the table is written")
    assert not (tmp_path / "t.md").exists()
    with pytest.raises(ValueError, match=r"^time_limit=0 \(--time-limit\): must be > 0"):
        calibrate.build(["c0"], [f"results_dir={tmp_path}"], run=True, time_limit=0)


def test_tables_and_calibrate_pass_jobs_per_gpu(tmp_path, monkeypatch):
    """Into an empty results dir: the protocol reopens the folders a round extends before training them, and
    the committed run folders must not be touched by a test."""
    from sessa_bench import calibrate, tables

    class Called(Exception):
        pass

    def ensure(ovs, jobs=1, jobs_per_gpu=None, deadline=None, estimate=None):
        raise Called(jobs, jobs_per_gpu)

    monkeypatch.setattr(runs, "ensure", ensure)
    for argv, want in ((["--jobs-per-gpu", "2"], (None, 2)), (["--jobs", "3", "--jobs-per-gpu", "2"], (3, 2)),
                       ([], (1, None))):
        for main, head in ((tables.main, ["table1", "--results-dir", str(tmp_path)]),
                           (calibrate.main, ["--results-dir", str(tmp_path)])):
            with pytest.raises(Called) as e:
                main([*head, "--run", *argv])
            assert e.value.args == want


# --- one run across processes: who writes, what the other ranks run ---------------------------------------
@pytest.mark.parametrize("env,zero", [({}, True), ({"LOCAL_RANK": "0"}, True), ({"LOCAL_RANK": "1"}, False),
                                      ({"SLURM_PROCID": "0", "LOCAL_RANK": "1"}, False),
                                      ({"SLURM_PROCID": "5"}, False), ({"NODE_RANK": "1"}, False),
                                      ({"RANK": "3"}, False)])
def test_only_global_rank_zero_writes(monkeypatch, env, zero):
    for v in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(v, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert is_rank_zero() is zero


def test_other_ranks_run_this_run_alone(tmp_path):
    """Under a multirun sys.argv is the whole sweep; the other ranks get this job's overrides only."""
    ov = [f"results_dir={tmp_path}", "model=mamba2", "seed=3", "task.train_lag=[8,31]"]
    compose_train(["task=diffuse_mqar", *ov])  # sets HydraConfig as @hydra.main does for each job
    cmd, cwd = rank_command(1)
    assert cmd == [sys.executable, "-m", "sessa_bench.train", "task=diffuse_mqar", *ov]


def test_resume_on_another_number_of_processes_is_the_same_run():
    """data.batch_size is global, so devices/num_nodes/strategy do not change what a run computes."""
    old = {"trainer": {"devices": 1, "strategy": "auto", "num_nodes": 1, "precision": "bf16-mixed"}}
    new = {"trainer": {"devices": 4, "strategy": "ddp", "num_nodes": 2, "precision": "bf16-mixed"}}
    assert config_changes(old, new) == []
    assert config_changes(old, {"trainer": {**new["trainer"], "precision": "32-true"}}) == [
        "trainer.precision: 'bf16-mixed' -> '32-true'"]


def test_runs_cli_expands_a_sweep_like_hydra(tmp_path, monkeypatch):
    assert runs.expand(["model=sessa,transformer", "seed=range(0,2)", "task.train_lag=[8,31]"]) == [
        ["model=sessa", "seed=0", "task.train_lag=[8,31]"], ["model=sessa", "seed=1", "task.train_lag=[8,31]"],
        ["model=transformer", "seed=0", "task.train_lag=[8,31]"],
        ["model=transformer", "seed=1", "task.train_lag=[8,31]"]]
    got = []
    monkeypatch.setattr(runs, "ensure", lambda ovs, jobs, jobs_per_gpu: got.append((ovs, jobs, jobs_per_gpu)))
    runs.main(["--jobs-per-gpu", "2", "seed=0,1"])
    assert got == [([["seed=0"], ["seed=1"]], None, 2)]


def test_tables_trains_only_the_experiments_asked_for(tmp_path, monkeypatch):
    from sessa_bench import tables

    class Stop(Exception):
        pass

    got = []

    def ensure(ovs, jobs, jobs_per_gpu=None):
        got.extend(ovs)
        raise Stop  # the first sweep round is enough: which experiments it trains

    monkeypatch.setattr(runs, "ensure", ensure)
    with pytest.raises(Stop):
        tables.main(["table1", "--run", "--experiments", "table1_symbol_soup", "--results-dir", str(tmp_path)])
    assert len(got) == 9 and all("experiment=table1_symbol_soup" in ov for ov in got)
    with pytest.raises(ValueError, match=r"experiments=\['table2_simplestories'\]: table1 has the experiments"):
        tables.build("table1", run=True, only=["table2_simplestories"])
