"""Structured-config schemas of the harness's own groups: they give Hydra the allowed keys and types, so an
unknown key or a wrong type fails at composition with OmegaConf's message naming the key. The trainer,
logger and callback groups are Lightning's own arguments (`_target_` configs, checked by Lightning). Ranges
that types cannot express (positive step counts, ...) are checked in `validate`."""

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
    tie_embeddings: bool = False         # models/config.py says why these two defaults
    embed_std: float = 1.0


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
class OptimSchema:
    lr: float = 1e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"             # cosine (decay to min_lr_ratio at max_steps) | constant (after warmup)


@dataclass
class DataSchema:
    batch_size: int = 16
    eval_batch_size: Optional[int] = None
    num_workers: int = 0


@dataclass
class EvalSchema:
    lengths: list[int] = field(default_factory=lambda: [1])   # length multipliers for retrieval tasks


SWEEP_SCORES = (None, "best", "last")  # sweep.score (None: as the run's callbacks.best says)


@dataclass
class SweepSchema:
    # The learning-rate grid of a paper table (sessa_bench.tables): every family trains seed 0 at each value,
    # the best validation metric picks its rate. Empty: no sweep, every run at optim.lr.
    lr: list[float] = field(default_factory=list)
    # How a rate's seed-0 run is scored at the grid's step count: best (its best validation up to it), last
    # (the last one at or before it); None: best when the run keeps a best-validation checkpoint, else last.
    score: Optional[str] = None
    # The longest an extension of an unconverged run trains (sessa_bench.tables); None: 4x trainer.max_steps.
    max_steps_cap: Optional[int] = None
    # The seeds of each of its table cells (seed 0: the sweep's run); None: the tables' --seeds, else 0 and 1.
    seeds: Optional[list[int]] = None


@dataclass
class DebugSchema:
    kill_at_step: Optional[int] = None  # tests: hard-exit after the checkpoint of this step


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="model", name="model_schema", node=ModelSchema)
    cs.store(group="budget", name="budget_schema", node=BudgetSchema)
    cs.store(name="optim_schema", node=OptimSchema, package="optim")
    cs.store(name="data_schema", node=DataSchema, package="data")
    cs.store(name="eval_schema", node=EvalSchema, package="eval")
    cs.store(name="debug_schema", node=DebugSchema, package="debug")
    cs.store(name="sweep_schema", node=SweepSchema, package="sweep")


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _plain_name(v) -> bool:
    """A single folder name: no path separator, not '.' or '..' (a run must stay inside results_dir)."""
    v = str(v)
    return bool(v) and "/" not in v and "\\" not in v and v not in (".", "..") and "\0" not in v


def validate(cfg) -> None:
    """Range checks with one clear message per field."""
    graphs = cfg.get("cuda_graphs", False) is True  # `auto` turns itself off where graphs do not apply
    checks = [
        ("experiment_name", _plain_name(cfg.experiment_name), "must be one folder name (no '/', '\\' or '..')"),
        ("run_name", _plain_name(cfg.run_name), "must be one folder name (no '/', '\\' or '..')"),
        ("trainer.max_steps", _int(cfg.trainer.max_steps) and cfg.trainer.max_steps >= 1, "must be an int >= 1"),
        ("trainer.val_check_interval", _int(cfg.trainer.val_check_interval) and cfg.trainer.val_check_interval >= 1,
         "must be an int >= 1 (steps between validations)"),
        ("trainer.log_every_n_steps", _int(cfg.trainer.log_every_n_steps) and cfg.trainer.log_every_n_steps >= 1,
         "must be an int >= 1"),
        ("trainer.gradient_clip_val", (cfg.trainer.gradient_clip_val or 0) >= 0, "must be >= 0 (0 disables clipping)"),
        ("callbacks.checkpoint.every_n_steps", _int(cfg.callbacks.checkpoint.every_n_steps)
         and cfg.callbacks.checkpoint.every_n_steps >= 1, "must be an int >= 1"),
        ("optim.lr", cfg.optim.lr > 0, "must be > 0"),
        ("optim.warmup_steps", cfg.optim.warmup_steps >= 0, "must be >= 0"),
        ("optim.min_lr_ratio", 0 <= cfg.optim.min_lr_ratio <= 1, "must lie in [0, 1]"),
        ("optim.schedule", cfg.optim.schedule in ("cosine", "constant"), "must be cosine or constant"),
        ("sweep.score", cfg.get("sweep", {}).get("score") in SWEEP_SCORES, "must be best or last"),
        ("sweep.lr", all(x > 0 for x in cfg.sweep.lr) and len(set(cfg.sweep.lr)) == len(cfg.sweep.lr),
         "must be distinct learning rates > 0 (or [] for no sweep)"),
        ("data.batch_size", cfg.data.batch_size >= 1, "must be >= 1"),
        ("data.num_workers", cfg.data.num_workers >= 0, "must be >= 0 (0 loads data in the training process)"),
        ("resume", str(cfg.resume) in ("auto", "True", "False", "true", "false"),
         "must be auto, true or false"),
        ("eval.lengths", all(int(x) >= 1 for x in cfg.eval.lengths), "must be positive multipliers"),
        ("cuda_graphs", cfg.get("cuda_graphs", False) in (True, False, "auto"), "must be true, false or auto"),
        ("cuda_graphs", not (graphs and cfg.compile), "must be false when compile=true (choose one of the two)"),
        ("cuda_graphs", not graphs or (cfg.trainer.get("accelerator") in ("gpu", "cuda")
                                       and cfg.trainer.get("devices") == 1),
         "needs one CUDA GPU: trainer=gpu (not cpu, not ddp)"),
        ("cuda_graphs", not graphs or (cfg.trainer.get("accumulate_grad_batches") or 1) == 1,
         "needs trainer.accumulate_grad_batches=1 (each replay overwrites the blocks' gradient buffers)"),
    ]
    for name, ok, msg in checks:
        if not ok:
            value = cfg
            for part in name.split("."):
                value = value[part]
            raise ValueError(f"{name}={value!r} {msg}")
