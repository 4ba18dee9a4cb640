"""The subword tokenizer shared by all model families: byte-level BPE trained locally with `tokenizers`.

- Trained on the training split only. "<|endoftext|>" is the only special token (id 0): it separates
  documents in the token stream and is never produced from document text (a document that happens to
  contain that string is tokenised as ordinary text).
- Byte-level with no normaliser and no prefix space, so decode(encode(x)) == x for every string.
- Committed files live in tasks/tokenizers/<name>-bpe<vocab>.json and are used first; when none exists the
  tokenizer is trained on the corpus and cached under cache_dir()/tokenizers/. Commit one with

      python -m sessa_bench.tasks.tokenizer --corpus bible --vocab-size 4096

  so every family and every machine reads the very same vocabulary.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from sessa_bench.files import atomic_write

from .base import config_key
from .cache import cache_dir

EOT = "<|endoftext|>"
TOKENIZER_DIR = Path(__file__).parent / "tokenizers"
MIN_VOCAB = 257                 # 256 byte symbols + EOT
TRAIN_CHARS = 200_000_000       # training text cap: BPE merges settle long before the full SimpleStories


def train_tokenizer(docs: Iterable[str], vocab_size: int, max_chars: int | None = TRAIN_CHARS) -> Tokenizer:
    """Byte-level BPE on `docs` (in order, stopping once max_chars characters have been seen)."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size={vocab_size!r} must be an int >= {MIN_VOCAB} (256 bytes + {EOT})")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())   # all 256 bytes, seen or not: no unknowns

    def capped():
        seen = 0
        for d in docs:
            yield d
            seen += len(d)
            if max_chars is not None and seen >= max_chars:
                return

    tok.train_from_iterator(capped(), trainer)
    if tok.token_to_id(EOT) != 0:
        raise RuntimeError(f"{EOT} must get id 0, got {tok.token_to_id(EOT)}")
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    tok = Tokenizer.from_file(str(path))
    if tok.token_to_id(EOT) is None:
        raise ValueError(f"tokenizer {path} has no {EOT} token")
    tok.encode_special_tokens = True   # document text never turns into EOT (not stored in the JSON)
    return tok


def file_sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def committed_path(name: str, vocab_size: int) -> Path:
    return TOKENIZER_DIR / f"{name}-bpe{vocab_size}.json"


def save_atomic(tok: Tokenizer, path: Path) -> None:
    atomic_write(path, lambda tmp: tok.save(str(tmp)))


def resolve(corpus: str, vocab_size: int, data_dir: str | None = None, path: str | None = None) -> Path:
    """The tokenizer file for a task: `path` if given, else the committed file, else a cached trained one."""
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"task.tokenizer={path} does not exist")
        return Path(path)
    committed = committed_path(corpus, vocab_size)
    if committed.is_file():
        return committed
    key = config_key({"corpus": corpus, "data_dir": None if data_dir is None else os.path.normpath(data_dir),
                      "vocab_size": vocab_size, "train_chars": TRAIN_CHARS})
    cached = cache_dir() / "tokenizers" / f"{corpus}-bpe{vocab_size}-{key}.json"
    if not cached.is_file():
        from .corpora import load_corpus   # only when training: reading a corpus may need `datasets`
        save_atomic(train_tokenizer(load_corpus(corpus, data_dir)["train"], vocab_size), cached)
    return cached


def main(argv: list[str] | None = None) -> None:
    from .corpora import CORPORA, load_corpus
    p = argparse.ArgumentParser(description="Train the byte-level BPE on a corpus's train split and save it.")
    p.add_argument("--corpus", required=True, choices=CORPORA)
    p.add_argument("--data-dir", default=None, help="local copy of the corpus (simplestories, local)")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--name", default=None, help="file name stem (default: the corpus name)")
    p.add_argument("--out", default=None,
                   help="output file (default: tasks/tokenizers/<name>-bpe<vocab>.json)")
    a = p.parse_args(argv)
    docs = load_corpus(a.corpus, a.data_dir)
    tok = train_tokenizer(docs["train"], a.vocab_size)
    out = Path(a.out) if a.out else committed_path(a.name or a.corpus, a.vocab_size)
    save_atomic(tok, out)
    print(f"wrote {out}: vocab {tok.get_vocab_size()}, trained on {len(docs['train'])} train documents")


if __name__ == "__main__":
    main()
