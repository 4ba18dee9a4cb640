"""tasks/symbol_soup_baseline.py: the counts against counting the text by hand, the fit and the accuracy on
hand-made data, and its place between chance and the Bayes ceiling on a real (small) SymbolSoup task."""

import numpy as np
import torch

from sessa_bench.tasks.symbol_soup import SYMBOLS, SymbolSoup, encode
from sessa_bench.tasks.symbol_soup_bayes import bayes_ceiling
from sessa_bench.tasks.symbol_soup_baseline import count_baseline, counts, fit


def packed_of(examples):
    ids = [encode(text) for text, _ in examples]
    return {"ids": torch.tensor([t for row in ids for t in row], dtype=torch.uint8),
            "lengths": torch.tensor([len(row) for row in ids]), "labels": torch.tensor([k for _, k in examples])}


def test_counts_equal_counting_the_text():
    examples = SymbolSoup(n_train=5, n_val=1, n_test=1).examples("train") + [("<bos>\na a p\n<sep1>\np", 3)]
    X, y = counts(packed_of(examples))
    want = np.array([[text.split().count(c) for c in SYMBOLS] for text, _ in examples])
    assert (X == want).all() and y.tolist() == [k for _, k in examples]
    assert X[-1, 0] == 2 and X[-1, 15] == 2 and X[-1].sum() == 4  # separators and specials are not symbols


def test_fit_is_add_one_smoothed_and_classifies_by_counts():
    X = np.array([[3.0, 0] + [0] * 14, [0, 3.0] + [0] * 14])
    logp = fit(X, np.array([0, 1]), 2)
    np.testing.assert_allclose(np.exp(logp[0, :2]), [4 / 19, 1 / 19])  # (3 + 1) / (3 + 16), (0 + 1) / 19
    np.testing.assert_allclose(np.exp(logp).sum(1), 1.0)

    class Toy:  # class k uses only symbol k: counts decide every example
        num_classes = 2

        @staticmethod
        def packed(split):
            return packed_of([("a a b", 0), ("b b a", 1), ("a", 0), ("b", 1)])

    assert count_baseline(Toy(), "test") == {"acc": 1.0, "n": 4}


def test_baseline_lies_between_chance_and_the_ceiling(tmp_path, monkeypatch):
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path))
    task = SymbolSoup(n_train=2000, n_val=10, n_test=400)
    acc = count_baseline(task, "test")["acc"]
    ceiling = bayes_ceiling(task, "test")["acc"]
    assert 0.15 < acc < ceiling - 0.2, (acc, ceiling)  # bags of symbols separate some styles, not the task
    assert task.facts()["baseline"] == acc
