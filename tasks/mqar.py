"""Standard MQAR (multi-query associative recall, Zoology: Arora et al. 2024).

Generator, per example (all randomness from one numpy Generator seeded by `split_seed(seed, split)`):

- vocabulary: id 0 is the filler (and the pad); keys come from [1, vocab_size // 2), values from
  [vocab_size // 2, vocab_size), so the two alphabets are disjoint.
- n = n_pairs[i % len(n_pairs)] for example i (a list mixes several memory sizes; every split is balanced
  over the list). n distinct keys and n distinct values are drawn without replacement.
- memory: positions 0 .. 2n-1 hold k_1 v_1 k_2 v_2 ... k_n v_n.
- queries: the rest of the sequence is cut into S = (seq_len - 2n) // 2 two-token slots; n slots are drawn
  without replacement with P(slot s) proportional to (s + 1) ** (power_a - 1), s = 0 .. S-1 (power_a = 1 is
  uniform; small power_a crowds the queries near the memory, i.e. short gaps are likely and long gaps
  rare: Zoology's power-law gap). Every key is queried exactly once, in random order: slot s holds
  (k, v) at positions (2n + 2s, 2n + 2s + 1). Every other position is filler 0.
- scoring: the value of each query is the target of the logits at the query key's position, so
  labels[2n + 2s] = v and IGNORE elsewhere; its slice is "pairs=n".

Sequences all have length seq_len. `scaled(f)` multiplies seq_len (the memory size stays; queries spread
over f times as many slots).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from . import checks
from .base import split_seed
from .retrieval import RetrievalTask, pack_rows


@dataclass(eq=False)
class MQAR(RetrievalTask):
    name = "mqar"
    train_len_exact = True

    vocab_size: int = 8192
    seq_len: int = 256
    n_pairs: tuple[int, ...] = (4, 8, 16, 32, 64)
    power_a: float = 0.01
    n_train: int = 100_000
    n_val: int = 1_000
    n_test: int = 3_000
    seed: int = 0

    def __post_init__(self):
        self.n_pairs = checks.int_list("task.n_pairs", self.n_pairs, 1)
        self.vocab_size = checks.integer("task.vocab_size", self.vocab_size, 4)
        need = 2 * max(self.n_pairs) + 1
        if self.vocab_size // 2 < need:  # n distinct keys from [1, V/2) and n distinct values from [V/2, V)
            raise ValueError(f"task.vocab_size={self.vocab_size} must be >= {2 * need} for n_pairs up to "
                             f"{max(self.n_pairs)} (keys and values are drawn without replacement)")
        self.seq_len = checks.integer("task.seq_len", self.seq_len, 4 * max(self.n_pairs))
        self.power_a = checks.real("task.power_a", self.power_a, 0.0, 1.0, lo_open=True,
                                   why="1 = uniform query slots")
        self.n_train = checks.integer("task.n_train", self.n_train, 1)
        self.n_val = checks.integer("task.n_val", self.n_val, 1)
        self.n_test = checks.integer("task.n_test", self.n_test, 1)
        self.seed = checks.integer("task.seed", self.seed, 0)
        self.pad_id = 0
        self.slice_names = tuple(f"pairs={n}" for n in self.n_pairs)
        self.chance = 1.0 / (self.vocab_size - self.vocab_size // 2)

    @property
    def max_len(self) -> int:
        return self.seq_len

    def scaled(self, factor: int) -> "MQAR":
        factor = checks.integer("factor", factor, 1)
        return replace(self, seq_len=self.seq_len * factor)

    def build(self, split: str) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(split_seed(self.seed, split))
        V, T = self.vocab_size, self.seq_len
        keys_alpha, vals_alpha = np.arange(1, V // 2), np.arange(V // 2, V)
        rows, answers = [], []
        for i in range(self.split_size(split)):
            j = i % len(self.n_pairs)
            n = self.n_pairs[j]
            keys = rng.choice(keys_alpha, n, replace=False)
            vals = rng.choice(vals_alpha, n, replace=False)
            x = np.zeros(T, dtype=np.int64)
            x[0:2 * n:2], x[1:2 * n:2] = keys, vals
            S = (T - 2 * n) // 2
            p = np.arange(1, S + 1, dtype=np.float64) ** (self.power_a - 1.0)
            slots = rng.choice(S, n, replace=False, p=p / p.sum())
            order = rng.permutation(n)
            q = 2 * n + 2 * slots                      # query key positions
            x[q], x[q + 1] = keys[order], vals[order]
            rows.append(x)
            answers.append((q + 1, np.full(n, j)))
        return pack_rows(rows, answers, self.pad_id, V)
