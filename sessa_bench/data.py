"""The data module shared by every task: step-indexed training batches and sequential evaluation, sharded
across processes by the data module itself (the trainer is built with use_distributed_sampler=False).

Training batches are a pure function of (seed, global step): the sampler draws a fresh permutation of the
training set per pass and slices batch `step` out of the concatenated stream. `data.batch_size` is the
GLOBAL batch: under DDP each of the W processes takes its contiguous slice of the same global batch, so a
run sees the same examples at every step whatever the number of processes, a resumed run sees exactly the
batches an uninterrupted one would have seen (also on another number of processes), and there is no
dataloader state to save.

Evaluation splits are partitioned into contiguous shards, one per process, without padding or duplicates
(Lightning's DistributedSampler would repeat examples to even out the shards); SplitMetrics sums its
counts across processes, so split metrics are exact whatever the number of processes.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from sessa_bench.tasks.base import Task


def eval_shard(n: int, rank: int, world: int) -> range:
    """The examples of an n-example split that process `rank` of `world` evaluates: contiguous, disjoint,
    covering the split (shard sizes differ by at most one)."""
    return range(n * rank // world, n * (rank + 1) // world)


def check_global_batch(batch_size: int, world: int) -> int:
    """The per-process batch of a global batch; the global batch must split evenly."""
    if batch_size % world:
        raise ValueError(f"data.batch_size={batch_size} is the global batch and must be divisible by the number "
                         f"of processes ({world} = trainer.devices x trainer.num_nodes)")
    return batch_size // world


class StepBatchSampler(Sampler[list[int]]):
    """Infinite batches of indices; iteration starts at batch `start_step()` (read when iteration begins).
    `batch(step)` is the global batch of a step; process `rank` of `world` yields its contiguous slice."""

    def __init__(self, n: int, batch_size: int, seed: int, start_step: Callable[[], int] = lambda: 0,
                 rank: int = 0, world: int = 1):
        if n < 1:
            raise ValueError("the training split is empty")
        if not 0 <= rank < world:
            raise ValueError(f"rank={rank} must be in [0, world={world})")
        self.local = check_global_batch(batch_size, world)
        self.n, self.batch_size, self.seed, self.start_step = n, batch_size, seed, start_step
        self.rank, self.world = rank, world

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

    def local_batch(self, step: int) -> list[int]:
        return self.batch(step)[self.rank * self.local:(self.rank + 1) * self.local]

    def __iter__(self):
        step = self.start_step()
        while True:
            yield self.local_batch(step)
            step += 1


def _rank_world(trainer) -> tuple[int, int]:
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


class TaskDataModule(L.LightningDataModule):
    def __init__(self, task: Task, batch_size: int, eval_batch_size: int | None = None, seed: int = 0,
                 num_workers: int = 0, test_split: str = "test", fixed_length: bool = False):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.task, self.batch_size, self.seed, self.num_workers = task, batch_size, seed, num_workers
        self.eval_batch_size = eval_batch_size or batch_size  # per process (evaluation sums, any batch works)
        self.test_split = test_split  # what trainer.test() reads: `sessa-bench eval --split val` sets "val"
        # fixed_length (under compile): every batch of a split is padded to that split's longest sequence, not
        # to its own, so the compiled model sees one sequence length per split. Variable lengths make Dynamo
        # recompile at the second length and then trace every graph with a symbolic length: slower to compile
        # (Mamba2's smoke and the Transformer's did not finish 40 steps in 240 s on the H200) and slower kernels.
        # Right padding changes no real position's output (every mixer is causal; class heads read `lengths`).
        self.fixed_length = fixed_length
        self._sets: dict = {}
        self._longest: dict = {}

    def split(self, name: str):
        if name not in self._sets:
            self._sets[name] = self.task.dataset(name)
        return self._sets[name]

    def collate(self, name: str):
        """The split's collate function: the task's, padding to the split's longest sequence with fixed_length."""
        if not self.fixed_length:
            return self.task.collate
        if name not in self._longest:  # a task's dataset knows it (`longest`); else every item is read once
            data = self.split(name)
            self._longest[name] = (data.longest() if hasattr(data, "longest") else
                                   max(len(data[i]["input_ids"]) for i in range(len(data))))
        return partial(self.task.collate, length=self._longest[name])

    def train_dataloader(self):
        trainer = self.trainer
        rank, world = _rank_world(trainer)
        sampler = StepBatchSampler(len(self.split("train")), self.batch_size, self.seed,
                                   start_step=lambda: trainer.global_step if trainer is not None else 0,
                                   rank=rank, world=world)
        return DataLoader(self.split("train"), batch_sampler=sampler, collate_fn=self.collate("train"),
                          num_workers=self.num_workers, pin_memory=self.pin_memory())

    def _eval_loader(self, name: str):
        data = self.split(name)
        # a range is an ordered sampler Lightning leaves alone (use_distributed_sampler=False)
        shard = eval_shard(len(data), *_rank_world(self.trainer))
        return DataLoader(data, batch_size=self.eval_batch_size, sampler=shard, collate_fn=self.collate(name),
                          num_workers=self.num_workers, pin_memory=self.pin_memory())

    def pin_memory(self) -> bool:
        """Pinned batches under a GPU trainer: a copy to the GPU from pageable memory first waits for the
        device's stream to drain (CUDA's rule for pageable transfers), which made every step a host sync."""
        t = self.trainer
        return t is not None and t.strategy.root_device.type == "cuda"

    def val_dataloader(self):
        return self._eval_loader("val")

    def test_dataloader(self):
        return self._eval_loader(self.test_split)
