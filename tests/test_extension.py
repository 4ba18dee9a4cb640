"""Extending a finished run to more steps (optim.schedule=constant) computes exactly what one longer run
computes; under the cosine schedule, whose rate depends on the step count, the extension is refused; the
learning-rate schedules themselves against their closed forms."""

import json
import math

import pytest
from omegaconf import OmegaConf

from sessa_bench.compose import compose_train
from sessa_bench.lit_module import lr_lambda
from sessa_bench.run_folder import RunFolder, atomic_write_text, extension_of, resolved_config
from sessa_bench.runs import pending
from sessa_bench.train import run

SOUP = ["task.min_len=41", "task.max_len=61", "task.n_train=64", "task.n_val=16", "task.n_test=16"]
TIMING = ("train/tokens_per_s",)  # wall-clock measurements, the only values allowed to differ


def overrides(tmp_path, name, steps, *extra):
    return [f"results_dir={tmp_path}/runs", f"experiment_name={name}", "logger=none", "budget=tiny",
            "model=transformer", "trainer.enable_progress_bar=false", f"trainer.max_steps={steps}",
            "trainer.val_check_interval=2", "callbacks.checkpoint.every_n_steps=3", "trainer.log_every_n_steps=1",
            "data.batch_size=4", "optim.warmup_steps=2", "optim.lr=3e-3", *SOUP, *extra]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))


def _rows(folder: RunFolder) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in folder.read_metrics()]


def test_extension_equals_the_long_run(tmp_path):
    const = ["optim.schedule=constant"]
    long = run(compose_train(overrides(tmp_path, "long", 8, *const)))
    short = run(compose_train(overrides(tmp_path, "ext", 4, *const)))
    folder = RunFolder(tmp_path / "runs" / "ext" / "transformer-symbol_soup-tiny-s0")
    assert short["steps"] == 4 and folder.is_finished()
    # the checkpoint interval may change with the extension (3 -> 5): it only says when state is saved
    ext = run(compose_train(overrides(tmp_path, "ext", 8, *const, "callbacks.checkpoint.every_n_steps=5")))
    assert ext["steps"] == long["steps"] == 8 and ext["resumed_from_step"] == 4
    assert ext["final"] == long["final"]
    assert _rows(folder) == _rows(RunFolder(tmp_path / "runs" / "long" / "transformer-symbol_soup-tiny-s0"))
    assert ext["wall_seconds_total"] > ext["wall_seconds_this_process"]  # the first segment's time is kept
    assert json.loads(folder.previous.read_text())["steps"] == 4
    # a rerun with the same (larger) count is skipped; fewer steps than the run has is another config
    assert run(compose_train(overrides(tmp_path, "ext", 8, *const))) == ext
    with pytest.raises(ValueError, match="trainer.max_steps: 8 -> 4"):
        run(compose_train(overrides(tmp_path, "ext", 4, *const)))


def test_extension_without_the_checkpoint_retrains_the_same_run(tmp_path, capsys):
    """A folder copied off a GPU machine has no checkpoint: its extension trains from step 0 on the same data
    order, so it ends where the long run ends."""
    import shutil
    const = ["optim.schedule=constant"]
    long = run(compose_train(overrides(tmp_path, "long", 8, *const)))
    run(compose_train(overrides(tmp_path, "copied", 4, *const)))
    folder = RunFolder(tmp_path / "runs" / "copied" / "transformer-symbol_soup-tiny-s0")
    shutil.rmtree(folder.checkpoint.parent)
    first = _rows(folder)
    folder.probe.write_text(json.dumps({"run": {"steps": 4}}))  # the short run's own probe (probe=true)
    assert folder.probe_current()
    ext = run(compose_train(overrides(tmp_path, "copied", 8, *const)))
    assert "no checkpoint in" in capsys.readouterr().out
    # that probe measured the 4-step model: moved aside, so no reader takes it for the 8-step one's
    assert not folder.probe.exists() and json.loads(folder.probe_prev.read_text())["run"]["steps"] == 4
    assert ext["resumed_from_step"] is None and ext["steps"] == 8 and ext["final"] == long["final"]
    # the first training's lines stay beside the new ones (the sweep scores them), and its time counts
    prev = [{k: v for k, v in r.items() if k not in TIMING + ("training_steps",)}
            for r in folder.read_metrics(folder.metrics_prev)]
    assert prev == first[:json.loads(folder.previous.read_text())["fit_metrics_lines"]]
    assert {r["training_steps"] for r in folder.read_metrics(folder.metrics_prev)} == {4}
    assert ext["wall_seconds_total"] > ext["wall_seconds_this_process"]


BEST = ["trainer.enable_checkpointing=true", "+callbacks.best._target_=lightning.pytorch.callbacks.ModelCheckpoint",
        "+callbacks.best.monitor=val/acc", "+callbacks.best.mode=max", "+callbacks.best.filename=best",
        "+callbacks.best.save_top_k=1", "+callbacks.best.enable_version_counter=false"]


def test_an_extension_that_keeps_the_best_checkpoint_retrains_from_step_0(tmp_path, capsys):
    """A run kept before its config asked for the best-validation checkpoint (the paper tables, 2026-11-29):
    with the same step count it is the same finished run (it says it reports its last model); its extension
    does not resume from the last checkpoint, which holds no best so far, but trains from step 0 and reports
    the best validation's model, ending where a run that kept the best from the start ends."""
    const = ["optim.schedule=constant"]
    long = run(compose_train(overrides(tmp_path, "long", 8, *const, *BEST)))
    short = run(compose_train(overrides(tmp_path, "ext", 4, *const)))
    assert short["test_from"] == "last" and short["best_step"] is None
    assert run(compose_train(overrides(tmp_path, "ext", 4, *const, *BEST))) == short  # the same run
    capsys.readouterr()
    ext = run(compose_train(overrides(tmp_path, "ext", 8, *const, *BEST)))
    assert "holds no best-validation state and this run keeps one (callbacks.best): training from step 0" \
        in capsys.readouterr().out
    assert ext["resumed_from_step"] is None and ext["steps"] == 8
    assert ext["test_from"] == long["test_from"] == "best" and ext["best_step"] == long["best_step"]
    assert ext["final"] == long["final"]
    # a checkpoint of a run that keeps the best resumes as before
    more = run(compose_train(overrides(tmp_path, "ext", 12, *const, *BEST)))
    assert more["resumed_from_step"] == 8 and more["test_from"] == "best"


def test_cosine_runs_are_not_extended(tmp_path):
    run(compose_train(overrides(tmp_path, "cos", 4)))
    with pytest.raises(ValueError, match=r"max_steps: 4 -> 8\).*only under optim.schedule=constant"):
        run(compose_train(overrides(tmp_path, "cos", 8)))
    with pytest.raises(ValueError, match="optim.schedule='linear' must be cosine or constant"):
        run(compose_train(overrides(tmp_path, "bad", 4, "optim.schedule=linear")))


def test_schedules_against_closed_forms():
    warm, total, lo = 10, 110, 0.1
    cos, const = lr_lambda(warm, total, lo, "cosine"), lr_lambda(warm, total, lo, "constant")
    for step in (0, 4, 9):
        assert cos(step) == const(step) == (step + 1) / 10
    assert cos(10) == pytest.approx(1.0) and cos(60) == pytest.approx(lo + (1 - lo) / 2)
    assert cos(110) == pytest.approx(lo) and cos(500) == pytest.approx(lo)
    assert [const(s) for s in (10, 60, 110, 10 ** 6)] == [1.0] * 4
    assert lr_lambda(warm, 10 ** 6, lo, "constant")(60) == const(60)  # independent of the step count
    assert cos(35) == pytest.approx(lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * 25 / 100)))


def test_a_key_added_later_matches_older_runs_at_its_implicit_value():
    """model.embed_std came after the committed runs: their config.yaml lacks it, and they used 0.02. A new
    config holding 0.02 is the same run; one holding another value is another run."""
    from sessa_bench.run_folder import config_changes, extension_of
    old = {"model": {"family": "sessa"}, "trainer": {"max_steps": 10}, "optim": {"schedule": "constant"}}
    same = {"model": {"family": "sessa", "embed_std": 0.02}, "trainer": {"max_steps": 10},
            "optim": {"schedule": "constant"}}
    other = {**same, "model": {"family": "sessa", "embed_std": 1.0}}
    assert config_changes(old, same) == [] and extension_of(old, same) == 0
    assert config_changes(old, other) == ["model.embed_std: 0.02 -> 1.0"] and extension_of(old, other) is None
    assert extension_of(old, {**same, "trainer": {"max_steps": 20}}) == 20


def test_a_killed_extension_gives_back_the_finished_run(tmp_path):
    """An extension killed by a lease's end (its checkpoint stays on that machine) leaves a reopened folder;
    restore_previous puts the finished shorter run back as it was reported (summary.json byte for byte, its
    training lines), keeps the killed extension's lines apart, and refuses anything else."""
    const = ["optim.schedule=constant"]
    run(compose_train(overrides(tmp_path, "ext", 4, *const)))
    folder = RunFolder(tmp_path / "runs" / "ext" / "transformer-symbol_soup-tiny-s0")
    summary, lines = folder.summary.read_bytes(), folder.read_metrics()
    n = json.loads(summary)["fit_metrics_lines"]
    assert n < len(lines)  # the final evaluation's lines come after the training's
    (folder.path / "csv").mkdir()
    (folder.path / "csv" / "metrics.csv").write_bytes(b"step,train/loss\r\n1,2.0\r\n3,1.5\r\n5,1.0\r\n")
    config = folder.config.read_text()
    longer = compose_train(overrides(tmp_path, "ext", 8, *const))
    assert folder.reopen(longer)
    atomic_write_text(folder.config, OmegaConf.to_yaml(resolved_config(longer)))  # as the extension's start does
    killed = {"step": 5, "train/loss": 1.0}
    with folder.metrics.open("a") as f:
        f.write(json.dumps(killed) + "\n")
    assert folder.restore_previous() == 4
    assert folder.summary.read_bytes() == summary and folder.read_metrics() == lines[:n]
    # the config says the 4-step run again: the same extension is pending, not finished (a lease skipped it)
    assert folder.config.read_text() == config
    assert extension_of(OmegaConf.to_container(OmegaConf.load(folder.config)), resolved_config(longer)) == 8
    # a folder the old code restored (the extension's step count left in config.yaml): runs would skip it as
    # that extension finished while tables planned to extend it; now one clear error, before anything trains
    atomic_write_text(folder.config, OmegaConf.to_yaml(resolved_config(longer)))
    with pytest.raises(ValueError, match=r"finished at 4 steps but its config.yaml says trainer.max_steps=8; "
                                         r"set it to 4 there"):
        pending([overrides(tmp_path, "ext", 8, *const)])
    atomic_write_text(folder.config, config)
    assert pending([overrides(tmp_path, "ext", 8, *const)]) == []  # finished (tables reopens an extension first)
    assert folder.read_metrics(folder.metrics_interrupted) == [killed] and not folder.previous.exists()
    assert (folder.path / "csv" / "metrics.csv").read_bytes() == b"step,train/loss\r\n1,2.0\r\n3,1.5\r\n"
    with pytest.raises(ValueError, match="is not an interrupted extension"):
        folder.restore_previous()
    assert folder.reopen(compose_train(overrides(tmp_path, "ext", 8, *const)))
    folder.keep_training()  # as an extension that retrains from step 0 (no checkpoint) does
    with pytest.raises(ValueError, match="was retrained from step 0"):
        folder.restore_previous()
