"""The run folder's own logger: metrics.jsonl, always written (conf/logger adds Lightning's CSV or W&B)."""

from __future__ import annotations

from lightning.pytorch.loggers import Logger
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
