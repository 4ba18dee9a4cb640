"""One W&B run per run folder, sliceable in W&B: the W&B side of `sessa_bench.train.run`.

- `log_config`: the full resolved config, flattened to dotted keys (`model.family`, `budget.name`,
  `task_name`, `optim.lr`, `seed`, ...) plus `params` (the solved model's total), set when the run starts,
  so W&B can filter and group by any of them. W&B stores a flat dotted key as `{"model.family": {"value":
  ...}}`: panels address it as `model.family.value` (sessa_bench.wandb_dashboard does).
- `log_summary`: the run folder's summary.json in the W&B summary: the final metrics under their own
  names (`test/acc`, `test/acc/lag=32-63`, ...; they replace the last logged value), everything else
  flattened to dotted keys (`params.total`, `task_facts.chance`, `throughput_tokens_per_s`, ...).
- `finish_active`: finish the process's W&B run. Lightning's WandbLogger adopts `wandb.run` when one is
  active, so without it every later run of a multirun, the demo or `runs.ensure(jobs=1)` logged into the
  first one.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from sessa_bench.run_folder import resolved_config


def flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are values."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def wandb_loggers(loggers) -> list:
    from lightning.pytorch.loggers import WandbLogger
    return [lg for lg in loggers if isinstance(lg, WandbLogger)]


def run_config(cfg: DictConfig, params: int) -> dict:
    return {**flatten(resolved_config(cfg)), "params": params}


def run_summary(summary: dict) -> dict:
    rest = {k: v for k, v in summary.items() if k != "final"}
    return {**summary["final"], **flatten(rest)}


def log_config(loggers, cfg: DictConfig, params: int) -> None:
    for lg in wandb_loggers(loggers):
        lg.experiment.config.update(run_config(cfg, params), allow_val_change=True)


def log_summary(loggers, summary: dict) -> None:
    for lg in wandb_loggers(loggers):
        lg.experiment.summary.update(run_summary(summary))


def finish_active(failed: bool) -> None:
    """Finish the active W&B run, if wandb is in use at all (exit code 1 marks a run that raised)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.run.finish(exit_code=1 if failed else 0)
