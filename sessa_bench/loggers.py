"""Loggers: metrics.jsonl in the run folder (always), plus Lightning's CSV or W&B logger on request."""

from __future__ import annotations

from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.utilities import rank_zero_only

from sessa_bench.run_folder import RunFolder


class JsonlLogger(Logger):
    """One JSON line per logged step: {"step": s, "<metric>": value, ...}."""

    def __init__(self, folder: RunFolder):
        super().__init__()
        self.folder = folder

    @property
    def name(self):
        return "jsonl"

    @property
    def version(self):
        return 0

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs):
        pass

    @rank_zero_only
    def log_metrics(self, metrics, step=None):
        self.folder.append_metrics({"step": step, **{k: float(v) for k, v in metrics.items()}})


def build_loggers(cfg, folder: RunFolder, tags: list[str]) -> list[Logger]:
    loggers: list[Logger] = [JsonlLogger(folder)]
    if cfg.logger.kind == "csv":
        loggers.append(CSVLogger(save_dir=str(folder.path), name="csv", version=""))
    elif cfg.logger.kind == "wandb":
        from lightning.pytorch.loggers import WandbLogger
        loggers.append(WandbLogger(project=cfg.logger.project, entity=cfg.logger.entity,
                                   group=cfg.experiment_name, name=cfg.run_name, tags=tags,
                                   save_dir=str(folder.path), mode=cfg.logger.mode,
                                   id=f"{cfg.experiment_name}-{cfg.run_name}", resume="allow"))
    return loggers
