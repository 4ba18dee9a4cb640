"""Structured-config schemas: they give Hydra the allowed keys and types of each config group, so an
unknown key or a wrong type fails at composition with OmegaConf's message naming the key. Ranges that
types cannot express (positive step counts, ...) are checked in `validate`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelSchema:
    family: str = MISSING
    mixer: str = MISSING                 # registry name or dotted path to a Mixer class
    mixer_kwargs: dict[str, Any] = field(default_factory=dict)
    block: str = "gated"
    mlp_ratio: int = 4
    tie_embeddings: bool = True


@dataclass
class BudgetSchema:
    name: str = MISSING
    target_params: int = MISSING
    d_model: int = MISSING
    n_heads: int = MISSING
    tolerance: float = 0.02
    n_layers: Optional[int] = None       # set to skip the solver and use d_model x n_layers as given
    mixer_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainerSchema:
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_steps: int = 300
    val_every: int = 100
    ckpt_every: int = 100
    log_every: int = 10
    grad_clip: float = 1.0
    limit_val_batches: Optional[int] = None   # None: the whole validation split
    progress_bar: bool = True


@dataclass
class OptimSchema:
    lr: float = 1e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1


@dataclass
class DataSchema:
    batch_size: int = 16
    eval_batch_size: Optional[int] = None
    num_workers: int = 0


@dataclass
class LoggerSchema:
    kind: str = "csv"                   # csv | wandb | none (metrics.jsonl is always written)
    project: str = "sessa-bench"
    entity: Optional[str] = None
    mode: str = "offline"               # wandb mode; sync later with `wandb sync`


@dataclass
class EvalSchema:
    lengths: list[int] = field(default_factory=lambda: [1])   # length multipliers for retrieval tasks


@dataclass
class DebugSchema:
    kill_at_step: Optional[int] = None  # tests: hard-exit after the checkpoint of this step


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="model", name="model_schema", node=ModelSchema)
    cs.store(group="budget", name="budget_schema", node=BudgetSchema)
    cs.store(group="trainer", name="trainer_schema", node=TrainerSchema)
    cs.store(group="logger", name="logger_schema", node=LoggerSchema)
    cs.store(name="optim_schema", node=OptimSchema, package="optim")
    cs.store(name="data_schema", node=DataSchema, package="data")
    cs.store(name="eval_schema", node=EvalSchema, package="eval")
    cs.store(name="debug_schema", node=DebugSchema, package="debug")


def validate(cfg) -> None:
    """Range checks with one clear message per field."""
    checks = [
        ("trainer.max_steps", cfg.trainer.max_steps >= 1, "must be >= 1"),
        ("trainer.val_every", cfg.trainer.val_every >= 1, "must be >= 1"),
        ("trainer.ckpt_every", cfg.trainer.ckpt_every >= 1, "must be >= 1"),
        ("trainer.log_every", cfg.trainer.log_every >= 1, "must be >= 1"),
        ("trainer.grad_clip", cfg.trainer.grad_clip >= 0, "must be >= 0 (0 disables clipping)"),
        ("optim.lr", cfg.optim.lr > 0, "must be > 0"),
        ("optim.warmup_steps", cfg.optim.warmup_steps >= 0, "must be >= 0"),
        ("optim.min_lr_ratio", 0 <= cfg.optim.min_lr_ratio <= 1, "must lie in [0, 1]"),
        ("data.batch_size", cfg.data.batch_size >= 1, "must be >= 1"),
        ("logger.kind", cfg.logger.kind in ("csv", "wandb", "none"), "must be one of csv, wandb, none"),
        ("resume", str(cfg.resume) in ("auto", "True", "False", "true", "false"),
         "must be auto, true or false"),
        ("eval.lengths", all(int(x) >= 1 for x in cfg.eval.lengths), "must be positive multipliers"),
    ]
    for name, ok, msg in checks:
        if not ok:
            value = cfg
            for part in name.split("."):
                value = value[part]
            raise ValueError(f"{name}={value!r} {msg}")
