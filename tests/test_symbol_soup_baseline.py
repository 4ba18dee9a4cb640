"""tasks/symbol_soup_baseline.py: the counts, the fit and the accuracy against hand-made data, and its place
between chance and the Bayes ceiling on a real (small) SymbolSoup task."""

import numpy as np

from sessa_bench.tasks.symbol_soup import SymbolSoup
from sessa_bench.tasks.symbol_soup_bayes import bayes_ceiling
from sessa_bench.tasks.symbol_soup_baseline import count_baseline, counts, fit


def test_counts_read_only_symbols():
    X, y = counts([("<bos>\na a p\n<sep1>\np <sep> b\n<label>", 3), ("c", 0)])
    assert y.tolist() == [3, 0]
    assert X[0, 0] == 2 and X[0, 15] == 2 and X[0, 1] == 1 and X[0].sum() == 5 and X[1, 2] == 1


def test_fit_is_add_one_smoothed_and_classifies_by_counts():
    X = np.array([[3.0, 0] + [0] * 14, [0, 3.0] + [0] * 14])
    logp = fit(X, np.array([0, 1]), 2)
    np.testing.assert_allclose(np.exp(logp[0, :2]), [4 / 19, 1 / 19])  # (3 + 1) / (3 + 16), (0 + 1) / 19
    np.testing.assert_allclose(np.exp(logp).sum(1), 1.0)

    class Toy:  # class k uses only symbol k: counts decide every example
        num_classes = 2

        @staticmethod
        def examples(split):
            return [("a a b", 0), ("b b a", 1), ("a", 0), ("b", 1)]

    assert count_baseline(Toy(), "test") == {"acc": 1.0, "n": 4}


def test_baseline_lies_between_chance_and_the_ceiling():
    task = SymbolSoup(n_train=2000, n_val=10, n_test=400)
    acc = count_baseline(task, "test")["acc"]
    ceiling = bayes_ceiling(task, "test")["acc"]
    assert 0.15 < acc < ceiling - 0.2, (acc, ceiling)  # bags of symbols separate some styles, not the task
    assert task.facts()["baseline"] == acc
