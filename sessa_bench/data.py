"""The data module shared by every task: step-indexed training batches and sequential evaluation.

Training batches are a pure function of (seed, global step): the sampler draws a fresh permutation of the
training set per pass and slices batch `step` out of the concatenated stream. A resumed run therefore sees
exactly the batches an uninterrupted run would have seen, with no dataloader state to save.
"""

from __future__ import annotations

from typing import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from sessa_bench.tasks.base import Task


class StepBatchSampler(Sampler[list[int]]):
    """Infinite batches of indices; iteration starts at batch `start_step()` (read when iteration begins)."""

    def __init__(self, n: int, batch_size: int, seed: int, start_step: Callable[[], int] = lambda: 0):
        if n < 1:
            raise ValueError("the training split is empty")
        self.n, self.batch_size, self.seed, self.start_step = n, batch_size, seed, start_step

    def _perm(self, epoch: int) -> torch.Tensor:
        if getattr(self, "_cached", (None,))[0] != epoch:  # one permutation per pass, not per batch
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            self._cached = (epoch, torch.randperm(self.n, generator=g))
        return self._cached[1]

    def batch(self, step: int) -> list[int]:
        start = step * self.batch_size
        idx = []
        while len(idx) < self.batch_size:
            epoch, off = divmod(start + len(idx), self.n)
            take = min(self.batch_size - len(idx), self.n - off)
            idx.extend(self._perm(epoch)[off:off + take].tolist())
        return idx

    def __iter__(self):
        step = self.start_step()
        while True:
            yield self.batch(step)
            step += 1


class TaskDataModule(L.LightningDataModule):
    def __init__(self, task: Task, batch_size: int, eval_batch_size: int | None = None, seed: int = 0,
                 num_workers: int = 0, test_split: str = "test"):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.task, self.batch_size, self.seed, self.num_workers = task, batch_size, seed, num_workers
        self.eval_batch_size = eval_batch_size or batch_size
        self.test_split = test_split  # what trainer.test() reads: `sessa-bench eval --split val` sets "val"
        self._sets: dict = {}

    def split(self, name: str):
        if name not in self._sets:
            self._sets[name] = self.task.dataset(name)
        return self._sets[name]

    def train_dataloader(self):
        trainer = self.trainer
        sampler = StepBatchSampler(len(self.split("train")), self.batch_size, self.seed,
                                   start_step=lambda: trainer.global_step if trainer is not None else 0)
        return DataLoader(self.split("train"), batch_sampler=sampler, collate_fn=self.task.collate,
                          num_workers=self.num_workers)

    def _eval_loader(self, name: str):
        return DataLoader(self.split(name), batch_size=self.eval_batch_size, shuffle=False,
                          collate_fn=self.task.collate, num_workers=self.num_workers)

    def val_dataloader(self):
        return self._eval_loader("val")

    def test_dataloader(self):
        return self._eval_loader(self.test_split)
