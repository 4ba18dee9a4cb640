"""The Bayes-optimal accuracy of SymbolSoup: the exact posterior over the 20 classes of every example.

Why it cancels to two block likelihoods. Given its class k = (left style a, right style b), an example is
drawn as: the lengths (M, the noise split and the block lengths), the order of the blocks, the two blocks
and the noise. The separators make the five parts visible, so the observer sees every length. The noise
is uniform over the 16 symbols and its lengths depend on M only: class-independent. The left block's
length L_left ~ U[1, main-1] has the same law as main - L_left, so the pair of block lengths in text order
has the same law whichever block comes first: class- and order-independent too. With a uniform prior,

    P(k | text)  is proportional to  0.5 P(block1 | a) P(block2 | b) + 0.5 P(block1 | b) P(block2 | a),

where P(block | style) is the probability of the observed symbols of a block of that (known) length under
the style's process. That is the only thing to compute, for each block under each of the 9 styles.

Block likelihood: a forward algorithm, exact. The hidden path of a block is a sequence of steps: a chain
step writes one symbol (the first from the unigram weights, later ones from the style's transition row of
the true previous symbol), a motif step writes a whole motif (with p = motif_p when at least 3 positions are
left, drawn among the motifs that fit the positions left); then each true symbol x is seen as y with
e(y | x) = 1 - flip_p if y == x, else flip_p / 15. Let F_u(x) be the joint probability of the first u
observed symbols and of a step ending right after them with true last symbol x. Because a motif is a run of
consecutive letters, a motif of length n that ends after u symbols and has last symbol x started at
x - n + 1, so

    F_u(x) = e(y_u | x) c(u-1) sum_z F_{u-1}(z) T[z, x]                       (chain step; start weights at u = 1)
           + sum_{n=3..5} m(u-n) G_{u-n} q_{u-n}(x-n+1, n) prod_{j<n} e(y_{u-n+1+j} | x-n+1+j)   (motif step)

with G_v = sum_x F_v(x) (G_0 = 1), m(v) = motif_p and c(v) = 1 - motif_p when L - v >= 3 positions are left
after v symbols (m = 0, c = 1 otherwise), q_v(s, n) the probability of the motif starting at s with length n
among those that fit L - v, and P(block) = G_L. It is the forward algorithm of the hidden state (true last
symbol, motif symbols still due), with the deterministic in-motif states summed out. F is rescaled to sum 1
at every u (the log scale is carried), which keeps float64 exact to rounding on blocks of any length.

Speed: blocks are sorted by length and run in chunks, vectorised over blocks x 9 styles x 16 symbols.
Checked in tests/test_symbol_soup_bayes.py against a brute-force enumeration of hidden paths and against
samples of the generator itself.

CLI (one line out):
    python -m sessa_bench.tasks.symbol_soup_bayes --min-len 400 --max-len 600 [--n 2000] [--split val]
"""

from __future__ import annotations

import argparse
import math
import re
import time

import numpy as np

from . import symbol_soup as ss

SHORT = 10  # the "short block" cut of the report: examples whose shorter block has fewer symbols
_PART = r"([a-p](?: [a-p])*)"
_TEMPLATE = re.compile(r"<bos>\n{0}\n<sep1>\n{0}\n<sep2>\n{0}\n<sep1>\n{0}\n<sep2>\n{0}\n<sep> <label>".format(_PART))


def emission(flip_p: float = ss.FLIP_P) -> np.ndarray:
    """(16, 16) e[x, y] = P(seen y | true x)."""
    return np.where(np.eye(16, dtype=bool), 1.0 - flip_p, flip_p / 15.0)


class StyleTables:
    """The parameters of a list of styles, stacked for the forward pass."""

    def __init__(self, styles, motif_p: float = ss.MOTIF_P):
        self.n = len(styles)
        self.motif_p = float(motif_p)
        self.start = np.stack([st.weights / st.weights.sum() for st in styles])            # (S, 16)
        self.trans = np.stack([st.trans for st in styles])                                 # (S, 16, 16)
        # q[r - 3, :, n - 3, s]: P(motif (s, length n) | a motif is drawn with r positions left), r = 3, 4, >= 5
        self.q = np.zeros((3, self.n, 3, 16))
        for r in (3, 4, 5):
            for i, st in enumerate(styles):
                for m, p in zip(ss.MOTIFS, st.motif_probs(r)):
                    self.q[r - 3, i, len(m) - 3, m[0]] = p


def block_logliks(blocks, styles, motif_p: float = ss.MOTIF_P, flip_p: float = ss.FLIP_P,
                  chunk: int = 256) -> np.ndarray:
    """(len(blocks), len(styles)) natural-log likelihood of each block (a sequence of symbol ids 0..15,
    length >= 1) under each style's process; see the module docstring."""
    tabs = StyleTables(styles, motif_p)
    lengths = np.array([len(b) for b in blocks], dtype=np.int64)
    if len(blocks) and lengths.min() < 1:
        raise ValueError("blocks must hold at least one symbol each")
    out = np.empty((len(blocks), tabs.n))
    order = np.argsort(lengths, kind="stable")
    for i in range(0, len(blocks), chunk):
        idx = order[i:i + chunk]
        out[idx] = _forward([np.asarray(blocks[j], dtype=np.int64) for j in idx], lengths[idx], tabs,
                            emission(flip_p))
    return out


def _forward(blocks: list[np.ndarray], lengths: np.ndarray, tabs: StyleTables, emit: np.ndarray) -> np.ndarray:
    """The scaled forward pass of one chunk of blocks, left-aligned (each block's room is its own)."""
    B, S, Lmax = len(blocks), tabs.n, int(lengths.max())
    Y = np.zeros((B, Lmax), dtype=np.int64)
    for b, x in enumerate(blocks):
        Y[b, :len(x)] = x                                  # past a block's end: padding, never read back
    E = emit[:, Y].transpose(1, 2, 0)                      # (B, Lmax, 16): E[b, i, x] = e(Y[b, i] | x)
    logk = np.zeros((Lmax + 1, B, S))                      # log of the scale of F_u: F_u = exp(logk[u]) F_hat_u
    F = None                                               # F_hat_{u-1}, sums to 1 over x
    for u in range(1, Lmax + 1):
        room = lengths - (u - 1)                           # positions left after u - 1 symbols, per block
        m = np.where(room >= 3, tabs.motif_p, 0.0)[:, None, None]
        chain = tabs.start[None] if u == 1 else (F[:, :, None, :] @ tabs.trans)[:, :, 0]   # (B or 1, S, 16)
        new = (1.0 - m) * chain * E[:, u - 1, None, :]
        for n in (3, 4, 5):
            v = u - n                                      # the boundary where this motif started
            if v < 0:
                break
            room_v = lengths - v
            ok = room_v >= n                               # motif fits (then also room_v >= 3)
            if not ok.any():
                continue
            # P(motif (s, n)) per block and style, with the table of its room (3, 4 or >= 5 left)
            q = tabs.q[np.clip(room_v, 3, 5) - 3, :, n - 3, :17 - n]    # (B, S, 17 - n) over starts s
            d = E[:, v, :17 - n].copy()                    # prod_j e(y_{v+j} | s + j)
            for j in range(1, n):
                d *= E[:, v + j, j:17 - n + j]
            ratio = np.exp(logk[v] - logk[u - 1])          # F_v / scale of F_{u-1}; G_hat_v = 1
            term = (tabs.motif_p * ok)[:, None, None] * ratio[..., None] * q * d[:, None, :]
            new[..., n - 1:] += term                       # the motif's last symbol is s + n - 1
        z = new.sum(-1)                                    # (B, S), > 0 always
        logk[u] = logk[u - 1] + np.log(z)
        F = new / z[..., None]
    return logk[lengths, np.arange(B)]                     # log G_L = log of the scale at u = L


def parse(text: str) -> tuple[np.ndarray, np.ndarray]:
    """The two blocks (block1, block2) of an example text, as symbol ids."""
    m = _TEMPLATE.fullmatch(text)
    if m is None:
        raise ValueError(f"text does not follow the SymbolSoup template: {text!r:.120}")
    return tuple(np.frombuffer(m.group(i).replace(" ", "").encode(), dtype=np.uint8).astype(np.int64) - ord("a")
                 for i in (2, 4))


def posteriors(examples, motif_p: float = ss.MOTIF_P, flip_p: float = ss.FLIP_P) -> np.ndarray:
    """(n, 20) P(class | text) for a list of (text, class) examples, uniform prior."""
    pairs = [parse(text) for text, _ in examples]
    blocks = [b for pair in pairs for b in pair]
    styles = ss.LEFT_STYLES + ss.RIGHT_STYLES
    ll = block_logliks(blocks, styles, motif_p, flip_p).reshape(len(examples), 2, len(styles))
    nl = len(ss.LEFT_STYLES)
    l1L, l1R, l2L, l2R = ll[:, 0, :nl], ll[:, 0, nl:], ll[:, 1, :nl], ll[:, 1, nl:]
    # class k = N_RIGHT a + b: either block1 is left (a) and block2 right (b), or the other way round
    score = np.logaddexp(l1L[:, :, None] + l2R[:, None, :], l2L[:, :, None] + l1R[:, None, :])
    score = score.reshape(len(examples), -1)
    score -= score.max(1, keepdims=True)
    post = np.exp(score)
    return post / post.sum(1, keepdims=True)


def ceiling_of_examples(examples) -> dict:
    """Bayes accuracy of a list of (text, class) examples; see `bayes_ceiling`."""
    if not examples:
        raise ValueError("no examples to score")
    post = posteriors(examples)
    labels = np.array([k for _, k in examples])
    right = post.argmax(1) == labels
    short = np.array([min(len(b1), len(b2)) < SHORT for b1, b2 in (parse(t) for t, _ in examples)])
    n = len(examples)
    return dict(acc=float(right.mean()), expected_acc=float(post.max(1).mean()),
                stderr=float(right.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
                expected_stderr=float(post.max(1).std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
                n=n, short_frac=float(short.mean()),
                short_acc=float(right[short].mean()) if short.any() else float("nan"))


def bayes_ceiling(task, split: str = "val", n: int | None = None) -> dict:
    """The Bayes-optimal accuracy on the first n examples (all if None) of a SymbolSoup task's split.

    acc: mean of [argmax posterior == class]; expected_acc: mean of the max posterior (its expectation, lower
    variance); stderr / expected_stderr: their standard errors; short_frac / short_acc: the share of examples
    whose shorter block has < 10 symbols, and the Bayes accuracy on them.
    """
    examples = task.examples(split)
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(examples):
            raise ValueError(f"n={n!r} must be an int in [1, {len(examples)}] (the size of split {split!r})")
        examples = examples[:n]
    return ceiling_of_examples(examples)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="Bayes-optimal accuracy of a SymbolSoup configuration")
    ap.add_argument("--min-len", type=int, default=400)
    ap.add_argument("--max-len", type=int, default=600)
    ap.add_argument("--split", default="val", choices=("train", "val", "test"))
    ap.add_argument("--n", type=int, default=None, help="first n examples of the split (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="task.seed")
    ap.add_argument("--split-size", type=int, default=2000, help="examples in the split (task.n_<split>)")
    ap.add_argument("--data-dir", default=None, help="official TSV files instead of generating")
    args = ap.parse_args(argv)
    task = ss.SymbolSoup(min_len=args.min_len, max_len=args.max_len, seed=args.seed, data_dir=args.data_dir,
                         **{f"n_{s}": (args.split_size if s == args.split else 0) for s in ("train", "val", "test")})
    t0 = time.perf_counter()
    r = bayes_ceiling(task, args.split, args.n)
    print(f"symbol_soup {args.min_len}-{args.max_len} {args.split} n={r['n']}: bayes acc {r['acc']:.4f} "
          f"± {r['stderr']:.4f}, expected acc {r['expected_acc']:.4f} ± {r['expected_stderr']:.4f}, "
          f"shorter block < {SHORT} symbols in {r['short_frac']:.3f} (bayes acc there {r['short_acc']:.3f}), "
          f"chance {task.chance:.2f}, {time.perf_counter() - t0:.1f}s")
    return r


if __name__ == "__main__":
    main()
