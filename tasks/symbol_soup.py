"""SymbolSoup (paper Table 1): 20-way classification of two style-generated blocks hidden in noise.

Our own implementation of the distribution of the official generator (the paper's released code); its
Bayes-optimal accuracy is computed by tasks/symbol_soup_bayes.py.

Example (every character is a token, so the spaces and newlines are tokens too):

    <bos>\\n n n n\\n<sep1>\\n b b b\\n<sep2>\\n n n\\n<sep1>\\n b b\\n<sep2>\\n n n n\\n<sep> <label>
             noise0          block1          noise1          block2          noise2

written exactly as "<bos>\\n" noise0 "\\n<sep1>\\n" block1 "\\n<sep2>\\n" noise1 "\\n<sep1>\\n" block2
"\\n<sep2>\\n" noise2 "\\n<sep> <label>", the symbols of each part joined by single spaces. With M symbols in
all, an example has 2M + 13 tokens (2M - 5 for the five parts, 7 specials, 10 newlines, 1 space), so
lengths are odd. The class head reads the last token, <label>; the answer is the class k = 5 a + b of the
left style a (of 4) and the right style b (of 5).

Per example (integer uniforms U[lo, hi] include both ends):
- M ~ U[max(5, ceil((min_len-13)/2)), floor((max_len-13)/2)]
- noise total Ln ~ U[max(3, floor(0.3M)), max(that, floor(0.6M))], clipped to [3, M-2]
- main = M - Ln; the left block has L_left ~ U[1, main-1] symbols, the right block main - L_left
- noise split Ln0 ~ U[1, Ln-2], Ln1 ~ U[1, Ln-Ln0-1], Ln2 = Ln - Ln0 - Ln1
- with p = 0.5 the two blocks swap places (block1 = right, block2 = left); otherwise block1 = left
- noise symbols are uniform over the 16 symbols a..p.

Styles: as in the official generator, each family has one Python `random.Random`, seeded 123 (the 4 left
styles) and 456 (the 5 right ones); each style, in style order, shuffles a fresh copy of the list
['a', ..., 'p'] with it (`rng.shuffle`): the first 4 symbols are its primaries P_i (unigram weight 3), the
next 4 its secondaries S_i (weight 2), the rest weight 1. This gives left 0: jdif / chkl, left 1: bjmk /
pnhg, left 2: ngpf / edio, left 3: gpck / njao; right 0: fmpe / ldcb, right 1: lfpo / akjh, right 2: kbje /
gaip, right 3: opfm / edbk, right 4: lnag / obhf (primaries / secondaries). Preferred bigrams, whose
weight is multiplied by (1 + 3): P_i -> P_{i+1 mod 4}, P_i -> P_i, S_i -> S_i, P_i -> S_i and S_i -> P_i.
Motifs: the 39 contiguous substrings of length 3..5 of "abcdefghijklmnop", each weighted
1 + 0.9 #primaries + 0.5 #secondaries (symbols of the motif that are primaries / secondaries of the style).

The block process (our choices where the description leaves room; the motif rule is the official code's):
- A style samples a block of L symbols as a first-order Markov chain: P(next = y | current = x) is
  proportional to weight[y] * (4 if x -> y is preferred else 1); the first symbol (no current yet) is drawn
  from the unigram weights alone.
- Before each draw, if at least 3 positions remain, with p = 0.3 a motif is inserted instead; as in the
  official code it is chosen with probability proportional to its weight among the motifs that fit the
  positions left (length <= room: with 3 left only the 14 of length 3, with 4 left the 27 of length 3 or
  4, with 5 or more all 39), so a block never ends in a cut motif; the chain then continues from the
  motif's last symbol.
- After the block is complete each symbol flips with p = 0.03 to one of the other 15, uniformly.
- Randomness: one numpy Generator per `generate(n, seed)` call, drawn in a fixed order; class ids are
  `arange(n) % 20` shuffled by that Generator, so each class gets n // 20 examples and classes
  0 .. (n % 20) - 1 get one more.

Vocabulary (fixed; VOCAB below): <pad> <bos> <sep1> <sep2> <sep> <label> <eos> [MASK] ' ' '\\n' a .. p,
ids 0 .. 25 in that order. <eos> and [MASK] are reserved and never generated, <pad> only pads, so at
default settings 23 token types occur. `encode` splits the special tokens out and maps every other
character to its own id.

Official TSV files (`data_dir`: train.tsv, val.tsv, test.tsv): header `Text<TAB>Answer`, answers
`CLASS_k`. We read and write them with Python's csv module (delimiter TAB, standard minimal quoting: a
field with a newline, tab or quote is wrapped in double quotes), so texts with real newlines round-trip
exactly; `read_tsv` also accepts files that store newlines as the two characters backslash + n.
"""

from __future__ import annotations

import bisect
import csv
import math
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import checks
from .base import SPLITS, Task, TensorDataset, split_seed
from .cache import cached

N_CLASSES = 20
N_LEFT, N_RIGHT = 4, 5
LEFT_SEED, RIGHT_SEED = 123, 456
SYMBOLS = "abcdefghijklmnop"
SPECIALS = ("<bos>", "<sep1>", "<sep2>", "<sep>", "<label>")
RESERVED = ("<eos>", "[MASK]")
VOCAB = ("<pad>",) + SPECIALS + RESERVED + (" ", "\n") + tuple(SYMBOLS)
OVERHEAD = 13                                  # tokens of an example besides its 2M - 5 symbol tokens
BOOST = 1.0 + 3.0
MOTIF_P, FLIP_P = 0.3, 0.03
MOTIFS = tuple(tuple(range(s, s + n)) for n in (3, 4, 5) for s in range(len(SYMBOLS) - n + 1))
# MOTIFS is sorted by length, so the motifs that fit `room` positions are a prefix: its length per room
MOTIF_FIT = {room: sum(len(m) <= room for m in MOTIFS) for room in (3, 4, 5)}

_TOKEN = re.compile("|".join(re.escape(t) for t in sorted(VOCAB, key=len, reverse=True) if len(t) > 1)
                    + "|.", re.DOTALL)


def m_range(min_len: int, max_len: int) -> tuple[int, int]:
    """The inclusive range of M (symbols per example) for token lengths 2M + 13 in [min_len, max_len]."""
    return max(5, math.ceil((min_len - OVERHEAD) / 2)), (max_len - OVERHEAD) // 2


# ----------------------------------------------------------------------------------------------------
# styles

@dataclass(frozen=True, eq=False)
class Style:
    primaries: tuple[int, ...]       # symbol ids 0..15 (a..p)
    secondaries: tuple[int, ...]
    weights: np.ndarray              # (16,) unigram weights 3 / 2 / 1
    trans: np.ndarray                # (16, 16) row x: P(next symbol | current x)
    motif_w: np.ndarray              # (len(MOTIFS),) unnormalised motif weights

    def __post_init__(self):
        # cumulative tables as Python lists: bisect on them is the fast path of the sampling loop
        object.__setattr__(self, "_start_cum", list(np.cumsum(self.weights / self.weights.sum())))
        object.__setattr__(self, "_trans_cum", [list(np.cumsum(row)) for row in self.trans])
        object.__setattr__(self, "_motif_cum", {r: list(np.cumsum(self.motif_probs(r))[:MOTIF_FIT[r]])
                                                for r in MOTIF_FIT})

    def motif_probs(self, room: int) -> np.ndarray:
        """(len(MOTIFS),) P(motif | a motif is inserted with `room` >= 3 positions left): only those that fit."""
        if room < 3:
            raise ValueError(f"room={room}: a motif needs at least 3 positions")
        w = self.motif_w.copy()
        w[MOTIF_FIT[min(room, 5)]:] = 0.0
        return w / w.sum()

    def sample(self, rng: np.random.Generator, L: int, motif_p: float = MOTIF_P,
               flip_p: float = FLIP_P) -> np.ndarray:
        """A block of L symbol ids (see the module docstring for the process)."""
        u_motif, u_pick = rng.random(L).tolist(), rng.random(L).tolist()
        seq: list[int] = []
        j = 0  # draws used; each step (a symbol or a motif) uses one of each
        while len(seq) < L:
            room = L - len(seq)
            if room >= 3 and u_motif[j] < motif_p:
                cum = self._motif_cum[min(room, 5)]
                seq.extend(MOTIFS[min(bisect.bisect_right(cum, u_pick[j]), len(cum) - 1)])
            else:
                cum = self._trans_cum[seq[-1]] if seq else self._start_cum
                seq.append(min(bisect.bisect_right(cum, u_pick[j]), 15))  # min(): guards float round-off
            j += 1
        return flip(np.asarray(seq, dtype=np.int64), flip_p, rng)


def flip(seq: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Each symbol becomes, with probability p, one of the 15 others uniformly."""
    hit = rng.random(len(seq)) < p
    shift = rng.integers(1, 16, len(seq))
    return np.where(hit, (seq + shift) % 16, seq)


def shuffled_symbols(rng: random.Random) -> list[int]:
    """One style's order of the 16 symbol ids, drawn as the official code does: shuffle a fresh a..p list."""
    letters = list(SYMBOLS)
    rng.shuffle(letters)
    return [SYMBOLS.index(c) for c in letters]


def make_style(order: list[int]) -> Style:
    """The style whose primaries are order[:4] and secondaries order[4:8]."""
    P, S = list(order[:4]), list(order[4:8])
    weights = np.ones(16)
    weights[P], weights[S] = 3.0, 2.0
    boost = np.ones((16, 16))
    for i in range(4):
        p, s = P[i], S[i]
        for x, y in ((p, P[(i + 1) % 4]), (p, p), (s, s), (p, s), (s, p)):
            boost[x, y] = BOOST
    trans = weights[None, :] * boost
    trans /= trans.sum(1, keepdims=True)
    motif_w = np.array([1 + 0.9 * sum(c in P for c in m) + 0.5 * sum(c in S for c in m) for m in MOTIFS])
    return Style(tuple(P), tuple(S), weights, trans, motif_w)


def make_styles() -> tuple[tuple[Style, ...], tuple[Style, ...]]:
    """(4 left styles, 5 right styles); fixed for all seeds and splits."""
    left_rng, right_rng = random.Random(LEFT_SEED), random.Random(RIGHT_SEED)
    return (tuple(make_style(shuffled_symbols(left_rng)) for _ in range(N_LEFT)),
            tuple(make_style(shuffled_symbols(right_rng)) for _ in range(N_RIGHT)))


LEFT_STYLES, RIGHT_STYLES = make_styles()


# ----------------------------------------------------------------------------------------------------
# examples

def render(noise0, block1, noise1, block2, noise2) -> str:
    """The exact text template; each part is a sequence of symbol ids."""
    s = [" ".join(SYMBOLS[i] for i in part) for part in (noise0, block1, noise1, block2, noise2)]
    return (f"<bos>\n{s[0]}\n<sep1>\n{s[1]}\n<sep2>\n{s[2]}\n<sep1>\n{s[3]}\n<sep2>\n{s[4]}\n<sep> <label>")


def generate(n: int, seed: int, min_len: int = 400, max_len: int = 600) -> list[tuple[str, int]]:
    """n examples (text, class id), balanced over the 20 classes; a pure function of its arguments."""
    m_lo, m_hi = m_range(min_len, max_len)
    if m_lo > m_hi:
        raise ValueError(f"no length 2M + 13 with M >= 5 lies in [min_len={min_len}, max_len={max_len}]")
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.arange(n) % N_CLASSES).tolist()
    out = []
    for k in classes:
        M = int(rng.integers(m_lo, m_hi + 1))
        lo = max(3, M * 3 // 10)                       # floor(0.3 M), floor(0.6 M) in exact integers
        Ln = int(rng.integers(lo, max(lo, M * 6 // 10) + 1))
        Ln = min(max(Ln, 3), M - 2)
        main = M - Ln
        L_left = int(rng.integers(1, main))            # U[1, main-1]
        Ln0 = int(rng.integers(1, Ln - 1))             # U[1, Ln-2]
        Ln1 = int(rng.integers(1, Ln - Ln0))           # U[1, Ln-Ln0-1]
        Ln2 = Ln - Ln0 - Ln1
        swap = bool(rng.random() < 0.5)
        left = LEFT_STYLES[k // N_RIGHT].sample(rng, L_left)
        right = RIGHT_STYLES[k % N_RIGHT].sample(rng, main - L_left)
        noise = rng.integers(0, 16, Ln)
        block1, block2 = (right, left) if swap else (left, right)
        out.append((render(noise[:Ln0], block1, noise[Ln0:Ln0 + Ln1], block2, noise[Ln0 + Ln1:]), k))
    return out


# ----------------------------------------------------------------------------------------------------
# tokenizer and official TSV files

TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}


def encode(text: str) -> list[int]:
    try:
        return [TOKEN_ID[t] for t in _TOKEN.findall(text)]
    except KeyError as e:
        raise ValueError(f"text holds {e.args[0]!r}, which is not in the SymbolSoup vocabulary {VOCAB}") from None


def decode(ids) -> str:
    return "".join(VOCAB[int(i)] for i in ids)


def write_tsv(path: str | Path, examples: list[tuple[str, int]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["Text", "Answer"])
        w.writerows((text, f"CLASS_{k}") for text, k in examples)


def read_tsv(path: str | Path) -> list[tuple[str, int]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or rows[0] != ["Text", "Answer"]:
        raise ValueError(f"{path}: the header must be 'Text<TAB>Answer', got {rows[0] if rows else 'nothing'}")
    out = []
    for line, row in enumerate(rows[1:], start=2):
        m = re.fullmatch(r"CLASS_(\d+)", row[1]) if len(row) == 2 else None
        if m is None or int(m.group(1)) >= N_CLASSES:
            raise ValueError(f"{path}: row {line} must be '<text><TAB>CLASS_k' with k in [0, {N_CLASSES - 1}], "
                             f"got {row!r:.120}")
        out.append((row[0].replace("\\n", "\n"), int(m.group(1))))  # no symbol is a backslash: safe
    return out


# ----------------------------------------------------------------------------------------------------
# the task

@dataclass(eq=False)
class SymbolSoup(Task):
    name = "symbol_soup"
    head = "cls"
    num_classes = N_CLASSES
    vocab_size = len(VOCAB)
    pad_id = TOKEN_ID["<pad>"]
    version = 2                  # bump when the generator changes so stale caches are not reused
                                 # (2: official style tables, motifs drawn among those that fit)
    chance = 1.0 / N_CLASSES

    min_len: int = 400
    max_len: int = 600           # a field (shadows Task.max_len): the longest sequence, an upper bound
    n_train: int = 20_000
    n_val: int = 2_000
    n_test: int = 2_000
    seed: int = 0
    data_dir: str | None = None  # the official train.tsv / val.tsv / test.tsv instead of generating

    def __post_init__(self):
        self.min_len = checks.integer("task.min_len", self.min_len, 0)
        self.max_len = checks.integer("task.max_len", self.max_len, 0)
        if self.min_len > self.max_len:
            raise ValueError(f"task.min_len={self.min_len} must be <= task.max_len={self.max_len}")
        m_lo, m_hi = m_range(self.min_len, self.max_len)
        if m_lo > m_hi:
            need = max(2 * m_lo + OVERHEAD, 2 * 5 + OVERHEAD)
            raise ValueError(f"task.max_len={self.max_len}: no example length fits in [min_len={self.min_len}, "
                             f"max_len={self.max_len}]; lengths are odd, 2M + 13 with M >= 5 symbols, so "
                             f"max_len must be >= {need}")
        self.n_train = checks.integer("task.n_train", self.n_train, 0)
        self.n_val = checks.integer("task.n_val", self.n_val, 0)
        self.n_test = checks.integer("task.n_test", self.n_test, 0)
        self.seed = checks.integer("task.seed", self.seed, 0)
        self.data_dir = checks.optional_str("task.data_dir", self.data_dir)
        if self.data_dir is not None:  # fail before training starts, not at the first test batch
            folder = Path(self.data_dir).expanduser()
            if not folder.is_dir():
                raise FileNotFoundError(f"task.data_dir={self.data_dir!r}: no such folder {folder.resolve()}")
            for split in SPLITS:
                if not (folder / f"{split}.tsv").is_file():
                    raise FileNotFoundError(f"task.data_dir={self.data_dir!r}: missing "
                                            f"{(folder / f'{split}.tsv').resolve()} "
                                            f"(expected {', '.join(s + '.tsv' for s in SPLITS)})")

    def ceiling(self) -> float:
        """The Bayes-optimal accuracy on the test split: what the exact posterior scores on the same examples
        the models are tested on (tasks/symbol_soup_bayes.py)."""
        from .symbol_soup_bayes import bayes_ceiling

        return bayes_ceiling(self, "test")["acc"]

    def baseline(self) -> float:
        """Naive Bayes on the symbol counts of the whole text, fitted on the train split, on the test split
        (tasks/symbol_soup_baseline.py): what a model reaches without reading the blocks."""
        from .symbol_soup_baseline import count_baseline

        return count_baseline(self, "test")["acc"]

    def scaled(self, factor: int) -> "SymbolSoup":
        f = checks.integer("factor", factor, 1)
        if self.data_dir is not None and f != 1:
            raise ValueError(f"task.data_dir={self.data_dir!r}: fixed files cannot be scaled to {f}x longer")
        return replace(self, min_len=f * self.min_len, max_len=f * self.max_len)

    encode = staticmethod(encode)
    decode = staticmethod(decode)

    def generate(self, n: int, seed: int) -> list[tuple[str, int]]:
        return generate(n, seed, self.min_len, self.max_len)

    def examples(self, split: str) -> list[tuple[str, int]]:
        seed = split_seed(self.seed, split)  # also validates the split name
        if self.data_dir is not None:
            return read_tsv(Path(self.data_dir).expanduser() / f"{split}.tsv")
        return self.generate({"train": self.n_train, "val": self.n_val, "test": self.n_test}[split], seed)

    def build(self, split: str) -> dict[str, torch.Tensor]:
        """The split packed flat (uint8 ids, lengths, labels): small on disk, quick to load."""
        ex = self.examples(split)
        ids = [encode(text) for text, _ in ex]
        return {"ids": torch.tensor([t for row in ids for t in row], dtype=torch.uint8),
                "lengths": torch.tensor([len(row) for row in ids], dtype=torch.long),
                "labels": torch.tensor([k for _, k in ex], dtype=torch.long)}

    def packed(self, split: str) -> dict[str, torch.Tensor]:
        """build(split), through the task cache when the data is generated."""
        if self.data_dir is None:
            return cached(self.name, {**self.config(), "split": split, "version": self.version},
                          lambda: self.build(split))
        return self.build(split)  # files can change under the same path: read them every time

    def dataset(self, split: str) -> TensorDataset:
        packed = self.packed(split)
        lengths = packed["lengths"].tolist()
        rows = list(packed["ids"].long().split(lengths)) if lengths else []
        return TensorDataset({"input_ids": rows, "labels": packed["labels"]})
