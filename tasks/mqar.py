"""Standard MQAR (multi-query associative recall, Zoology: Arora et al. 2024), plus the compact row storage
shared by the three retrieval tasks (mqar, diffuse_mqar, passkey).

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

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import IGNORE, Task, split_seed
from .cache import cached

# ----------------------------------------------------------------------------------------------------
# shared by the retrieval tasks

def check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    """An int in [lo, hi] or a ValueError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}={value!r} must be an int")
    if value < lo or (hi is not None and value > hi):
        allowed = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name}={value!r} must be {allowed}")
    return int(value)


def int_tuple(name: str, value, lo: int, length: int | None = None) -> tuple[int, ...]:
    """A tuple of ints >= lo; a bare int counts as a list of one (Hydra hands lists over as ListConfig)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and length is None:
        value = [value]
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name}={value!r} must be a list of ints")
    out = tuple(check_int(name, v, lo) for v in value)
    if not out or (length is not None and len(out) != length):
        raise ValueError(f"{name}={value!r} must hold {length or 'at least one'} int(s)")
    return out


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
    """Common plumbing: config dict, cached pure build per split, scaled copies."""

    head = "lm"
    version = 1                      # bump when a generator changes so stale caches are not reused

    def config(self) -> dict:
        raise NotImplementedError

    def build(self, split: str) -> dict[str, torch.Tensor]:
        """Pure function of (config, split): the whole split as packed tensors."""
        raise NotImplementedError

    def split_size(self, split: str) -> int:
        split_seed(0, split)  # validates the split name
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]

    def dataset(self, split: str) -> AnswerRows:
        key = {**self.config(), "split": split, "version": self.version}
        return AnswerRows(cached(self.name, key, lambda: self.build(split)))


# ----------------------------------------------------------------------------------------------------

class MQAR(RetrievalTask):
    name = "mqar"
    train_len_exact = True

    def __init__(self, vocab_size: int = 8192, seq_len: int = 256, n_pairs=(4, 8, 16, 32, 64),
                 power_a: float = 0.01, n_train: int = 100_000, n_val: int = 1_000, n_test: int = 3_000,
                 seed: int = 0):
        self.n_pairs = int_tuple("n_pairs", n_pairs, 1)
        self.vocab_size = check_int("vocab_size", vocab_size, 4)
        need = 2 * max(self.n_pairs) + 1
        if self.vocab_size // 2 < need:  # n distinct keys from [1, V/2) and n distinct values from [V/2, V)
            raise ValueError(f"vocab_size={vocab_size} must be >= {2 * need} for n_pairs up to "
                             f"{max(self.n_pairs)} (keys and values are drawn without replacement)")
        self.seq_len = check_int("seq_len", seq_len, 4 * max(self.n_pairs))
        if not 0.0 < float(power_a) <= 1.0:
            raise ValueError(f"power_a={power_a!r} must be in (0, 1] (1 = uniform query slots)")
        self.power_a = float(power_a)
        self.n_train = check_int("n_train", n_train, 1)
        self.n_val = check_int("n_val", n_val, 1)
        self.n_test = check_int("n_test", n_test, 1)
        self.seed = check_int("seed", seed, 0)
        self.pad_id = 0
        self.slice_names = tuple(f"pairs={n}" for n in self.n_pairs)
        self.chance = 1.0 / (self.vocab_size - self.vocab_size // 2)

    def config(self) -> dict:
        return dict(vocab_size=self.vocab_size, seq_len=self.seq_len, n_pairs=list(self.n_pairs),
                    power_a=self.power_a, n_train=self.n_train, n_val=self.n_val, n_test=self.n_test,
                    seed=self.seed)

    @property
    def max_len(self) -> int:
        return self.seq_len

    def scaled(self, factor: int) -> "MQAR":
        factor = check_int("factor", factor, 1)
        return MQAR(**{**self.config(), "seq_len": self.seq_len * factor})

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
