"""SymbolSoup: the text template, lengths, balance, styles and the class rule, tokenizer, TSV files, errors.

References are the spec's closed forms (the official generator's distribution), the official style table,
naive re-computations of the style tables from their primaries/secondaries, and statistics of many samples. Small n and short lengths keep it fast.
"""

import collections
import math
import re

import numpy as np
import pytest
import torch

from sessa_bench.tasks import symbol_soup as ss
from sessa_bench.tasks.base import pad_collate, split_seed
from sessa_bench.tasks.symbol_soup import SymbolSoup

PART = r"([a-p](?: [a-p])*)"
TEMPLATE = re.compile(r"<bos>\n{0}\n<sep1>\n{0}\n<sep2>\n{0}\n<sep1>\n{0}\n<sep2>\n{0}\n<sep> <label>".format(PART))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))


def parse(text: str) -> list[np.ndarray]:
    """noise0, block1, noise1, block2, noise2 as arrays of symbol ids (0 = a)."""
    m = TEMPLATE.fullmatch(text)
    assert m is not None, f"text does not follow the template: {text!r:.200}"
    return [np.array([ord(c) - ord("a") for c in g.split(" ")]) for g in m.groups()]


def reference_trans(style) -> np.ndarray:
    """The next-symbol distribution written out from the spec, one entry at a time."""
    P, S = style.primaries, style.secondaries
    w = [3.0 if c in P else 2.0 if c in S else 1.0 for c in range(16)]
    preferred = set()
    for i in range(4):
        preferred |= {(P[i], P[(i + 1) % 4]), (P[i], P[i]), (S[i], S[i]), (P[i], S[i]), (S[i], P[i])}
    T = np.array([[w[y] * (4.0 if (x, y) in preferred else 1.0) for y in range(16)] for x in range(16)])
    return T / T.sum(1, keepdims=True)


# ---------------------------------------------------------------------------------------------------
# template, lengths, balance

def test_template_and_length_rule():
    lo_len, hi_len = 40, 80                      # M in [ceil(27/2), floor(67/2)] = [14, 33]: lengths 41..79
    ex = ss.generate(300, 5, lo_len, hi_len)
    Ms, lengths = set(), set()
    for text, k in ex:
        parts = parse(text)
        sizes = [len(p) for p in parts]
        M = sum(sizes)
        n_tok = len(ss.encode(text))
        assert n_tok == 2 * M + 13 and n_tok % 2 == 1 and lo_len <= n_tok <= hi_len
        Ln = sizes[0] + sizes[2] + sizes[4]
        lo = max(3, math.floor(0.3 * M))
        hi = max(lo, math.floor(0.6 * M))
        assert min(lo, M - 2) <= Ln <= min(hi, M - 2)
        assert min(sizes) >= 1
        Ms.add(M)
        lengths.add(n_tok)
    assert min(Ms) == 14 and max(Ms) == 33       # both ends of U[M_lo, M_hi] occur
    assert min(lengths) == 41 and max(lengths) == 79


def test_default_lengths_and_23_token_types():
    task = SymbolSoup()
    ex = task.generate(40, 0)
    ids = [task.encode(t) for t, _ in ex]
    assert all(401 <= len(r) <= 599 for r in ids)
    seen = {i for r in ids for i in r}
    assert len(seen) == 23
    assert {ss.VOCAB[i] for i in seen} == set("abcdefghijklmnop") | {" ", "\n", "<bos>", "<sep1>", "<sep2>",
                                                                       "<sep>", "<label>"}
    assert task.vocab_size == len(ss.VOCAB) == 26 and task.pad_id not in seen
    assert task.decode(ids[0]) == ex[0][0]
    assert task.encode("<bos>\na b\n<sep> <label>") == [ss.VOCAB.index(t) for t in
                                                         ("<bos>", "\n", "a", " ", "b", "\n", "<sep>", " ", "<label>")]


def test_splits_balanced_over_classes():
    task = SymbolSoup(min_len=41, max_len=61, n_train=200, n_val=40, n_test=47)
    for split, n in (("train", 200), ("val", 40), ("test", 47)):
        ds = task.dataset(split)
        counts = collections.Counter(int(ds[i]["labels"]) for i in range(len(ds)))
        # n // 20 each, the remainder to the lowest class ids
        assert counts == {k: n // 20 + (k < n % 20) for k in range(20)}


def test_dataset_items_and_collate():
    task = SymbolSoup(min_len=41, max_len=61, n_train=0, n_val=20, n_test=0)
    ds = task.dataset("val")
    assert len(task.dataset("train")) == 0
    items = [ds[i] for i in range(4)]
    for it, (text, k) in zip(items, task.examples("val")):
        assert it["input_ids"].dtype == torch.long and it["input_ids"].dim() == 1
        assert it["labels"].dim() == 0 and int(it["labels"]) == k
        assert it["input_ids"].tolist() == task.encode(text)
        assert ss.VOCAB[int(it["input_ids"][-1])] == "<label>"
    batch = pad_collate(items, task.pad_id)
    assert batch["labels"].shape == (4,)
    assert all(ss.VOCAB[int(batch["input_ids"][i, L - 1])] == "<label>" for i, L in enumerate(batch["lengths"]))
    again = task.dataset("val")                  # from the on-disk cache now
    assert all(torch.equal(again[i]["input_ids"], ds[i]["input_ids"]) for i in range(len(ds)))


def test_seeds_and_splits():
    assert ss.generate(30, 3, 41, 81) == ss.generate(30, 3, 41, 81)
    assert ss.generate(30, 3, 41, 81) != ss.generate(30, 4, 41, 81)
    task = SymbolSoup(min_len=41, max_len=81, n_train=30, n_val=30, n_test=30, seed=2)
    assert task.examples("val") == ss.generate(30, split_seed(2, "val"), 41, 81)
    train, val, test = (task.examples(s) for s in ("train", "val", "test"))
    assert train != val and val != test and train != test
    assert not {t for t, _ in train} & {t for t, _ in val}


def test_scaled_doubles_lengths():
    big = SymbolSoup(min_len=41, max_len=61, n_train=0, n_val=20, n_test=20).scaled(2)
    assert (big.min_len, big.max_len) == (82, 122)
    assert all(82 <= len(big.encode(t)) <= 122 for t, _ in big.examples("test"))


# ---------------------------------------------------------------------------------------------------
# styles

# the official generator's styles (primaries, secondaries), pinned
OFFICIAL_STYLES = {
    "left": [("jdif", "chkl"), ("bjmk", "pnhg"), ("ngpf", "edio"), ("gpck", "njao")],
    "right": [("fmpe", "ldcb"), ("lfpo", "akjh"), ("kbje", "gaip"), ("opfm", "edbk"), ("lnag", "obhf")],
}


def test_style_tables_are_the_official_ones():
    letters = lambda ids: "".join(ss.SYMBOLS[i] for i in ids)
    for side, styles in (("left", ss.LEFT_STYLES), ("right", ss.RIGHT_STYLES)):
        assert [(letters(st.primaries), letters(st.secondaries)) for st in styles] == OFFICIAL_STYLES[side]
        for st in styles:
            np.testing.assert_allclose(st.trans, reference_trans(st), rtol=0, atol=1e-12)
            assert st.weights.tolist() == [3.0 if c in st.primaries else 2.0 if c in st.secondaries else 1.0
                                           for c in range(16)]
    keys = {(st.primaries, st.secondaries) for st in ss.LEFT_STYLES + ss.RIGHT_STYLES}
    assert len(keys) == 9
    assert len(ss.MOTIFS) == 14 + 13 + 12
    st = ss.LEFT_STYLES[0]
    for i, m in enumerate(ss.MOTIFS):
        word = "".join("abcdefghijklmnop"[c] for c in m)
        assert word in "abcdefghijklmnop" and 3 <= len(word) <= 5
        n_p = sum(c in st.primaries for c in m)
        n_s = sum(c in st.secondaries for c in m)
        assert st.motif_w[i] == pytest.approx(1 + 0.9 * n_p + 0.5 * n_s)


def test_markov_chain_transitions():
    st = ss.RIGHT_STYLES[2]
    x = st.sample(np.random.default_rng(0), 40_000, motif_p=0.0, flip_p=0.0)
    ref = reference_trans(st)
    counts = np.zeros((16, 16))
    np.add.at(counts, (x[:-1], x[1:]), 1)
    rows = counts.sum(1) >= 2000
    assert rows.sum() >= 4
    emp = counts[rows] / counts[rows].sum(1, keepdims=True)
    assert np.abs(emp - ref[rows]).max() < 0.03


def test_motif_insertion():
    st = ss.LEFT_STYLES[1]
    # motif_p = 1: the block is motifs end to end (up to 2 chain symbols close it when < 3 positions are left),
    # so every maximal run of consecutive letters but the last is >= 3 long
    x = st.sample(np.random.default_rng(1), 3000, motif_p=1.0, flip_p=0.0)[:-2]
    breaks = np.flatnonzero(np.diff(x) != 1) + 1
    runs = np.diff(np.concatenate([[0], breaks, [len(x)]]))
    assert (runs[:-1] >= 3).all()
    # the first motif's start letter follows the motif weights summed over lengths 3..5
    rng = np.random.default_rng(2)
    starts = np.array([st.sample(rng, 5, motif_p=1.0, flip_p=0.0)[0] for _ in range(4000)])
    w = collections.Counter()
    for m in ss.MOTIFS:
        w[m[0]] += 1 + 0.9 * sum(c in st.primaries for c in m) + 0.5 * sum(c in st.secondaries for c in m)
    ref = np.array([w[s] for s in range(16)]) / sum(w.values())
    emp = np.bincount(starts, minlength=16) / len(starts)
    assert np.abs(emp - ref).max() < 0.025


@pytest.mark.parametrize("room", [3, 4])
def test_motif_drawn_among_those_that_fit(room):
    # with motif_p = 1 a block of 3 or 4 symbols opens with a motif that fits: its start letter follows the
    # weights of the motifs of length <= room only (cutting longer motifs would favour early letters)
    st = ss.RIGHT_STYLES[3]
    rng = np.random.default_rng(room)
    blocks = np.array([st.sample(rng, room, motif_p=1.0, flip_p=0.0) for _ in range(4000)])
    w = collections.Counter()
    for m, p in zip(ss.MOTIFS, st.motif_probs(room)):
        assert (p > 0) == (len(m) <= room)
        w[m[0]] += p
    ref = np.array([w[s] for s in range(16)])
    emp = np.bincount(blocks[:, 0], minlength=16) / len(blocks)
    assert np.abs(emp - ref).max() < 0.025            # 4 sigma ~ 0.02 at p ~ 0.1
    assert ref[14:].sum() == 0 and emp[14:].sum() == 0   # no motif starts at o or p
    if room == 3:                                     # the whole block is one motif
        assert (np.diff(blocks, axis=1) == 1).all()
    with pytest.raises(ValueError, match="room"):
        st.motif_probs(2)


def test_flip():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 16, 200_000)
    y = ss.flip(x, 0.03, rng)
    changed = y != x
    assert abs(changed.mean() - 0.03) < 0.003
    shift = (y[changed] - x[changed]) % 16
    assert np.abs(np.bincount(shift, minlength=16)[1:] / changed.sum() - 1 / 15).max() < 0.01
    assert (ss.flip(x, 1.0, rng) != x).all() and (ss.flip(x, 0.0, rng) == x).all()


def test_noise_is_uniform():
    noise = np.concatenate([np.concatenate(parse(t)[0::2]) for t, _ in ss.generate(200, 1, 201, 301)])
    freq = np.bincount(noise, minlength=16) / len(noise)
    assert np.abs(freq - 1 / 16).max() < 0.012       # ~ 9000 draws: 4 sigma is ~0.01


# ---------------------------------------------------------------------------------------------------
# class k = (left style k // 5, right style k % 5)

def test_class_blocks_come_from_its_styles_statistically():
    def fit(style):  # smoothed bigram profile of a long sample of the style (motifs and flips included)
        x = style.sample(np.random.default_rng(11), 20_000)
        c = np.ones((16, 16))
        np.add.at(c, (x[:-1], x[1:]), 1)
        return np.log(c / c.sum(1, keepdims=True))

    L, R = [fit(s) for s in ss.LEFT_STYLES], [fit(s) for s in ss.RIGHT_STYLES]
    ll = lambda logp, x: logp[x[:-1], x[1:]].sum()
    top1 = top3 = 0
    ex = ss.generate(200, 9, 1000, 1200)            # long blocks: ~150 symbols each on average
    for text, k in ex:
        _, b1, _, b2, _ = parse(text)
        # best of the two orders, since the blocks swap places
        score = np.array([max(ll(L[c // 5], b1) + ll(R[c % 5], b2), ll(L[c // 5], b2) + ll(R[c % 5], b1))
                          for c in range(20)])
        top1 += score.argmax() == k
        top3 += (score > score[k]).sum() < 3
    assert top1 >= 0.8 * len(ex) and top3 >= 0.95 * len(ex)   # measured 0.93 / 0.99; chance 0.05 / 0.15


class _Const:
    """A stand-in style that writes one symbol, so each block names its style and its side."""

    def __init__(self, sym: int):
        self.sym = sym

    def sample(self, rng, L):
        return np.full(L, self.sym)


def test_class_blocks_and_swap_structurally(monkeypatch):
    monkeypatch.setattr(ss, "LEFT_STYLES", tuple(_Const(a) for a in range(4)))       # a..d
    monkeypatch.setattr(ss, "RIGHT_STYLES", tuple(_Const(4 + b) for b in range(5)))  # e..i
    swaps = collections.Counter()
    for text, k in ss.generate(400, 3, 41, 81):
        _, b1, _, b2, _ = parse(text)
        assert len(set(b1)) == 1 and len(set(b2)) == 1
        left, right = (b1, b2) if b1[0] < 4 else (b2, b1)
        assert left[0] == k // 5 and right[0] == 4 + k % 5
        swaps[k] += b1[0] >= 4                         # the right-style block came first
    frac = sum(swaps.values()) / 400
    assert 0.4 < frac < 0.6                            # p = 0.5: 4 sigma is ~0.1
    assert 0 < swaps[0] < 20 and 0 < swaps[19] < 20    # swaps happen within a class, not per class


# ---------------------------------------------------------------------------------------------------
# official TSV files

def test_tsv_round_trip(tmp_path):
    ex = ss.generate(25, 0, 41, 81) + [("a\tb \"quoted\"\n<sep>", 19)]
    path = tmp_path / "x.tsv"
    ss.write_tsv(path, ex)
    raw = path.read_text()
    assert raw.startswith("Text\tAnswer\n") and "\tCLASS_19\n" in raw
    assert ss.read_tsv(path) == ex


def test_tsv_with_escaped_newlines(tmp_path):
    ex = ss.generate(5, 1, 41, 81)
    path = tmp_path / "esc.tsv"
    path.write_text("Text\tAnswer\n" + "".join(f"{t.replace(chr(10), chr(92) + 'n')}\tCLASS_{k}\n" for t, k in ex))
    assert "\\n<sep1>" in path.read_text()
    assert ss.read_tsv(path) == ex


def test_data_dir_reads_official_files(tmp_path):
    data = {s: ss.generate(6, i, 41, 81) for i, s in enumerate(("train", "val", "test"))}
    for s, ex in data.items():
        ss.write_tsv(tmp_path / f"{s}.tsv", ex)
    task = SymbolSoup(data_dir=str(tmp_path))
    ds = task.dataset("test")
    assert len(ds) == 6
    for i, (text, k) in enumerate(data["test"]):
        assert ds[i]["input_ids"].tolist() == ss.encode(text) and int(ds[i]["labels"]) == k


def test_bad_tsv(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\tlabel\nabc\tCLASS_1\n")
    with pytest.raises(ValueError, match="header"):
        ss.read_tsv(bad)
    bad.write_text("Text\tAnswer\n<bos>\tCLASS_20\n")
    with pytest.raises(ValueError, match="row 2"):
        ss.read_tsv(bad)


# ---------------------------------------------------------------------------------------------------
# bad input

def test_missing_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"task\.data_dir.*nope"):
        SymbolSoup(data_dir=str(tmp_path / "nope"))
    ss.write_tsv(tmp_path / "train.tsv", [])
    ss.write_tsv(tmp_path / "val.tsv", [])
    with pytest.raises(FileNotFoundError, match=r"task\.data_dir.*test\.tsv"):
        SymbolSoup(data_dir=str(tmp_path))


@pytest.mark.parametrize("kwargs, field", [
    (dict(min_len=300, max_len=200), "min_len"),
    (dict(min_len=40, max_len=40), "max_len"),     # M would have to be in [14, 13]
    (dict(min_len=0, max_len=22), "max_len"),      # the shortest example (M = 5) has 23 tokens
    (dict(n_train=-1), "n_train"),
    (dict(n_val=2.5), "n_val"),
    (dict(seed=-3), "seed"),
])
def test_bad_config(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SymbolSoup(**kwargs)


def test_shortest_and_unknown_characters():
    task = SymbolSoup(min_len=23, max_len=23)        # exactly one valid M = 5
    assert {len(task.encode(t)) for t, _ in task.generate(20, 0)} == {23}
    with pytest.raises(ValueError, match="vocabulary"):
        ss.encode("<bos> z")
