"""Reference predictors for a language-modelling table: what the models' perplexity and accuracy mean.

- `chance`: the uniform guess over the vocabulary (perplexity V, top-1 1/V, top-5 5/V).
- `bigram`: an interpolated Kneser-Ney bigram fitted on the training stream (absolute discount D; the
  continuation unigram add-one smoothed so every token has a probability), the classic n-gram floor.

Both are scored on the test stream exactly as the models are (tasks/lm.py Segments, sessa_bench/metrics.py):
every label of every full segment, predicted here from the token before it, which each model also sees;
perplexity is exp of the mean negative log-likelihood over those labels. Counted with numpy on pair codes
(prev * V + next), so memory grows with the distinct bigrams, not with V^2.
"""

from __future__ import annotations

import numpy as np

VERSION = 1            # bump when a number here would change, so cached references are recomputed
DISCOUNT = 0.75        # the usual absolute discount of Kneser-Ney
TOPK = 5               # top-5 accuracy, as the models' `top5`
MAX_TRAIN_TOKENS = 50_000_000  # a larger training stream is counted on its first this many tokens (said in facts)


def labelled_pairs(tokens: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(previous token, label) of every label position of the stream's full segments of seq_len."""
    n = max(0, (len(tokens) - 1) // seq_len) * seq_len
    t = np.asarray(tokens[: n + 1], dtype=np.int64)
    return t[:-1], t[1:]


class KneserNeyBigram:
    """P(n | p) = max(c(p, n) - D, 0) / c(p) + D N1+(p .) / c(p) * P_cont(n), and P_cont(n) for a context
    never seen in training; P_cont(n) = (N1+(. n) + 1) / sum over n of the same."""

    def __init__(self, train: np.ndarray, vocab_size: int, discount: float = DISCOUNT):
        V = self.V = int(vocab_size)
        self.D = float(discount)
        t = np.asarray(train, dtype=np.int64)
        codes, counts = np.unique(t[:-1] * V + t[1:], return_counts=True)  # sorted by (prev, next)
        self.prev, self.next, self.counts = codes // V, codes % V, counts.astype(np.float64)
        self.codes = codes
        self.ctx = np.bincount(self.prev, weights=self.counts, minlength=V)   # c(p .)
        self.types = np.bincount(self.prev, minlength=V).astype(np.float64)   # N1+(p .)
        cont = np.bincount(self.next, minlength=V).astype(np.float64) + 1.0   # N1+(. n), add-one
        self.cont = cont / cont.sum()
        self.starts = np.searchsorted(self.prev, np.arange(V + 1))            # each prev's slice of codes

    def backoff(self, p: np.ndarray) -> np.ndarray:
        """The weight of the continuation unigram after p (1 for a context never seen in training)."""
        c = self.ctx[p]
        return np.where(c > 0, self.D * self.types[p] / np.maximum(c, 1.0), 1.0)

    def prob(self, p: np.ndarray, n: np.ndarray) -> np.ndarray:
        """P(n | p) for arrays of pairs."""
        code = p * self.V + n
        i = np.clip(np.searchsorted(self.codes, code), 0, len(self.codes) - 1)
        seen = self.codes[i] == code
        c = np.where(seen, self.counts[i], 0.0)
        ctx = self.ctx[p]
        direct = np.where(ctx > 0, np.maximum(c - self.D, 0.0) / np.maximum(ctx, 1.0), 0.0)
        return direct + self.backoff(p) * self.cont[n]

    def row(self, p: int) -> np.ndarray:
        """The whole distribution P(. | p) (sums to 1)."""
        out = self.backoff(np.array([p]))[0] * self.cont
        a, b = self.starts[p], self.starts[p + 1]
        if self.ctx[p] > 0:
            out[self.next[a:b]] += np.maximum(self.counts[a:b] - self.D, 0.0) / self.ctx[p]
        return out


def uniform_reference(vocab_size: int) -> dict[str, float]:
    V = float(vocab_size)
    return {"test/ppl": V, "test/acc": 1.0 / V, "test/top5": min(TOPK, V) / V}


def bigram_reference(train: np.ndarray, test: np.ndarray, vocab_size: int, seq_len: int) -> dict[str, float]:
    """Test perplexity, top-1 and top-5 accuracy of the Kneser-Ney bigram fitted on `train`."""
    model = KneserNeyBigram(train[:MAX_TRAIN_TOKENS], vocab_size)
    p, n = labelled_pairs(test, seq_len)
    if len(p) == 0:
        return {}
    nll = -np.log(model.prob(p, n))
    order = np.argsort(p, kind="stable")
    contexts, starts = np.unique(p[order], return_index=True)
    top1 = top5 = 0
    for ctx, labels in zip(contexts, np.split(n[order], starts[1:])):  # one distribution per context
        ranked = np.argsort(-model.row(int(ctx)), kind="stable")[:TOPK]
        top1 += int((labels == ranked[0]).sum())
        top5 += int(np.isin(labels, ranked).sum())
    return {"test/ppl": float(np.exp(nll.mean())), "test/acc": top1 / len(p), "test/top5": top5 / len(p)}
