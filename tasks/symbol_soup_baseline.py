"""A trivial baseline of SymbolSoup: multinomial naive Bayes on the symbol counts of the whole text.

It ignores order, the separators and which block is which: every example is the bag of its 16 symbols
(noise included). Fitted on the train split (add-one smoothing, uniform prior), scored on another split.
A model at this accuracy has learnt no more than which symbols its classes use; the task's ceiling
(tasks/symbol_soup_bayes.py) is what reading the blocks can reach.

CLI (one line out):
    python -m sessa_bench.tasks.symbol_soup_baseline --min-len 400 --max-len 600 [--split test]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from . import symbol_soup as ss

LOOKUP = torch.full((len(ss.VOCAB),), -1, dtype=torch.long)  # token id -> symbol index (a=0 .. p=15), else -1
LOOKUP[torch.tensor([ss.TOKEN_ID[c] for c in ss.SYMBOLS])] = torch.arange(len(ss.SYMBOLS))


def counts(packed: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """(n, 16) symbol counts and (n,) classes of a packed split (SymbolSoup.packed: flat ids, lengths, labels)."""
    lengths, n_sym = packed["lengths"], len(ss.SYMBOLS)
    example = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    sym = LOOKUP[packed["ids"].long()]
    keep = sym >= 0
    flat = torch.bincount(example[keep] * n_sym + sym[keep], minlength=len(lengths) * n_sym)
    return flat.view(len(lengths), n_sym).double().numpy(), packed["labels"].numpy()


def fit(X: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """(classes, 16) log symbol probabilities per class, add-one smoothed."""
    totals = np.stack([X[y == k].sum(0) for k in range(num_classes)]) + 1.0
    return np.log(totals / totals.sum(1, keepdims=True))


def count_baseline(task, split: str = "test") -> dict:
    """Accuracy on `split` of naive Bayes on symbol counts fitted on the train split (from the task cache)."""
    logp = fit(*counts(task.packed("train")), task.num_classes)
    X, y = counts(task.packed(split))
    right = (X @ logp.T).argmax(1) == y  # uniform prior: the class term is constant
    return {"acc": float(right.mean()), "n": int(len(y))}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="naive Bayes on symbol counts: a trivial SymbolSoup baseline")
    ap.add_argument("--min-len", type=int, default=400)
    ap.add_argument("--max-len", type=int, default=600)
    ap.add_argument("--split", default="test", choices=("val", "test"))
    ap.add_argument("--seed", type=int, default=0, help="task.seed")
    args = ap.parse_args(argv)
    task = ss.SymbolSoup(min_len=args.min_len, max_len=args.max_len, seed=args.seed)
    r = count_baseline(task, args.split)
    print(f"symbol_soup {args.min_len}-{args.max_len} {args.split}: symbol-count naive Bayes acc {r['acc']:.4f} "
          f"(n={r['n']}, fitted on {task.n_train} train examples), chance {1 / task.num_classes:.2f}")
    return r


if __name__ == "__main__":
    main()
