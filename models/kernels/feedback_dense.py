"""Dense reference for Sessa's feedback branch: forms the T x T routing matrix and solves it.

s solves (I - diag(gamma) alpha) s = f, with alpha[t, j] = softmax_{j<t}(q_b[t] . k_b[j] / sqrt(D)) over the
strict past and alpha[0, :] = 0, i.e. s[0] = f[0], s[t] = f[t] + gamma[t] * sum_{j<t} alpha[t, j] s[j].
Computed in at least float32 whatever the input dtype (float64 stays float64 for reference checks).
O(B T^2) memory: this is the correctness reference, not the fast path.
"""

from __future__ import annotations

import math

import torch


def routing_dense(q_b: torch.Tensor, k_b: torch.Tensor) -> torch.Tensor:
    """alpha: (B, T, T), softmax over j < t of q_b[t].k_b[j] / sqrt(D); row 0 is all zeros."""
    acc = torch.promote_types(q_b.dtype, torch.float32)
    T, D = q_b.shape[1], q_b.shape[2]
    logits = torch.einsum("btd,bsd->bts", q_b.to(acc), k_b.to(acc)) / math.sqrt(D)
    strict = torch.ones(T, T, dtype=torch.bool, device=q_b.device).tril(-1)
    # Row 0 has no past: give its softmax one finite entry so no NaN appears, then zero the row.
    soft_mask = strict.clone()
    soft_mask[0, 0] = True
    alpha = logits.masked_fill(~soft_mask, float("-inf")).softmax(-1)
    return alpha * strict


def solve_routing(alpha: torch.Tensor, gamma: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """s solving (I - diag(gamma) alpha) s = f for any strictly lower-triangular alpha: (B, T, T).
    Split out so theory checks can feed a hand-built alpha (e.g. uniform routing 1/t)."""
    acc = torch.promote_types(f.dtype, torch.float32)
    eye = torch.eye(f.shape[1], dtype=acc, device=f.device)
    system = eye - gamma.to(acc)[..., None] * alpha.to(acc)
    s = torch.linalg.solve_triangular(system, f.to(acc), upper=False, unitriangular=True)
    return s.to(f.dtype)


def feedback_dense(f: torch.Tensor, q_b: torch.Tensor, k_b: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """f, q_b, k_b: (B, T, D); gamma: (B, T). Returns s: (B, T, D) in f's dtype."""
    return solve_routing(routing_dense(q_b, k_b), gamma, f)
