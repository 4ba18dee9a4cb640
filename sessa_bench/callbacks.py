"""Lightning callbacks of the harness: atomic checkpoints, throughput, and a hard kill for resume tests."""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L
import torch

# Lightning's save_checkpoint(weights_only=...): False saves the full training state, which resume needs
SAVE_WEIGHTS_ONLY = False


class AtomicCheckpoint(L.Callback):
    """Saves the full training state to checkpoints/last.ckpt every n steps, via a temporary file and a
    rename, so a run killed mid-write still has its previous checkpoint."""

    def __init__(self, path: Path, every_n_steps: int):
        self.path, self.every = Path(path), every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0 or step >= trainer.max_steps:
            self.save(trainer)

    def save(self, trainer):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        # The full training state for resume (optimizer, schedulers, loops), passed as Lightning's own
        # ModelCheckpoint passes its save_weights_only (said outright: Lightning warns on every save otherwise).
        # A save, not a load: every load of a checkpoint is torch.load(weights_only=True) (tests/test_bad_inputs.py
        # checks each by AST), so nothing in a checkpoint is ever executed.
        trainer.save_checkpoint(tmp, SAVE_WEIGHTS_ONLY)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)


class Throughput(L.Callback):
    """Training tokens per second over windows of `window` steps (data loading included), logged at the
    end of each window and averaged over the windows after `warmup` steps for the summary (the first steps
    pay for compilation and autotuning). The device is synchronised only at window ends, and the clock
    restarts after validation, so neither a sync per step nor evaluation time distorts the number."""

    def __init__(self, warmup: int = 5, window: int = 10):
        self.warmup, self.window = warmup, max(1, window)  # window: the trainer's log interval
        self.tokens = 0
        self.seconds = 0.0
        self._t0: float | None = None
        self._window_tokens = 0

    def _restart(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._t0, self._window_tokens = time.perf_counter(), 0

    def on_train_start(self, trainer, pl_module):
        self._restart()

    def on_validation_end(self, trainer, pl_module):
        self._restart()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._window_tokens += batch["input_ids"].numel() * trainer.world_size
        if trainer.global_step % self.window:
            return
        tokens, t0 = self._window_tokens, self._t0
        self._restart()
        dt = self._t0 - t0
        pl_module.log("train/tokens_per_s", tokens / max(dt, 1e-9))
        if trainer.global_step - self.window >= self.warmup:  # windows that start after the warm-up
            self.tokens += tokens
            self.seconds += dt

    # The sums travel in the checkpoint, so a resumed run reports the throughput of all its windows.
    def state_dict(self) -> dict:
        return {"tokens": self.tokens, "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.tokens, self.seconds = int(state_dict["tokens"]), float(state_dict["seconds"])

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.seconds if self.seconds else None


class KillAtStep(L.Callback):
    """Test hook (debug.kill_at_step): exit the process abruptly, as a crash would, right after the
    checkpoint of the given step has been written."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os._exit(17)
