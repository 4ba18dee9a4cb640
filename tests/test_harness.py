"""The training harness end to end on CPU: run folders, skip, resume, bad input, a user-added mixer."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from sessa_bench.compose import compose_train
from sessa_bench.run_folder import RunFolder, git_commit
from sessa_bench.train import run

ROOT = Path(__file__).resolve().parent.parent
SMALL_SOUP = ["task.min_len=41", "task.max_len=61", "task.n_train=200", "task.n_val=40", "task.n_test=40"]


def overrides(tmp_path, *extra):
    return [f"results_dir={tmp_path}/runs", "logger=none", "trainer.enable_progress_bar=false", "budget=tiny",
            "trainer.max_steps=6", "trainer.val_check_interval=3", "callbacks.checkpoint.every_n_steps=2", "trainer.log_every_n_steps=1",
            "data.batch_size=4", *SMALL_SOUP, *extra]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))


def test_run_folder_contract_and_skip(tmp_path, caplog, monkeypatch):
    import sessa_bench.flops
    monkeypatch.setattr(sessa_bench.flops, "peak_flops", lambda device: 1e12)  # as if the CPU had a known peak
    cfg = compose_train(overrides(tmp_path, "model=transformer"))
    summary = run(cfg)
    folder = RunFolder(tmp_path / "runs" / "default" / "transformer-symbol_soup-tiny-s0")
    assert folder.is_finished()
    saved = OmegaConf.load(folder.config)
    assert saved.model.family == "transformer" and "hydra" not in saved
    lines = folder.read_metrics()
    assert [l["step"] for l in lines if "train/loss" in l] == sorted(l["step"] for l in lines if "train/loss" in l)
    # the gradient norm before clipping, with every logged training loss
    train = [l for l in lines if "train/loss" in l]
    assert train and all(0 < l["train/grad_norm"] < float("inf") for l in train)
    assert any("val/acc" in l for l in lines)
    for key in ("val/acc", "test/acc", "val/loss"):
        assert 0 <= summary["final"][key] < 100
    assert summary["params"]["total"] > 0 and abs(summary["params"]["deviation"]) <= 0.02
    assert summary["backends"] == ["sdpa"] and summary["git_commit"] and summary["hardware"]["torch"]
    assert summary["compile"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", summary["finished_at"])  # the estimates' tie-break
    assert 0 <= summary["startup_seconds"] < summary["wall_seconds_this_process"]  # counted once by the estimates
    assert summary["steps"] == 6 and summary["throughput_tokens_per_s"] > 0
    flops = summary["throughput_tokens_per_s"] * summary["cost"]["train_flops_per_token"]
    assert summary["mfu"] == pytest.approx(flops / (1e12 * summary["world_size"]))
    # a rerun is skipped and leaves the folder as it was
    before = folder.summary.read_text()
    mtime = folder.summary.stat().st_mtime_ns
    with caplog.at_level("INFO", logger="sessa_bench"):
        assert run(compose_train(overrides(tmp_path, "model=transformer"))) == json.loads(before)
    assert folder.summary.stat().st_mtime_ns == mtime
    assert "skipping finished run" in caplog.text
    # the same run name with different hyperparameters is an error, not a silent skip
    with pytest.raises(ValueError, match=r"different config \(optim.lr: 0.001 -> 0.5\)"):
        run(compose_train(overrides(tmp_path, "model=transformer", "optim.lr=0.5")))


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """One finished run of the tiny Transformer on CPU (its peak FLOPs unknown), shared by the tests that only
    read it: its returned summary and its folder."""
    tmp = tmp_path_factory.mktemp("cpu_run")
    mp = pytest.MonkeyPatch()
    mp.setenv("SESSA_BENCH_CACHE", str(tmp / "cache"))
    try:
        summary = run(compose_train(overrides(tmp, "model=transformer")))
    finally:
        mp.undo()
    return summary, tmp / "runs" / "default" / "transformer-symbol_soup-tiny-s0"


def test_mfu_is_null_in_the_summary_where_the_peak_is_unknown(cpu_run):
    """On CPU (no known peak) summary.json has MFU null, not NaN (the bench tables' convention, not JSON)."""
    summary, folder = cpu_run
    saved = json.loads(RunFolder(folder).summary.read_text())
    assert summary["throughput_tokens_per_s"] > 0  # so the null is the peak's, not a missing throughput
    assert summary["mfu"] is None and saved["mfu"] is None


def test_git_commit_is_head_or_the_named_commit(monkeypatch):
    monkeypatch.delenv("SESSA_BENCH_GIT_COMMIT", raising=False)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if head:
        assert git_commit().removesuffix("-dirty") == head
    # on the GPU machine the copy's .git need not match the code, so the commit named for the run wins
    monkeypatch.setenv("SESSA_BENCH_GIT_COMMIT", "0123abcd")
    assert git_commit() == "0123abcd"


def _train_subprocess(tmp_path, *extra):
    env = {**os.environ, "SESSA_BENCH_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "sessa_bench.train", *overrides(tmp_path, *extra)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_resume_after_kill_matches_uninterrupted(tmp_path):
    common = ["model=sessa", "trainer.max_steps=8", "trainer.val_check_interval=4"]
    killed = _train_subprocess(tmp_path, *common, "experiment_name=resumed", "debug.kill_at_step=4")
    assert killed.returncode == 17, killed.stderr[-2000:]
    folder = RunFolder(tmp_path / "runs" / "resumed" / "sessa-symbol_soup-tiny-s0")
    assert folder.checkpoint.exists() and not folder.is_finished()
    resumed = _train_subprocess(tmp_path, *common, "experiment_name=resumed", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout
    # the uninterrupted reference trains in this process (no interpreter start-up): the same run, its own folder
    run(compose_train(overrides(tmp_path, *common, "experiment_name=full")))
    a = folder.read_summary()["final"]
    b = RunFolder(tmp_path / "runs" / "full" / "sessa-symbol_soup-tiny-s0").read_summary()["final"]
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k
    # the metrics file of the resumed run holds each training step once
    steps = [l["step"] for l in folder.read_metrics() if "train/loss" in l]
    assert len(steps) == len(set(steps))


@pytest.mark.parametrize("bad, match", [
    (["model=gpt5"], "model"),
    (["task=nonexistent"], "task"),
    (["budget=huge"], "budget"),
    (["trainer.max_steps=-3"], "trainer.max_steps"),
    (["trainer.max_steps=many"], "max_steps"),
    (["trainer.no_such_key=1"], "no_such_key"),
    (["task.data_dir=/no/such/folder"], "data_dir"),
    (["+model.mixer_kwargs.gamma_max=1.5", "model=sessa"], "gamma_max"),
])
def test_bad_input_fails_clearly_and_writes_nothing(tmp_path, bad, match):
    with pytest.raises(Exception, match=match):
        run(compose_train(overrides(tmp_path, *bad)))
    assert not (tmp_path / "runs").exists()  # nothing was started, so nothing a rerun could trust


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    folder = RunFolder(tmp_path / "runs" / "default" / "transformer-symbol_soup-tiny-s0")
    folder.checkpoint.parent.mkdir(parents=True)
    folder.checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="corrupt"):
        run(compose_train(overrides(tmp_path, "model=transformer")))


def test_new_baseline_from_one_yaml(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    confdir = tmp_path / "myconf" / "model"
    confdir.mkdir(parents=True)
    (confdir / "running_mean.yaml").write_text(
        "defaults:\n  - model_schema\n  - _self_\nfamily: running_mean\nmixer: toy_mixer.RunningMeanMixer\n"
        "mixer_kwargs: {scale: 0.5}\n")
    cfg = compose_train(overrides(tmp_path, "model=running_mean",
                                  f"hydra.searchpath=[file://{tmp_path / 'myconf'}]"))
    summary = run(cfg)
    assert summary["family"] == "running_mean" and summary["model"]["mixer"] == "toy_mixer.RunningMeanMixer"
    assert abs(summary["params"]["deviation"]) <= 0.02


def test_toy_mixer_decodes_like_parallel():
    sys.path.insert(0, str(Path(__file__).parent))
    from toy_mixer import RunningMeanMixer
    m = RunningMeanMixer(8, 1).double()
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    cache = m.init_cache(2, 7, dtype=torch.float64)
    assert torch.allclose(m(x, cache), m(x))


def test_eval_reproduces_the_final_test_metrics(cpu_run, tmp_path):
    import shutil

    from sessa_bench.evaluate import evaluate
    summary = cpu_run[0]
    folder = tmp_path / "run"  # a copy: its checkpoint is spoilt below
    shutil.copytree(cpu_run[1], folder)
    again = evaluate(folder, "test", accelerator="cpu")
    assert again["test/acc"] == pytest.approx(summary["final"]["test/acc"])
    assert json.loads((folder / "eval_test.json").read_text())["test/acc"] == again["test/acc"]
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"\x00garbage")
    with pytest.raises(RuntimeError, match="corrupt"):
        evaluate(folder)


def test_wandb_logger_offline_mirrors_the_run(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    res = subprocess.run([sys.executable, "-m", "sessa_bench.train", *overrides(tmp_path, "model=transformer"),
                          "logger=wandb", "trainer.max_steps=2", "trainer.val_check_interval=2"],
                         cwd=ROOT, env={**env, "SESSA_BENCH_CACHE": str(tmp_path / "cache")},
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    folder = tmp_path / "runs" / "default" / "transformer-symbol_soup-tiny-s0"
    runs = list((folder / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and RunFolder(folder).is_finished()


def test_cli_multirun_runs_every_family_and_writes_nothing_in_cwd(tmp_path):
    env = {**os.environ, "SESSA_BENCH_CACHE": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-m", "sessa_bench.cli", "train", "-m", "model=transformer,mamba2",
                          *overrides(tmp_path, "trainer.max_steps=2", "trainer.val_check_interval=2")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    exp = tmp_path / "runs" / "default"
    assert {p.name for p in exp.iterdir()} == {"transformer-symbol_soup-tiny-s0", "mamba2-symbol_soup-tiny-s0",
                                               "multirun.yaml"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "runs"]


def test_step_batches_are_a_pure_function_of_seed_and_step():
    from sessa_bench.data import StepBatchSampler
    a = StepBatchSampler(10, 4, seed=3)
    batches = [a.batch(s) for s in range(5)]  # 20 draws = two full passes over 10 examples
    assert sorted(sum(batches[:2], []) + batches[2][:2]) == list(range(10))  # a pass covers every example once
    resumed = StepBatchSampler(10, 4, seed=3, start_step=lambda: 3)
    it = iter(resumed)
    assert [next(it), next(it)] == batches[3:5]
    assert StepBatchSampler(10, 4, seed=4).batch(0) != batches[0]


@pytest.mark.parametrize("bar", [None, "a progress bar"])
def test_training_step_logs_without_a_host_sync(bar):
    """train/lr goes to Lightning as a CPU tensor: from a Python float Lightning builds a tensor on the model's
    device, a blocking copy that made the GPU finish the forward before the backward was launched, every step.
    train/loss goes on the progress bar only when there is one: Lightning makes every progress-bar metric a
    Python number after each batch, a sync that tests/test_gpu_harness_syncs.py found in every family."""
    from sessa_bench.lit_module import LitSequenceModel

    class Trainer:  # what training_step reads from its trainer
        def __init__(self, opt):
            self.optimizers, self.progress_bar_callback = [opt], bar

    cfg = dict(vocab_size=32, d_model=16, n_layers=1, n_heads=2, mixer="attention", mixer_kwargs={"backend": "math"})
    optim = dict(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, warmup_steps=1, min_lr_ratio=0.1)
    lit = LitSequenceModel(cfg, optim, 10)
    opt = lit.configure_optimizers()["optimizer"]
    lit.trainer = Trainer(opt)
    logged, on_bar = {}, {}
    lit.log = lambda name, value, **kw: (logged.setdefault(name, value), on_bar.setdefault(name, kw.get("prog_bar")))
    ids = torch.randint(0, 32, (2, 8))
    lit.training_step({"input_ids": ids, "labels": ids}, 0)
    assert on_bar == {"train/loss": bar is not None, "train/lr": None}
    lr = logged["train/lr"]
    assert isinstance(lr, torch.Tensor) and lr.device.type == "cpu"
    assert lr.item() == pytest.approx(opt.param_groups[0]["lr"])


def test_fused_adamw_where_nothing_needs_unscaling_and_its_clipping_is_lightnings():
    """On CUDA the harness steps with fused AdamW (as the bench's bare step) unless a GradScaler must unscale
    first (16-mixed). Lightning will not clip for a fused optimizer, so the module clips: the same update as
    Lightning's clip_grad_norm_ and a foreach AdamW, here on CPU (fused AdamW runs there too)."""
    from sessa_bench.lit_module import LitSequenceModel, use_fused_adamw
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert use_fused_adamw(cuda, "bf16-mixed") and use_fused_adamw(cuda, "32-true")
    assert not use_fused_adamw(cuda, "16-mixed") and not use_fused_adamw(cpu, "bf16-mixed")

    cfg = dict(vocab_size=32, d_model=16, n_layers=1, n_heads=2, mixer="attention", mixer_kwargs={"backend": "math"})
    optim = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, warmup_steps=1, min_lr_ratio=0.1)
    ids = torch.randint(0, 32, (2, 8))
    weights = []
    for fused in (True, False):
        torch.manual_seed(0)
        lit = LitSequenceModel(cfg, optim, 10)
        opt = torch.optim.AdamW(lit.parameters(), lr=1e-2, fused=fused or None)
        lit.loss(lit({"input_ids": ids}), ids).mul(1e3).backward()  # a gradient norm far above 1
        if fused:
            lit.configure_gradient_clipping(opt, 1.0, "norm")
        else:
            torch.nn.utils.clip_grad_norm_(lit.parameters(), 1.0)
        assert torch.nn.utils.get_total_norm([p.grad for p in lit.parameters()]) <= 1.0 + 1e-5
        opt.step()
        weights.append(torch.cat([p.detach().flatten() for p in lit.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-6)
