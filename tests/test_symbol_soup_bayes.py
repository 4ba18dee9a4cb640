"""SymbolSoup's Bayes ceiling: the block likelihoods are exact, the posterior mixes the two block orders.

References: a brute-force distribution of the true symbols built step by step from the style process (every
chain step and every motif that fits, no hidden-state bookkeeping), with the flips applied axis by axis;
samples of the generator itself; and the class rule k = 5 a + b written out.
"""

import functools
import itertools

import numpy as np
import pytest

from sessa_bench.tasks import symbol_soup as ss
from sessa_bench.tasks import symbol_soup_bayes as sb

STYLES = ss.LEFT_STYLES + ss.RIGHT_STYLES


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))


def brute_force(style, L: int, motif_p: float = ss.MOTIF_P, flip_p: float = ss.FLIP_P) -> np.ndarray:
    """(16,) * L: P(observed block) by expanding every step of the process, then flipping each position."""
    @functools.lru_cache(None)
    def rest(x, room):  # P(the next `room` true symbols | last true symbol x; None before the first)
        if room == 0:
            return np.ones(())
        pm = motif_p if room >= 3 else 0.0
        row = style.weights / style.weights.sum() if x is None else style.trans[x]
        out = np.stack([(1 - pm) * row[y] * rest(y, room - 1) for y in range(16)])
        for m, q in zip(ss.MOTIFS, style.motif_probs(room) if pm else ()):
            if len(m) <= room:
                out[m] += pm * q * rest(m[-1], room - len(m))
        return out

    P = rest(None, L)
    e = np.array([[1 - flip_p if x == y else flip_p / 15 for y in range(16)] for x in range(16)])
    for ax in range(L):
        P = np.moveaxis(np.tensordot(P, e, axes=([ax], [0])), -1, ax)
    return P


def all_blocks(L):
    return [np.array(t) for t in itertools.product(range(16), repeat=L)]


def test_likelihoods_sum_to_one_over_all_short_blocks():
    for L in (1, 2, 3, 4):
        p = np.exp(sb.block_logliks(all_blocks(L), STYLES))
        np.testing.assert_allclose(p.sum(0), 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("motif_p, flip_p", [(ss.MOTIF_P, ss.FLIP_P), (0.7, 0.2)])
def test_forward_equals_brute_force(motif_p, flip_p):
    rng = np.random.default_rng(0)
    for style in (ss.LEFT_STYLES[0], ss.RIGHT_STYLES[4]):
        for L in (1, 2, 3, 4, 5):
            ref = brute_force(style, L, motif_p, flip_p).reshape(-1)
            # L <= 3: every block; longer: the 300 likeliest (motifs, preferred bigrams) and 300 at random
            idx = np.arange(16 ** L) if L <= 3 else np.unique(np.concatenate(
                [np.argsort(ref)[-300:], rng.integers(0, 16 ** L, 300)]))
            blocks = [np.array(np.unravel_index(i, (16,) * L)) for i in idx]
            got = np.exp(sb.block_logliks(blocks, [style], motif_p, flip_p, chunk=97)[:, 0])
            np.testing.assert_allclose(got, ref[idx], rtol=1e-10, atol=0)
    # chunking and the order of blocks of mixed lengths do not matter
    mixed = [rng.integers(0, 16, n) for n in rng.integers(1, 60, 50)]
    a = sb.block_logliks(mixed, STYLES, chunk=7)
    b = sb.block_logliks(mixed[::-1], STYLES, chunk=1000)[::-1]
    np.testing.assert_allclose(a, b, rtol=1e-12)


def chi2(counts: dict, probs: dict, n: int) -> tuple[float, int]:
    """Pearson statistic over the outcomes expected >= 10 times, the rest pooled; and its degrees of freedom."""
    big = [s for s, p in probs.items() if n * p >= 10]
    obs = np.array([counts.get(s, 0) for s in big] + [n - sum(counts.get(s, 0) for s in big)], dtype=float)
    exp = n * np.array([probs[s] for s in big] + [1 - sum(probs[s] for s in big)])
    return float(((obs - exp) ** 2 / exp).sum()), len(big)


def test_generator_samples_follow_the_likelihood():
    style, L, n = ss.LEFT_STYLES[3], 5, 20_000        # 5 symbols: motifs of all lengths, rooms 3 and 4 too
    rng = np.random.default_rng(7)
    counts = {}
    for _ in range(n):
        key = tuple(style.sample(rng, L).tolist())
        counts[key] = counts.get(key, 0) + 1
    seen = list(counts)
    blocks = [np.array(s) for s in seen]
    for st, fits in ((style, True), (ss.RIGHT_STYLES[0], False)):
        probs = dict(zip(seen, np.exp(sb.block_logliks(blocks, [st])[:, 0])))
        stat, df = chi2(counts, probs, n)
        assert df >= 50
        limit = df + 6 * (2 * df) ** 0.5
        assert (stat < limit) == fits, (stat, limit)  # and another style's likelihood is rejected


def test_posterior_mixes_both_orders_with_class_rule():
    # short blocks, so the brute force gives every class likelihood; both orders of the same two blocks
    b1, b2 = np.array([0, 1, 2]), np.array([9, 9])
    P = {(i, len(b)): brute_force(st, len(b))[tuple(b)] for i, st in enumerate(STYLES) for b in (b1, b2)}
    like = np.array([0.5 * P[(a, 3)] * P[(4 + b, 2)] + 0.5 * P[(4 + b, 3)] * P[(a, 2)]
                     for a in range(4) for b in range(5)])          # class k = 5 a + b
    text = ss.render([3], b1, [4, 5], b2, [6])
    post = sb.posteriors([(text, 0)])[0]
    np.testing.assert_allclose(post, like / like.sum(), rtol=1e-10)
    swapped = sb.posteriors([(ss.render([3], b2, [4, 5], b1, [6]), 0)])[0]
    np.testing.assert_allclose(swapped, post, rtol=1e-12)
    assert not np.allclose(post, 1 / 20, atol=1e-3)


def test_ceiling_near_reference_at_default_lengths():
    task = ss.SymbolSoup(n_train=0, n_val=400, n_test=0)            # 401-599 tokens
    r = sb.bayes_ceiling(task, "val")
    # an independent computation gives ~0.82 (and ~0.5 on the ~14 % of examples with a shorter block of
    # < 10 symbols); the full val split (2000) gives 0.81 / 0.82 here
    assert r["n"] == 400
    assert 0.78 < r["expected_acc"] < 0.86 and abs(r["acc"] - r["expected_acc"]) < 4 * r["stderr"]
    assert 0.09 < r["short_frac"] < 0.20 and r["short_acc"] < 0.75
    assert sb.bayes_ceiling(task, "val", n=10)["n"] == 10


def test_cli_prints_one_line(capsys):
    r = sb.main(["--min-len", "41", "--max-len", "81", "--split", "test", "--split-size", "40", "--n", "30"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("symbol_soup 41-81 test n=30: bayes acc") and r["n"] == 30


def test_chance_level():
    assert ss.SymbolSoup().chance == 0.05


def test_bad_input():
    task = ss.SymbolSoup(min_len=41, max_len=81, n_train=0, n_val=20, n_test=0)
    for n in (0, 21, 2.0):
        with pytest.raises(ValueError, match=r"n=.* must be an int in \[1, 20\]"):
            sb.bayes_ceiling(task, "val", n=n)
    with pytest.raises(ValueError, match="split"):
        sb.bayes_ceiling(task, "dev")
    with pytest.raises(ValueError, match="template"):
        sb.parse("<bos>\na\n<sep> <label>")
    with pytest.raises(ValueError, match="at least one symbol"):
        sb.block_logliks([np.array([1, 2]), np.array([], dtype=int)], STYLES)
    with pytest.raises(ValueError, match="no examples"):
        sb.ceiling_of_examples([])
