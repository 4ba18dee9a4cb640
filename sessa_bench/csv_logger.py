"""Lightning's CSV log for a run that may be resumed (conf/logger/csv.yaml).

Lightning's CSVLogger deletes an existing metrics.csv when its writer starts (a warning says so), so a
resumed run would lose every row logged before the kill. This one keeps the file and appends under its
header; `sessa_bench.train` calls `restart(step)` first, which drops the rows the resumed run logs again
(the same rule as metrics.jsonl), or the whole file on a fresh start.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from sessa_bench.files import keep_csv_rows_before


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # instead of deleting metrics.csv: adopt its columns, so new rows append under the same header
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class ResumableCSVLogger(CSVLogger):
    @property
    def metrics_file(self) -> Path:
        return Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def restart(self, before_step: int | None) -> None:
        """Fresh start (None): remove an old metrics.csv. Resume from a checkpoint at step S: keep the rows
        logged before S."""
        path = self.metrics_file
        if not path.exists():
            return
        if before_step is None:
            path.unlink()
            return
        keep_csv_rows_before(path, before_step)
