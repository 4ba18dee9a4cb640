"""Diffuse MQAR: multi-query associative recall with multi-token keys, structured distractors, a noise
block and controlled key-to-query lags (the long-context task of the paper's Table 1).

The paper describes the task in prose only; this module is our specification of it.

Vocabulary (disjoint alphabets): 0 <pad>, 1 <bos>, 2 <noise> (a filler token), then key_vocab key tokens
(ids 3 .. 3+key_vocab-1), then value_vocab value tokens. A *key* is key_len key tokens, a *value* is
value_len value tokens, and a *pattern* is a key followed by a value (P = key_len + value_len tokens).
Because the alphabets are disjoint, every maximal run of key tokens is exactly one key and a sequence
parses back unambiguously into <bos>, patterns and <noise> tokens.

Generator, per example (all randomness from one numpy Generator seeded by `split_seed(seed, split)`):

1. Memory. n_pairs distinct keys drawn uniformly from the key_vocab ** key_len possible keys, each with a
   value of value_len tokens drawn uniformly (values may repeat). Layout: <bos> k_1 v_1 ... k_n v_n, so
   the memory ends at E = 1 + n_pairs * P.
2. Lag. The lag of a query is (position of the first answer token) - (position of the first token of the
   pair's value in memory); all tokens of a multi-token value share it. Train examples draw lags from
   train_lag = (lo, hi), val and test examples from test_lag (default (lo, 4 * hi), so test lags reach 4x
   the largest train lag). Lags are log-uniform integers, L = floor(exp(U(log lo, log(hi + 1)))), so
   every power-of-two lag bucket gets about the same number of queries.
3. Queries. n_queries distinct pairs are queried, one at a time: draw a lag L, then pick uniformly one
   not-yet-queried pair whose query k v (starting at its value position + L - key_len) would lie after the
   memory, inside the sequence, and on free positions; if no pair fits, draw L again. Short lags can
   therefore only go to pairs near the end of the memory, which is unavoidable with the memory first.
   If 200 lag draws in a row fit no pair left (the free room near those pairs is used up), the placement
   of this example starts over, so the realised lags are log-uniform conditioned on a valid packing.
   Query order in the sequence follows from the lags (it is not the memory order).
4. Noise. Every position after the memory that no query occupies is noise. Each free gap of g tokens
   holds g // P noise patterns and g % P <noise> tokens placed at random pattern boundaries. A noise
   pattern's key is, with probability distractor_rate, a *structured distractor*: a random true key whose
   first p tokens are kept (p uniform in 1 .. key_len-1) and whose token p is replaced by a different key
   token and later tokens redrawn, so it shares the prefix but not the suffix; otherwise a random key.
   Noise keys are redrawn until they equal no true key of the example (distractors never duplicate a
   true key), and their values are random. The stretch between the memory and the first query is the
   noise block: at least lo - P tokens long, and longer for pairs early in the memory.
5. Scoring: labels[a - 1] = token[a] for every answer token a of every query (teacher forcing inside
   multi-token values), IGNORE elsewhere; its slice is the power-of-two bucket of the lag, named
   "lag=64-127". `ood_slices` names the buckets that lie wholly above `ood_above` (default train_lag hi):
   lags never seen in training. Chance token accuracy is 1 / value_vocab.

Lengths: train sequences have seq_len tokens, val/test sequences test_seq_len tokens (the default of each
is 1 + n_pairs * P + largest lag, rounded up to a multiple of 64, the least that fits every lag). The val
split uses test_lag, like test, so the 4x extrapolation is visible during training; there is no separate
val_lag. `scaled(f)` multiplies seq_len, test_seq_len and both lag ranges by f and keeps ood_above, so
buckets beyond the trained range stay marked.

Defaults: 2-token keys over 64 key tokens, 1-token values over 64 value tokens (chance 1.6 %), 32 pairs
all queried, half the noise patterns distractors, train lags 32..511 (seq_len 640), test lags 32..2044
(test_seq_len 2176). Table 1 uses 8 pairs and train lags 16..255 instead (conf/experiment/table1_diffuse_mqar.yaml):
the calibration's choice, measured in results/calibration/ (`python -m sessa_bench.calibrate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from . import checks
from .base import split_seed
from .retrieval import RetrievalTask, pack_rows


def _round_up(n: int, m: int = 64) -> int:
    return -(-n // m) * m


@dataclass(eq=False)
class DiffuseMQAR(RetrievalTask):
    name = "diffuse_mqar"
    PAD, BOS, NOISE = 0, 1, 2
    train_len_exact = True

    # None means "derive from the other fields" (see the module docstring); __post_init__ fills it in, so
    # config() always holds the resolved values.
    key_vocab: int = 64
    value_vocab: int = 64
    key_len: int = 2
    value_len: int = 1
    n_pairs: int = 32
    n_queries: int = 32
    distractor_rate: float = 0.5
    train_lag: tuple[int, int] = (32, 511)
    test_lag: tuple[int, int] | None = None
    seq_len: int | None = None
    test_seq_len: int | None = None
    ood_above: int | None = None
    n_train: int = 50_000
    n_val: int = 500
    n_test: int = 2_000
    seed: int = 0

    def __post_init__(self):
        self.key_vocab = checks.integer("task.key_vocab", self.key_vocab, 2)
        self.value_vocab = checks.integer("task.value_vocab", self.value_vocab, 2)
        self.key_len = checks.integer("task.key_len", self.key_len, 1)
        self.value_len = checks.integer("task.value_len", self.value_len, 1)
        self.n_pairs = checks.integer("task.n_pairs", self.n_pairs, 1)
        self.n_queries = checks.integer("task.n_queries", self.n_queries, 1, self.n_pairs)
        if self.key_vocab ** self.key_len < 2 * self.n_pairs:  # room for noise keys that are not true keys
            raise ValueError(f"task.key_vocab={self.key_vocab}, task.key_len={self.key_len}: key_vocab ** "
                             f"key_len must be >= 2 * n_pairs = {2 * self.n_pairs}")
        self.distractor_rate = checks.real("task.distractor_rate", self.distractor_rate, 0.0, 1.0)
        if self.distractor_rate > 0 and self.key_len < 2:
            raise ValueError(f"task.distractor_rate={self.distractor_rate} needs key_len >= 2 (a distractor "
                             f"shares a key's prefix but not its suffix); got key_len={self.key_len}")
        P = self.key_len + self.value_len
        self.train_lag = self._lag("task.train_lag", self.train_lag, P)
        self.test_lag = self._lag("task.test_lag", (self.train_lag[0], 4 * self.train_lag[1])
                                  if self.test_lag is None else self.test_lag, P)
        memory = 1 + self.n_pairs * P
        self.seq_len = self._length("task.seq_len", self.seq_len, memory + self.train_lag[1], "train_lag")
        self.test_seq_len = self._length("task.test_seq_len", self.test_seq_len, memory + self.test_lag[1],
                                         "test_lag")
        # Placement needs free room; at most half the post-memory tokens may be queries.
        room = min(self.seq_len, self.test_seq_len) - memory
        if 2 * self.n_queries * P > room:
            raise ValueError(f"task.n_queries={self.n_queries} is too many: 2 * n_queries * {P} must be <= "
                             f"{room} (the tokens after the memory); lower it or raise the lags")
        for name, (_, hi) in (("train_lag", self.train_lag), ("test_lag", self.test_lag)):
            if hi < self.n_queries * P:  # the n_queries-th pair from the memory's end needs lag >= n_queries * P
                raise ValueError(f"task.{name} hi={hi} must be >= n_queries * (key_len + value_len) = "
                                 f"{self.n_queries * P}, or not every query can sit after the memory")
        self.ood_above = checks.integer("task.ood_above", self.train_lag[1] if self.ood_above is None
                                        else self.ood_above, 1)
        self.n_train = checks.integer("task.n_train", self.n_train, 1)
        self.n_val = checks.integer("task.n_val", self.n_val, 1)
        self.n_test = checks.integer("task.n_test", self.n_test, 1)
        self.seed = checks.integer("task.seed", self.seed, 0)

        self.key_offset = 3
        self.value_offset = 3 + self.key_vocab
        self.vocab_size = self.value_offset + self.value_vocab
        self.pad_id = self.PAD
        lo = min(self.train_lag[0], self.test_lag[0]).bit_length() - 1
        hi = max(self.train_lag[1], self.test_lag[1]).bit_length() - 1
        self.bucket0 = lo
        self.slice_names = tuple(f"lag={2 ** k}-{2 ** (k + 1) - 1}" for k in range(lo, hi + 1))
        self.ood_slices = tuple(f"lag={2 ** k}-{2 ** (k + 1) - 1}" for k in range(lo, hi + 1)
                                if 2 ** k > self.ood_above)
        self.chance = 1.0 / self.value_vocab

    @staticmethod
    def _lag(name: str, value, P: int) -> tuple[int, int]:
        lo, hi = checks.int_list(name, value, 1, length=2)
        if lo < P or hi < lo:
            raise ValueError(f"{name}={[lo, hi]} must satisfy key_len + value_len = {P} <= lo <= hi "
                             f"(a query cannot start before the memory ends)")
        return lo, hi

    @staticmethod
    def _length(name: str, value, need: int, lag_name: str) -> int:
        if value is None:
            return _round_up(need)
        value = checks.integer(name, value, 1)
        if value < need:
            raise ValueError(f"{name}={value} is too short: the memory plus the largest {lag_name} need "
                             f">= {need} tokens")
        return value

    @property
    def max_len(self) -> int:
        return max(self.seq_len, self.test_seq_len)

    @property
    def train_len(self) -> int:
        return self.seq_len

    def scaled(self, factor: int) -> "DiffuseMQAR":
        f = checks.integer("factor", factor, 1)
        return replace(self, seq_len=f * self.seq_len, test_seq_len=f * self.test_seq_len,
                       train_lag=[f * v for v in self.train_lag], test_lag=[f * v for v in self.test_lag])

    def ceiling(self) -> float:
        """Copying the value after the query key's earlier occurrence, on the test split: 1.0 by construction
        (true keys are distinct, no noise key repeats one), computed (tasks/diffuse_mqar_recall.py)."""
        return self._levels()["exact"]["acc"]

    def baseline(self) -> float:
        """A guess among the memory's values that no earlier query was answered with, on the test split: what
        a model reaches that reads no query key (tasks/diffuse_mqar_recall.py, which also scores the plain
        guess and recall by one key token)."""
        return self._levels()["memory_unanswered"]["acc"]

    def _levels(self) -> dict:
        if "_recall" not in self.__dict__:  # one pass over the test split for both facts
            from .diffuse_mqar_recall import recall
            self._recall = recall(self, "test")
        return self._recall

    def lag_slice(self, lag: int) -> int:
        """Index into slice_names of the power-of-two bucket holding lag."""
        return lag.bit_length() - 1 - self.bucket0

    # --- generator ---------------------------------------------------------------------------------
    def build(self, split: str) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(split_seed(self.seed, split))
        lags, T = (self.train_lag, self.seq_len) if split == "train" else (self.test_lag, self.test_seq_len)
        rows, answers = [], []
        for _ in range(self.split_size(split)):
            x, pos, slc = self._example(rng, lags, T)
            rows.append(x)
            answers.append((pos, slc))
        return pack_rows(rows, answers, self.pad_id, self.vocab_size)

    def _codes(self, keys: np.ndarray) -> np.ndarray:
        """Keys (n, key_len) of token indices -> one integer each, for set membership."""
        return keys @ (self.key_vocab ** np.arange(self.key_len - 1, -1, -1))

    def _example(self, rng: np.random.Generator, lags: tuple[int, int], T: int):
        K, kl, vl, n = self.key_vocab, self.key_len, self.value_len, self.n_pairs
        P = kl + vl
        E = 1 + n * P
        codes = rng.choice(K ** kl, n, replace=False)
        keys = (codes[:, None] // K ** np.arange(kl - 1, -1, -1)) % K   # (n, kl) token indices
        values = rng.integers(0, self.value_vocab, (n, vl))
        pair_tok = np.concatenate([keys + self.key_offset, values + self.value_offset], axis=1)

        x = np.full(T, self.NOISE, dtype=np.int64)
        x[0] = self.BOS
        x[1:E] = pair_tok.reshape(-1)
        vpos = 1 + np.arange(n) * P + kl                  # first value token of each pair
        used = np.zeros(T, dtype=bool)
        used[:E] = True
        ans_pos, ans_slice = [], []
        for i, s, lag in self._place_queries(rng, vpos, E, T, lags):
            x[s:s + P] = pair_tok[i]
            used[s:s + P] = True
            ans_pos.extend(range(s + kl, s + P))
            ans_slice.extend([self.lag_slice(lag)] * vl)

        # 4. noise: fill every free gap with patterns, the remainder with <noise> at random boundaries
        free = np.flatnonzero(~used)
        gaps = np.split(free, np.flatnonzero(np.diff(free) > 1) + 1) if len(free) else []
        n_pat = [len(g) // P for g in gaps]
        noise = self._noise_patterns(rng, keys, codes, sum(n_pat))
        k = 0
        for g, m in zip(gaps, n_pat):
            flat = noise[k:k + m].reshape(-1)
            k += m
            at = np.sort(rng.integers(0, m + 1, len(g) - m * P)) * P
            x[g] = np.insert(flat, at, self.NOISE)
        return x, np.asarray(ans_pos), np.asarray(ans_slice)

    def _place_queries(self, rng: np.random.Generator, vpos: np.ndarray, E: int, T: int,
                       lags: tuple[int, int]) -> list[tuple[int, int, int]]:
        """(pair, query start, lag) for n_queries distinct pairs on non-overlapping spans after the memory.

        Draw a lag, then a not-yet-queried pair whose query fits there; if 200 lag draws find none (the
        free room of the pairs left is used up), start the placement of this example over."""
        kl, P = self.key_len, self.key_len + self.value_len
        log_lo, log_hi = math.log(lags[0]), math.log(lags[1] + 1)
        for _restart in range(1000):
            used = np.zeros(T + 1, dtype=np.int64)
            queried = np.zeros(len(vpos), dtype=bool)
            out = []
            for _ in range(self.n_queries):
                busy = np.concatenate([[0], np.cumsum(used)])   # busy[b] - busy[a] = used tokens in [a, b)
                for _draw in range(200):
                    lag = min(int(math.exp(rng.uniform(log_lo, log_hi))), lags[1])
                    start = vpos + lag - kl
                    s = np.clip(start, 0, T - P)
                    fits = ~queried & (start >= E) & (start + P <= T) & (busy[s + P] == busy[s])
                    if fits.any():
                        break
                else:
                    break                                     # dead end: restart this example
                i = int(rng.choice(np.flatnonzero(fits)))
                used[start[i]:start[i] + P] = 1
                queried[i] = True
                out.append((i, int(start[i]), lag))
            if len(out) == self.n_queries:
                return out
        raise RuntimeError("diffuse_mqar could not place the queries; lower n_queries or widen the lags")

    def _noise_patterns(self, rng: np.random.Generator, keys: np.ndarray, codes: np.ndarray, m: int):
        """m noise patterns (m, P) of tokens; no key equals a true key."""
        K, kl, vl = self.key_vocab, self.key_len, self.value_len
        out_keys = np.empty((m, kl), dtype=np.int64)
        bad = np.ones(m, dtype=bool)
        distract = rng.random(m) < self.distractor_rate
        for _round in range(1000):
            idx = np.flatnonzero(bad)
            if not len(idx):
                break
            new = rng.integers(0, K, (len(idx), kl))
            d = np.flatnonzero(distract[idx])
            if len(d):  # keep a prefix of p tokens of a true key, change token p, redraw the rest
                src = keys[rng.integers(0, len(keys), len(d))]
                p = rng.integers(1, kl, len(d))
                keep = np.arange(kl)[None, :] < p[:, None]
                new[d] = np.where(keep, src, new[d])
                rows = np.arange(len(d))
                new[d, p] = (src[rows, p] + rng.integers(1, K, len(d))) % K
            out_keys[idx] = new
            bad[idx] = np.isin(self._codes(new), codes)
        else:
            raise RuntimeError("diffuse_mqar could not draw noise keys distinct from the true keys")
        vals = rng.integers(0, self.value_vocab, (m, vl))
        return np.concatenate([out_keys + self.key_offset, vals + self.value_offset], axis=1)
