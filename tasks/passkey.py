"""Passkey retrieval (Mohtashami & Jaggi 2023 style) over a small word vocabulary.

Vocabulary: <pad> 0, <bos> 1, the words in WORDS, then the digits 0-9. An example of `length` tokens is

    <bos> filler[:pre]  NEEDLE  filler[pre:]  QUESTION  d_1 .. d_n

    NEEDLE   = "the pass key is d_1..d_n . remember it . d_1..d_n is the pass key ."
    QUESTION = "what is the pass key ? the pass key is"

with n = n_digits digits drawn uniformly (leading zeros allowed). The filler has F = length - (24 + 3n)
tokens and is either the classic sentence cycle "the grass is green . the sky is blue . the sun is
yellow . here we go . there and back again ." cut to F tokens (filler="repeat") or F words drawn
uniformly from the filler words (filler="random"); neither ever contains "pass", "key", "what" or "?",
so the needle and the question are unique. The needle starts after pre = round(depth * F) filler tokens:
depth 0 puts it right after <bos>, depth 1 right before the question.

Splits: val and test cycle through the grid lengths x depths, so every (length, depth) cell gets the
same number of examples. Train examples cycle through the lengths and draw depth ~ U[0, 1] (no gaps in
the positions a model is trained on); their slice is the nearest grid depth.

Scoring: the n answer digits are the only labels (labels[t] = token[t + 1] for the last n tokens); each
one's slice is its (depth, length) cell, named "depth=0.25,len=256". Metrics: token accuracy ("acc")
and exact match of the whole passkey ("example_acc"). Exact match under teacher forcing equals exact
match of greedy generation: greedy decoding reproduces the answer iff every answer token is the argmax
given the true prefix, which is exactly what teacher-forced exact match checks (the first wrong token
makes both fail). Chance token accuracy is 0.1.

`scaled(f)` multiplies every length by f (depths are fractions, so they scale with the length).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from . import checks
from .base import split_seed
from .retrieval import RetrievalTask, pack_rows

FILLER_WORDS = ("the", "grass", "is", "green", ".", "sky", "blue", "sun", "yellow", "here", "we", "go",
                "there", "and", "back", "again")
WORDS = FILLER_WORDS + ("pass", "key", "remember", "it", "what", "?")
FILLER_SENTENCE = "the grass is green . the sky is blue . the sun is yellow . here we go . there and back again ."
FILLERS = ("repeat", "random")


@dataclass(eq=False)
class Passkey(RetrievalTask):
    name = "passkey"
    PAD, BOS = 0, 1

    lengths: tuple[int, ...] = (256, 512)
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    n_digits: int = 5
    filler: str = "repeat"
    n_train: int = 20_000
    n_val: int = 500
    n_test: int = 1_000
    seed: int = 0

    def __post_init__(self):
        self.n_digits = checks.integer("task.n_digits", self.n_digits, 1)
        self.overhead = 24 + 3 * self.n_digits            # <bos> + needle + question + answer
        self.lengths = checks.int_list("task.lengths", self.lengths, self.overhead + 1)
        self.depths = checks.fraction_list("task.depths", self.depths)
        self.filler = checks.one_of("task.filler", self.filler, FILLERS)
        self.n_train = checks.integer("task.n_train", self.n_train, 1)
        self.n_val = checks.integer("task.n_val", self.n_val, 1)
        self.n_test = checks.integer("task.n_test", self.n_test, 1)
        self.seed = checks.integer("task.seed", self.seed, 0)

        self.words = ("<pad>", "<bos>") + WORDS + tuple("0123456789")
        self.tok = {w: i for i, w in enumerate(self.words)}
        self.digit0 = self.tok["0"]
        self.vocab_size = len(self.words)
        self.pad_id = self.PAD
        self.slice_names = tuple(f"depth={d:g},len={L}" for L in self.lengths for d in self.depths)
        self.chance = 0.1

    @property
    def max_len(self) -> int:
        return max(self.lengths)

    def scaled(self, factor: int) -> "Passkey":
        f = checks.integer("factor", factor, 1)
        return replace(self, lengths=[f * L for L in self.lengths])

    def encode(self, text: str) -> list[int]:
        return [self.tok[w] for w in text.split()]

    def decode(self, ids) -> str:
        return " ".join(self.words[int(i)] for i in ids)

    def build(self, split: str) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(split_seed(self.seed, split))
        nL, nD = len(self.lengths), len(self.depths)
        sentence = np.array(self.encode(FILLER_SENTENCE))
        filler_ids = np.array(self.encode(" ".join(FILLER_WORDS)))
        rows, answers = [], []
        for i in range(self.split_size(split)):
            if split == "train":
                li = i % nL
                depth = rng.random()
                di = int(np.argmin([abs(d - depth) for d in self.depths]))
            else:
                li, di = divmod(i % (nL * nD), nD)
                depth = self.depths[di]
            F = self.lengths[li] - self.overhead
            if self.filler == "repeat":
                fill = np.resize(sentence, F)
            else:
                fill = rng.choice(filler_ids, F)
            digits = list(self.digit0 + rng.integers(0, 10, self.n_digits))
            needle = self.encode("the pass key is") + digits + self.encode(". remember it .") + digits \
                + self.encode("is the pass key .")
            question = self.encode("what is the pass key ? the pass key is")
            pre = int(round(depth * F))
            x = np.concatenate([[self.BOS], fill[:pre], needle, fill[pre:], question, digits])
            L = len(x)
            rows.append(x)
            answers.append((np.arange(L - self.n_digits, L), np.full(self.n_digits, li * nD + di)))
        return pack_rows(rows, answers, self.pad_id, self.vocab_size)
