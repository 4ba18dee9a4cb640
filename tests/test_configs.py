"""Every config in conf/ composes, and every experiment runs 2 training steps on CPU (lightning-hydra-
template's smoke test). Data sizes are shrunk through the task's own keys where it has them."""

from functools import lru_cache
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sessa_bench.compose import CONF_DIR, compose_train
from sessa_bench.train import run

ROOT = Path(__file__).resolve().parent.parent
GROUPS = ("model", "budget", "task", "trainer", "logger", "callbacks")
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
FIXTURE = ROOT / "tests" / "fixtures" / "simplestories"


def options(group):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@lru_cache(maxsize=None)
def composed(*overrides):
    """compose_train, once per override list in this module: the composition tests' configs, which the
    training test reads its task's keys from (the task does not depend on the rest of its overrides)."""
    return compose_train(list(overrides))


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_option_composes(group):
    assert options(group), group
    for name in options(group):
        cfg = compose_train([f"{group}={name}"])
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_for_every_family(name):
    for fam in ("sessa", "transformer", "mamba2", "sessa_nofb"):
        cfg = composed(f"experiment={name}", f"model={fam}")
        assert cfg.experiment_name and cfg.model.family == fam


def shrink(cfg) -> list[str]:
    task = cfg.task
    out = [f"task.{k}={v}" for k, v in (("n_train", 16), ("n_val", 4), ("n_test", 4)) if k in task]
    if "min_len" in task:
        out += ["task.min_len=41", "task.max_len=61"]
    if "train_lag" in task and "n_pairs" in task:  # Diffuse MQAR: short lags, so short train/test sequences
        out += ["task.n_pairs=4", "task.n_queries=4", "task.train_lag=[4,15]"]
    if "corpus" in task:
        out += ["task.seq_len=32"]
        if task.corpus == "simplestories":  # no hub here: the fixture in the dataset's own layout
            out += [f"task.data_dir={FIXTURE}", "task.vocab_size=300",
                    "task.tokenizer=tasks/tokenizers/simplestories-fixture-bpe300.json"]
        else:  # its val and test splits are the corpus's own (no size key): evaluate two batches of each
            out += ["task.max_train_tokens=4000", "trainer.limit_val_batches=2", "+trainer.limit_test_batches=2"]
    return out


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_trains_two_steps(name, tmp_path, monkeypatch):
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))
    base = [f"experiment={name}", f"results_dir={tmp_path}", "budget=tiny", "trainer=cpu", "logger=none",
            "trainer.max_steps=2", "trainer.val_check_interval=2", "callbacks.checkpoint.every_n_steps=2", "trainer.enable_progress_bar=false",
            "data.batch_size=2", "data.eval_batch_size=64", "eval.lengths=[1]", "probe=false"]  # few eval steps
    summary = run(compose_train(base + shrink(composed(f"experiment={name}", "model=sessa"))))
    assert summary["steps"] == 2
    assert any(k.startswith("test/") for k in summary["final"])
