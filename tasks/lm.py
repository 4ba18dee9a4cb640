"""Causal language modelling (paper Table 2: SimpleStories; also the offline "bible" and "local" corpora).

Pipeline, per split:
  documents (corpora.py) -> byte-level BPE ids (tokenizer.py), each document followed by <|endoftext|>
  -> one token stream -> segments of seq_len + 1 tokens taken with stride seq_len, so consecutive segments
  share one token and every token after the first is a target exactly once -> input_ids = seg[:-1],
  labels = seg[1:]. The tail shorter than a segment is dropped. No label is IGNORE (all segments are full).

The train documents are shuffled once with a fixed seed (0) before they are joined, so max_train_tokens
(a cut of the train stream) is a uniform sample of documents; val and test keep the corpus order. The task
seed only orders the train segments.

Token streams are cached as .npy (uint16 when the vocabulary fits, else int32) in
cache_dir()/lm/<corpus>-<key>/<split>.npy with key = hash(corpus, data_dir as given, sha256 of the tokenizer
file); the train file name also carries max_train_tokens. Loading a cached stream needs only numpy and the
tokenizer JSON, never `datasets` or the corpus, so a machine without them (the GPU box) trains from a
copied cache folder: point SESSA_BENCH_CACHE at it and pass the same task.corpus / task.data_dir strings.
Prepare the cache with `python -m sessa_bench.tasks.lm --corpus simplestories --data-dir <folder>`.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sessa_bench.files import atomic_write, atomic_write_text

from . import checks, corpora, lm_reference
from .base import Task, config_key, split_seed
from .cache import cache_dir
from .corpora import CORPORA, SPLITS
from .tokenizer import EOT, file_sha, load_tokenizer, resolve

VERSION = 1            # bump when tokenisation or stream layout changes so stale shards are not reused
CHUNK = 4096           # documents per encode_batch call
DOC_SHUFFLE_SEED = 0   # fixed: the shards must not depend on the task seed


class Segments(Dataset):
    """Segment i of a token stream: tokens[i*L : i*L + L + 1], split into inputs and shifted labels."""

    def __init__(self, tokens: np.ndarray, seq_len: int, order: np.ndarray | None = None):
        self.tokens, self.seq_len = tokens, seq_len
        self.n = max(0, (len(tokens) - 1) // seq_len)
        self.order = order

    def __len__(self) -> int:
        return self.n

    def longest(self) -> int:
        """The most input_ids of an item: every segment has seq_len (TaskDataModule pads to it under compile)."""
        return self.seq_len

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -self.n <= i < self.n:
            raise IndexError(f"segment {i} out of range for {self.n} segments")
        j = int(self.order[i]) if self.order is not None else i % self.n
        seg = torch.from_numpy(np.asarray(self.tokens[j * self.seq_len: (j + 1) * self.seq_len + 1],
                                          dtype=np.int64))
        return {"input_ids": seg[:-1], "labels": seg[1:]}


def tokenize(docs: list[str], tok, dtype, max_tokens: int | None = None) -> np.ndarray:
    """One stream: every document's ids followed by EOT, cut to max_tokens."""
    eot = tok.token_to_id(EOT)
    parts, total = [], 0
    for i in range(0, len(docs), CHUNK):
        flat: list[int] = []
        for enc in tok.encode_batch_fast(docs[i: i + CHUNK], add_special_tokens=False):
            flat.extend(enc.ids)
            flat.append(eot)
        parts.append(np.asarray(flat, dtype=dtype))
        total += len(flat)
        if max_tokens is not None and total >= max_tokens:
            break
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype)
    return stream[:max_tokens] if max_tokens is not None else stream


def save_npy(arr: np.ndarray, path: Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:   # a file object, so numpy does not append another .npy
            np.save(f, arr)
    atomic_write(path, write)


@dataclass(eq=False)
class LanguageModeling(Task):
    """Fields are the config keys. `vocab_size` is the size to train the tokenizer to; after construction it
    holds the size the tokenizer really has (smaller only when a tiny corpus runs out of merges), which is
    what the model's embedding needs. The tokenizer itself is `bpe`; `tokenizer` is the file asked for."""

    name = "lm"
    head = "lm"
    train_len_exact = True   # every segment is full

    corpus: str = "simplestories"
    data_dir: str | None = None
    tokenizer: str | None = None
    vocab_size: int = 4096
    seq_len: int = 256
    max_train_tokens: int | None = None
    seed: int = 0

    def __post_init__(self):
        self.corpus = checks.one_of("task.corpus", self.corpus, CORPORA)
        self.data_dir = checks.optional_str("task.data_dir", self.data_dir)
        if self.data_dir is not None:
            self.data_dir = os.path.normpath(self.data_dir)
        self.tokenizer = checks.optional_str("task.tokenizer", self.tokenizer)
        self.seq_len = checks.integer("task.seq_len", self.seq_len, 1)
        self.max_train_tokens = checks.optional_integer("task.max_train_tokens", self.max_train_tokens,
                                                        self.seq_len + 1)
        self.seed = checks.integer("task.seed", self.seed, 0)
        vocab_size = checks.integer("task.vocab_size", self.vocab_size, 257)
        self.tokenizer_path = resolve(self.corpus, vocab_size, self.data_dir, self.tokenizer)
        self.bpe = load_tokenizer(self.tokenizer_path)
        self.vocab_size = self.bpe.get_vocab_size()
        self.eot_id = self.pad_id = self.bpe.token_to_id(EOT)   # pad never occurs: segments are full
        self.dtype = np.uint16 if self.vocab_size <= 2 ** 16 else np.int32
        key = config_key({"corpus": self.corpus, "data_dir": self.data_dir, "version": VERSION,
                          "tokenizer_sha256": file_sha(self.tokenizer_path)})
        self.shard_dir = cache_dir() / "lm" / f"{self.corpus}-{key}"

    @property
    def max_len(self) -> int:
        return self.seq_len

    def shard_path(self, split: str) -> Path:
        split_seed(0, split)  # validates the split name
        cap = f"-max{self.max_train_tokens}" if split == "train" and self.max_train_tokens else ""
        return self.shard_dir / f"{split}{cap}.npy"

    def build_shards(self) -> None:
        """Tokenise every split whose shard is missing (one corpus read for all of them)."""
        missing = [s for s in SPLITS if not self.shard_path(s).is_file()]
        if not missing:
            return
        docs = corpora.load_corpus(self.corpus, self.data_dir)
        for split in missing:
            d = docs[split]
            if split == "train":
                perm = np.random.default_rng(DOC_SHUFFLE_SEED).permutation(len(d))
                d = [d[i] for i in perm]
            cap = self.max_train_tokens if split == "train" else None
            stream = tokenize(d, self.bpe, self.dtype, cap)
            path = self.shard_path(split)
            meta = {"corpus": self.corpus, "data_dir": self.data_dir, "split": split,
                    "tokenizer": str(self.tokenizer_path), "tokenizer_sha256": file_sha(self.tokenizer_path),
                    "vocab_size": self.vocab_size, "n_docs": len(d), "n_tokens": int(len(stream)),
                    "max_train_tokens": cap, "version": VERSION}
            atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1))
            save_npy(stream, path)   # written last: its presence marks a complete shard

    def tokens(self, split: str) -> np.ndarray:
        """The split's token stream, memory-mapped from the cache (built on first use)."""
        path = self.shard_path(split)
        if not path.is_file():
            self.build_shards()
        return np.load(path, mmap_mode="r")

    def references(self) -> dict:
        """The table's reference rows (tasks/lm_reference.py): per predictor, its test metrics under this
        task's segmentation. Cached beside the shards (a JSON file written atomically; never a pickle)."""
        # named after the train shard it is counted on (its name carries max_train_tokens)
        train_shard = self.shard_path("train").stem
        path = self.shard_dir / f"reference-v{lm_reference.VERSION}-L{self.seq_len}-{train_shard}.json"
        if path.is_file():
            return json.loads(path.read_text())
        train = self.tokens("train")
        out = {"chance": lm_reference.uniform_reference(self.vocab_size),
               "bigram": lm_reference.bigram_reference(train, self.tokens("test"), self.vocab_size, self.seq_len),
               "bigram_train_tokens": int(min(len(train), lm_reference.MAX_TRAIN_TOKENS))}
        atomic_write_text(path, json.dumps(out, indent=1))
        return out

    def facts(self) -> dict:
        return {**super().facts(), "references": self.references()}

    def dataset(self, split: str) -> Segments:
        tokens = self.tokens(split)
        data = Segments(tokens, self.seq_len)
        if split == "train":  # shuffled at segment level; val/test keep stream order
            data.order = np.random.default_rng(split_seed(self.seed, split)).permutation(len(data))
        return data

    def decode(self, ids) -> str:
        return self.bpe.decode([int(i) for i in ids], skip_special_tokens=False)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Tokenise a corpus into the shard cache (no training).")
    p.add_argument("--corpus", required=True, choices=CORPORA)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--tokenizer", default=None, help="tokenizer JSON (default: the committed one)")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--max-train-tokens", type=int, default=None)
    a = p.parse_args(argv)
    task = LanguageModeling(a.corpus, a.data_dir, a.tokenizer, a.vocab_size,
                            max_train_tokens=a.max_train_tokens)
    task.build_shards()
    for split in SPLITS:
        print(f"{split}: {len(task.tokens(split)):,} tokens in {task.shard_path(split)}")


if __name__ == "__main__":
    main()
