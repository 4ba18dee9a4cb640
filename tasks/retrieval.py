"""Plumbing shared by the three retrieval tasks (mqar, diffuse_mqar, passkey): each builds a split as token
rows plus the positions of their answer tokens, cached on disk by config, and reads it back as AnswerRows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import IGNORE, Task, split_seed
from .cache import cached


class AnswerRows(Dataset):
    """Token rows plus the positions of their answer tokens; labels and slices are rebuilt per item.

    Storing answer positions instead of full label rows keeps the on-disk cache ~3x smaller and makes
    labels consistent with the tokens by construction: labels[p - 1] = input_ids[p] for every answer
    position p (the logits at p - 1 predict the token at p).
    """

    def __init__(self, data: dict[str, torch.Tensor]):
        self.ids, self.lengths = data["ids"], data["lengths"]
        self.ans_pos, self.ans_slice = data["ans_pos"], data["ans_slice"]

    def __len__(self) -> int:
        return len(self.ids)

    def longest(self) -> int:
        """The most input_ids of an item (TaskDataModule pads every batch to it under compile)."""
        return int(self.lengths.max())

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.ids[i, : int(self.lengths[i])].long()
        keep = self.ans_pos[i] >= 0
        pos = self.ans_pos[i][keep].long()
        labels = torch.full_like(x, IGNORE)
        slices = torch.full_like(x, IGNORE)
        labels[pos - 1] = x[pos]
        slices[pos - 1] = self.ans_slice[i][keep].long()
        return {"input_ids": x, "labels": labels, "slices": slices}


def pack_rows(rows: list[np.ndarray], answers: list[tuple[np.ndarray, np.ndarray]], pad_id: int,
              vocab_size: int) -> dict[str, torch.Tensor]:
    """Stack variable-length rows (padded with pad_id) and their (answer positions, slice ids)."""
    n, T = len(rows), max(len(r) for r in rows)
    S = max(len(p) for p, _ in answers)
    dtype = np.int16 if vocab_size <= np.iinfo(np.int16).max else np.int32
    ids = np.full((n, T), pad_id, dtype=dtype)
    pos = np.full((n, S), -1, dtype=np.int32)
    slc = np.full((n, S), -1, dtype=np.int16)
    for i, (r, (p, s)) in enumerate(zip(rows, answers)):
        ids[i, : len(r)] = r
        pos[i, : len(p)] = p
        slc[i, : len(s)] = s
    return {"ids": torch.from_numpy(ids), "lengths": torch.tensor([len(r) for r in rows]),
            "ans_pos": torch.from_numpy(pos), "ans_slice": torch.from_numpy(slc)}


class RetrievalTask(Task):
    """Common plumbing: a cached pure build per split. Subclasses are dataclasses with n_train, n_val,
    n_test and seed fields."""

    head = "lm"
    version = 1                      # bump when a generator changes so stale caches are not reused

    def build(self, split: str) -> dict[str, torch.Tensor]:
        """Pure function of (config, split): the whole split as packed tensors."""
        raise NotImplementedError

    def split_size(self, split: str) -> int:
        split_seed(0, split)  # validates the split name
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]

    def dataset(self, split: str) -> AnswerRows:
        key = {**self.config(), "split": split, "version": self.version}
        return AnswerRows(cached(self.name, key, lambda: self.build(split)))
