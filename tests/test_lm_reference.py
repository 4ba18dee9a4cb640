"""tasks/lm_reference.py against a dense, loop-by-loop Kneser-Ney bigram written here from the formula."""

import math

import numpy as np
import pytest

from sessa_bench.tasks.lm import Segments
from sessa_bench.tasks.lm_reference import (DISCOUNT, KneserNeyBigram, bigram_reference, labelled_pairs,
                                            uniform_reference)


def dense_kneser_ney(train, V, D=DISCOUNT):
    """P[p, n] by the textbook formula, with plain loops and a V x V count matrix."""
    C = np.zeros((V, V))
    for a, b in zip(train[:-1], train[1:]):
        C[a, b] += 1
    cont = np.array([(C[:, n] > 0).sum() + 1.0 for n in range(V)])
    cont /= cont.sum()
    P = np.zeros((V, V))
    for p in range(V):
        c = C[p].sum()
        if c == 0:
            P[p] = cont
            continue
        lam = D * (C[p] > 0).sum() / c
        for n in range(V):
            P[p, n] = max(C[p, n] - D, 0.0) / c + lam * cont[n]
    return P


@pytest.fixture
def stream():
    rng = np.random.default_rng(0)
    V = 9
    train = rng.integers(0, V - 1, size=400)  # token V-1 never occurs in training: an unseen context
    test = rng.integers(0, V, size=130)
    return V, train, test


def test_probabilities_match_the_dense_formula(stream):
    V, train, _ = stream
    model, P = KneserNeyBigram(train, V), dense_kneser_ney(train, V)
    p, n = np.meshgrid(np.arange(V), np.arange(V), indexing="ij")
    np.testing.assert_allclose(model.prob(p.ravel(), n.ravel()).reshape(V, V), P, rtol=1e-12)
    for ctx in range(V):
        np.testing.assert_allclose(model.row(ctx), P[ctx], rtol=1e-12)
    np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-12)  # the formula's rows are distributions, unseen too


def test_labelled_pairs_are_the_segments_labels(stream):
    _, _, test = stream
    seg = Segments(test, 16)
    items = [seg[i] for i in range(len(seg))]
    prev, lab = labelled_pairs(test, 16)
    np.testing.assert_array_equal(prev, np.concatenate([it["input_ids"].numpy() for it in items]))
    np.testing.assert_array_equal(lab, np.concatenate([it["labels"].numpy() for it in items]))


def test_test_metrics_match_a_position_by_position_count(stream):
    V, train, test = stream
    P = dense_kneser_ney(train, V)
    prev, lab = labelled_pairs(test, 16)
    nll = [-math.log(P[a, b]) for a, b in zip(prev, lab)]
    ranks = [list(np.argsort(-P[a], kind="stable")[:5]) for a in prev]
    got = bigram_reference(train, test, V, 16)
    assert got["test/ppl"] == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-12)
    assert got["test/acc"] == pytest.approx(np.mean([r[0] == b for r, b in zip(ranks, lab)]))
    assert got["test/top5"] == pytest.approx(np.mean([b in r for r, b in zip(ranks, lab)]))


def test_a_predictable_stream_is_predicted_and_chance_is_uniform():
    cycle = np.tile(np.arange(6), 50)  # each token has one successor
    got = bigram_reference(cycle, cycle, 6, 8)
    assert got["test/acc"] == 1.0 and got["test/top5"] == 1.0 and 1.0 < got["test/ppl"] < 1.1
    assert uniform_reference(4096) == {"test/ppl": 4096.0, "test/acc": 1 / 4096, "test/top5": 5 / 4096}
