"""The interface every task implements (Zoology style: a small config object with a pure build).

A task is a dataclass built by Hydra from `conf/task/*.yaml`: its fields are exactly the config keys, checked
in `__post_init__` (tasks/checks.py), and `config()` is those fields as a dict. It knows its vocabulary, its head and its
metrics, and hands out one torch Dataset per split. Each dataset item is a dict:

- `input_ids`: LongTensor (T,)
- `labels`: for head="lm", LongTensor (T,) where labels[t] is the target of the logits at position t
  (already shifted; IGNORE where there is nothing to score); for head="cls", a LongTensor scalar class id
  read from the logits at the last real position.
- `slices` (optional): LongTensor (T,) with an index into `task.slice_names` for every scored position
  (IGNORE elsewhere), so accuracy is also reported per slice (e.g. per lag bucket).

Splits are built from seeds that never collide across splits: see `split_seed`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import torch
from torch.utils.data import Dataset

IGNORE = -100
SPLITS = ("train", "val", "test")


def split_seed(seed: int, split: str) -> int:
    """A seed per (task seed, split); distinct splits never share a stream."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    return int(seed) * 1000 + SPLITS.index(split) * 7919 + 17


def config_key(cfg: dict) -> str:
    """Short stable hash of a JSON-able config, used to key on-disk caches."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Task:
    name: str = "task"
    head: str = "lm"              # "lm" (per-position labels) or "cls" (one label per sequence)
    vocab_size: int = 0
    num_classes: int = 0
    pad_id: int = 0
    slice_names: tuple[str, ...] = ()
    ood_slices: tuple[str, ...] = ()     # slices beyond what training covers (e.g. longer lags)
    chance: float | None = None          # accuracy of guessing, where it is defined
    train_len_exact: bool = False        # True when every training sequence has exactly `train_len` tokens

    @property
    def max_len(self) -> int:
        raise NotImplementedError

    @property
    def train_len(self) -> int:
        """Tokens per training sequence (an upper bound unless train_len_exact)."""
        return self.max_len

    def config(self) -> dict:
        """The task's fields as a JSON-able dict (tuples as lists): what keys its caches and is recorded in
        every run's facts. Derived attributes are not fields, so they are not in it."""
        if not dataclasses.is_dataclass(self):
            return {}
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def ceiling(self) -> float | None:
        """The best accuracy any model can reach on this task, where it can be computed."""
        return None

    def baseline(self) -> float | None:
        """The test accuracy of a trivial classifier on the same data, where the task defines one."""
        return None

    def facts(self) -> dict:
        """What a report needs to know about this task; written into every run's summary.json, so tables
        and plots read it there instead of rebuilding the task."""
        return {"name": self.name, "head": self.head, "vocab_size": self.vocab_size,
                "num_classes": self.num_classes, "train_len": self.train_len,
                "train_len_exact": self.train_len_exact, "max_len": self.max_len, "chance": self.chance,
                "ceiling": self.ceiling(), "baseline": self.baseline(), "slice_names": list(self.slice_names),
                "ood_slices": list(self.ood_slices), "ood_above": getattr(self, "ood_above", None),
                "config": self.config()}

    def dataset(self, split: str) -> Dataset:
        raise NotImplementedError

    def collate(self, items: list[dict], length: int | None = None) -> dict:
        return pad_collate(items, self.pad_id, length)


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def pad_collate(items: list[dict], pad_id: int, length: int | None = None) -> dict:
    """Right-pads a batch to its longest sequence, or to `length` when given (at least that); adds `lengths` so
    class heads can read the last real position."""
    lengths = torch.tensor([len(it["input_ids"]) for it in items])
    T = max(int(lengths.max()), length or 0)
    B = len(items)
    out = {"input_ids": torch.full((B, T), pad_id, dtype=torch.long), "lengths": lengths}
    for i, it in enumerate(items):
        out["input_ids"][i, :len(it["input_ids"])] = it["input_ids"]
    first = items[0]
    if first["labels"].dim() == 0:
        out["labels"] = torch.stack([it["labels"] for it in items])
    else:
        out["labels"] = torch.full((B, T), IGNORE, dtype=torch.long)
        for i, it in enumerate(items):
            out["labels"][i, :len(it["labels"])] = it["labels"]
    if "slices" in first:
        out["slices"] = torch.full((B, T), IGNORE, dtype=torch.long)
        for i, it in enumerate(items):
            out["slices"][i, :len(it["slices"])] = it["slices"]
    return out


class TensorDataset(Dataset):
    """Items from parallel lists/tensors: {'input_ids': [...], 'labels': [...], ...}."""

    def __init__(self, columns: dict[str, list[torch.Tensor]]):
        self.columns = columns
        self.n = len(next(iter(columns.values())))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.columns.items()}

    def longest(self) -> int:
        """The most input_ids of an item (TaskDataModule pads every batch to it under compile)."""
        return max(len(x) for x in self.columns["input_ids"])
