"""Implementations of Sessa's feedback solve. `feedback(..., impl=)` picks one; all compute the same s.

- dense:   the T x T reference (feedback_dense.py)
"""

from __future__ import annotations

from .feedback_dense import feedback_dense

IMPLS = ("auto", "dense")


def feedback(f, q_b, k_b, gamma, impl: str = "auto"):
    if impl not in IMPLS:
        raise ValueError(f"sessa impl={impl!r} is not one of {IMPLS}")
    return feedback_dense(f, q_b, k_b, gamma)
