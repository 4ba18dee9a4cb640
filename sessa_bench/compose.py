"""Compose the training config outside `@hydra.main` (demo, tables, tests), with the same defaults and
the same `${hydra:...}` interpolations as the command line."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sessa_bench import schema

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def available(group: str) -> list[str]:
    """The config names of one group of conf/ (model, experiment, calibrate, ...), sorted."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def compose_train(overrides: list[str] | None = None) -> DictConfig:
    schema.register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides or []), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def compose_file(name: str, overrides: list[str] | None = None) -> DictConfig:
    """Any other config file under conf/ (e.g. "calibrate/diffuse_mqar"), composed by Hydra."""
    if not (CONF_DIR / f"{name}.yaml").is_file():
        raise ValueError(f"config {name!r} does not exist under {CONF_DIR}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=list(overrides or []))
