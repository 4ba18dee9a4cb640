"""What a run prints: its progress bar, the parameter table and one final line. Lightning's tips, device
banners and known deprecation warnings from its internals are dropped here, each matched narrowly by its
message, so any other warning or log line still shows."""

from __future__ import annotations

import logging
import re
import warnings

# Lightning info lines (lightning.*.utilities.rank_zero loggers) that say nothing about this run.
# On resume the run prints its own "resuming from <checkpoint> at step <s>" line.
_QUIET_LOG = re.compile(r"^(💡 Tip: |GPU available: |TPU available: |HPU available: |`Trainer\.fit` stopped: |"
                        r"Restoring states from the checkpoint path at |Restored all states from the checkpoint)")
# Deprecations raised inside Lightning's own code, not ours (torch's pytree API change); the best-validation
# checkpoint (callbacks.best) shares the run folder's checkpoints/ with last.ckpt by design, so Lightning's
# "exists and is not empty" on every resumed or extended run says nothing.
_QUIET_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
                   r"Checkpoint directory .*checkpoints exists and is not empty\.")


class _DropKnownNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUIET_LOG.match(record.getMessage())


_FILTER = _DropKnownNoise()


def quiet_lightning() -> None:
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for message in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
