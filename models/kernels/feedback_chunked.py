"""Chunked PyTorch feedback solve: the same s as feedback_dense, in O(B T C + B T D) memory, on any device.

s solves (I - diag(gamma) alpha) s = f with alpha[t, j] = softmax_{j<t}(q_b[t] . k_b[j] / sqrt(D)), row 0 = 0.
Never builds the T x T matrix. The sequence is walked in chunks of C rows:

forward, chunk c = rows [c0, c1), in order:
    l     = q_c k_{<c1}^T / sqrt(D), masked to the strict past           (B, C, c1): one row strip
    lse   = logsumexp of each row (0 for row 0, which has no past)        saved for backward
    p     = exp(l - lse) = alpha rows of the chunk
    h_off = p[:, :, :c0] @ s[:c0]           routed past from earlier chunks, all already solved
    s_c   = (I - diag(gamma_c) p_cc)^{-1} (f_c + gamma_c h_off)   a small unit-lower-triangular solve
    h_c   = h_off + p_cc s_c                = (alpha s)_c, saved: backward needs it for dgamma

backward: with M = I - diag(gamma) alpha and s = M^{-1} f,
    u = M^{-T} ds (df = u), solved in reverse chunk order from column strips of alpha (B, T - c1, C)
    dgamma[t] = u[t] . h[t]                     (the direct form: no division by gamma)
    dalpha[t, j] = gamma[t] u[t] . s[j]  ->  softmax backward  dl = alpha (dalpha - gamma u . h)
    dq_b = dl k_b / sqrt(D),  dk_b = dl^T q_b / sqrt(D), again one row strip at a time.
Everything runs in at least float32 (float64 stays float64); alpha is recomputed from the saved lse.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable


def check_inputs(f: torch.Tensor, q_b: torch.Tensor, k_b: torch.Tensor, gamma: torch.Tensor) -> None:
    if f.dim() != 3:
        raise ValueError(f"feedback f must be (B, T, D), got shape {tuple(f.shape)}")
    for name, x in (("q_b", q_b), ("k_b", k_b)):
        if x.shape != f.shape:
            raise ValueError(f"feedback {name} must have f's shape {tuple(f.shape)}, got {tuple(x.shape)}")
    if gamma.shape != f.shape[:2]:
        raise ValueError(f"feedback gamma must be (B, T) = {tuple(f.shape[:2])}, got {tuple(gamma.shape)}")
    for name, x in (("f", f), ("q_b", q_b), ("k_b", k_b), ("gamma", gamma)):
        if not x.is_floating_point():
            raise ValueError(f"feedback {name} must be a floating-point tensor, got {x.dtype}")


def _strict_mask(r0: int, r1: int, c0: int, c1: int, device) -> torch.Tensor:
    """(r1 - r0, c1 - c0) bool: column j is in the strict past of row t."""
    return torch.arange(c0, c1, device=device)[None, :] < torch.arange(r0, r1, device=device)[:, None]


def _logits(q, k, r0: int, r1: int, c0: int, c1: int, scale: float) -> torch.Tensor:
    """l[:, r0:r1, c0:c1], -inf outside the strict past: (B, r1 - r0, c1 - c0)."""
    l = torch.einsum("bid,bjd->bij", q[:, r0:r1], k[:, c0:c1]) * scale
    return l.masked_fill(~_strict_mask(r0, r1, c0, c1, q.device), float("-inf"))


def _alpha(q, k, lse, r0: int, r1: int, c0: int, c1: int, scale: float) -> torch.Tensor:
    """alpha[:, r0:r1, c0:c1] recomputed from the saved row log-normalisers."""
    return torch.exp(_logits(q, k, r0, r1, c0, c1, scale) - lse[:, r0:r1, None])


def _forward(f, q, k, gamma, chunk: int):
    """All (acc-dtype) tensors. Returns s, h = alpha @ s, lse: (B, T, D), (B, T, D), (B, T)."""
    B, T, D = f.shape
    scale = 1.0 / math.sqrt(D)
    s, h = torch.empty_like(f), torch.empty_like(f)
    lse = torch.empty(B, T, dtype=f.dtype, device=f.device)
    for c0 in range(0, T, chunk):
        c1 = min(c0 + chunk, T)
        l = _logits(q, k, c0, c1, 0, c1, scale)
        m = torch.logsumexp(l, dim=-1)
        m = torch.where(torch.isinf(m), torch.zeros_like(m), m)  # row 0: no past, any finite value gives alpha = 0
        lse[:, c0:c1] = m
        p = torch.exp(l - m[..., None])                          # alpha rows c0..c1, columns 0..c1
        h_off = p[:, :, :c0] @ s[:, :c0]
        g = gamma[:, c0:c1, None]
        eye = torch.eye(c1 - c0, dtype=f.dtype, device=f.device)
        s[:, c0:c1] = torch.linalg.solve_triangular(eye - g * p[:, :, c0:], f[:, c0:c1] + g * h_off,
                                                    upper=False, unitriangular=True)
        h[:, c0:c1] = h_off + p[:, :, c0:] @ s[:, c0:c1]
    return s, h, lse


def _backward(ds, q, k, gamma, lse, s, h, chunk: int):
    B, T, D = ds.shape
    scale = 1.0 / math.sqrt(D)
    # 1. Adjoint solve M^T u = ds, last chunk first:
    #    u_c = (I - N_cc)^{-T} (ds_c + sum_{t >= c1} alpha[t, c]^T gamma_t u_t),  N_cc = diag(gamma_c) alpha_cc.
    u = torch.empty_like(ds)
    v = torch.empty_like(ds)  # gamma * u, the quantity later chunks route back
    for c0 in reversed(range(0, T, chunk)):
        c1 = min(c0 + chunk, T)
        rhs = ds[:, c0:c1].clone()
        if c1 < T:  # column strip alpha[c1:, c0:c1]: every later row sees every column of this chunk
            rhs += _alpha(q, k, lse, c1, T, c0, c1, scale).transpose(1, 2) @ v[:, c1:]
        p_cc = _alpha(q, k, lse, c0, c1, c0, c1, scale)
        eye = torch.eye(c1 - c0, dtype=ds.dtype, device=ds.device)
        system_t = (eye - gamma[:, c0:c1, None] * p_cc).transpose(1, 2)
        u[:, c0:c1] = torch.linalg.solve_triangular(system_t, rhs, upper=True, unitriangular=True)
        v[:, c0:c1] = gamma[:, c0:c1, None] * u[:, c0:c1]
    # 2. dgamma[t] = u[t] . (alpha s)[t]; the softmax backward needs sum_j alpha dalpha = gamma u . h.
    dgamma = (u * h).sum(-1)
    delta = gamma * dgamma
    # 3. dl = alpha (dalpha - delta), dalpha[t, j] = v[t] . s[j]; one row strip at a time.
    dq, dk = torch.zeros_like(ds), torch.zeros_like(ds)
    for c0 in range(0, T, chunk):
        c1 = min(c0 + chunk, T)
        p = _alpha(q, k, lse, c0, c1, 0, c1, scale)
        dl = p * (v[:, c0:c1] @ s[:, :c1].transpose(1, 2) - delta[:, c0:c1, None]) * scale
        dq[:, c0:c1] = dl @ k[:, :c1]
        dk[:, :c1] += dl.transpose(1, 2) @ q[:, c0:c1]
    return u, dq, dk, dgamma


class ChunkedFeedback(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, q_b, k_b, gamma, chunk):
        acc = torch.float32
        for x in (f, q_b, k_b):
            acc = torch.promote_types(acc, x.dtype)
        q, k, g = q_b.to(acc), k_b.to(acc), gamma.to(acc)
        s, h, lse = _forward(f.to(acc), q, k, g, chunk)
        ctx.save_for_backward(q_b, k_b, gamma, lse, s, h)
        ctx.chunk, ctx.dtypes = chunk, (f.dtype, q_b.dtype, k_b.dtype, gamma.dtype)
        return s.to(f.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, ds):
        q_b, k_b, gamma, lse, s, h = ctx.saved_tensors
        acc = s.dtype
        df, dq, dk, dgamma = _backward(ds.to(acc), q_b.to(acc), k_b.to(acc), gamma.to(acc), lse, s, h, ctx.chunk)
        return (*(x.to(dt) for x, dt in zip((df, dq, dk, dgamma), ctx.dtypes)), None)


def feedback_chunked(f: torch.Tensor, q_b: torch.Tensor, k_b: torch.Tensor, gamma: torch.Tensor,
                     chunk: int = 64) -> torch.Tensor:
    """f, q_b, k_b: (B, T, D); gamma: (B, T). Returns s: (B, T, D) in f's dtype; differentiable."""
    check_inputs(f, q_b, k_b, gamma)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"feedback chunk={chunk!r} must be a positive int")
    return ChunkedFeedback.apply(f, q_b, k_b, gamma, chunk)
