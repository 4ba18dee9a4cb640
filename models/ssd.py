"""Mamba2's state-space scan (SSD) in plain PyTorch: the chunked algorithm, a per-step reference, one step.

Shapes: x (b, l, h, p), dt (b, l, h) already softplus'ed (> 0), A (h,) negative, B and C (b, l, g, n) with
head i reading group i // (h / g) (mamba_ssm's convention); state (b, h, p, n). The recurrence is

    state_t = exp(dt_t * A) * state_{t-1} + dt_t * x_t B_t^T        y_t = state_t C_t

(the D skip connection and the gate are applied by the caller). `ssd_naive` runs it token by token;
`ssd_chunked` is the state-space-duality form: inside a chunk of Q tokens the output is a masked,
decay-weighted "attention" (C_s . B_t) over the chunk, and only one state per chunk is carried across chunks,
so the work is O(l * Q) instead of a length-l sequential loop over (h, p, n) states.
Everything runs in at least float32; outputs come back in x's dtype, the final state in the compute dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(x, dt, A, B, C, initial_state=None) -> None:
    if x.dim() != 4:
        raise ValueError(f"ssd: x must be (batch, len, heads, headdim), got shape {tuple(x.shape)}")
    b, l, h, p = x.shape
    if dt.shape != (b, l, h):
        raise ValueError(f"ssd: dt must have shape {(b, l, h)} (batch, len, heads), got {tuple(dt.shape)}")
    if A.shape != (h,):
        raise ValueError(f"ssd: A must have shape {(h,)} (one value per head), got {tuple(A.shape)}")
    if B.dim() != 4 or B.shape[:2] != (b, l) or B.shape != C.shape:
        raise ValueError(f"ssd: B and C must both be (batch={b}, len={l}, groups, d_state), "
                         f"got {tuple(B.shape)} and {tuple(C.shape)}")
    g, n = B.shape[2], B.shape[3]
    if h % g:
        raise ValueError(f"ssd: heads={h} must be divisible by groups={g}")
    if initial_state is not None and initial_state.shape != (b, h, p, n):
        raise ValueError(f"ssd: initial_state must have shape {(b, h, p, n)}, "
                         f"got {tuple(initial_state.shape)}")


def _heads(t: torch.Tensor, h: int) -> torch.Tensor:
    """(..., g, n) -> (..., h, n): every head sees its group's B or C."""
    return t.repeat_interleave(h // t.shape[-2], dim=-2)


def segsum(a: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T, T) with out[i, j] = a[j+1] + ... + a[i] for j <= i and -inf above the diagonal,
    so exp(out) is the causal decay matrix (1 on the diagonal, exactly 0 above it)."""
    cs = a.cumsum(-1)
    out = cs[..., :, None] - cs[..., None, :]
    T = a.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool, device=a.device).tril()
    return out.masked_fill(~causal, float("-inf"))


def ssd_step(state, x_t, dt_t, A, B_t, C_t):
    """One token. state (b, h, p, n), x_t (b, h, p), dt_t (b, h), B_t and C_t (b, g, n).
    Returns (y_t (b, h, p), new state); computed in the dtype of `state` promoted with x_t's."""
    h = x_t.shape[1]
    acc = torch.promote_types(state.dtype, x_t.dtype)
    dt_t, x_t = dt_t.to(acc), x_t.to(acc)
    B_t, C_t = _heads(B_t.to(acc), h), _heads(C_t.to(acc), h)
    decay = torch.exp(dt_t * A.to(acc))                                      # (b, h)
    state = decay[..., None, None] * state.to(acc) + (dt_t[..., None] * x_t)[..., None] * B_t[:, :, None, :]
    return torch.einsum("bhpn,bhn->bhp", state, C_t), state


def ssd_naive(x, dt, A, B, C, chunk_size=None, initial_state=None):
    """Reference: the recurrence one token at a time (chunk_size is accepted for a like signature, unused)."""
    _check(x, dt, A, B, C, initial_state)
    b, l, h, p = x.shape
    acc = torch.promote_types(x.dtype, torch.float32)
    state = (torch.zeros(b, h, p, B.shape[-1], dtype=acc, device=x.device) if initial_state is None
             else initial_state.to(acc))
    ys = []
    for t in range(l):
        y, state = ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t])
        ys.append(y)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, h, p, dtype=acc)
    return y.to(x.dtype), state


def ssd_chunked(x, dt, A, B, C, chunk_size: int, initial_state=None):
    """The chunked SSD scan. Returns y (b, l, h, p) in x's dtype and the final state (b, h, p, n)."""
    _check(x, dt, A, B, C, initial_state)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"ssd: chunk_size must be a positive integer, got {chunk_size!r}")
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r = h // g                                    # heads per group
    Q = chunk_size
    acc = torch.promote_types(x.dtype, torch.float32)
    out_dtype = x.dtype
    x, dt, A, B, C = (t.to(acc) for t in (x, dt, A, B, C))

    # Pad to whole chunks with dt = 0: a padded step neither decays the state nor adds to it, so the final
    # state is exact and the padded outputs are simply dropped.
    pad = (-l) % Q
    if pad:
        x, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
        dt = F.pad(dt, (0, 0, 0, pad))
    c = (l + pad) // Q
    x = x.view(b, c, Q, g, r, p)
    B, C = B.view(b, c, Q, g, n), C.view(b, c, Q, g, n)
    dt = dt.view(b, c, Q, g, r)
    dA = (dt * A.view(g, r)).permute(0, 3, 4, 1, 2)            # (b, g, r, c, Q): log-decay of each step
    dA_cs = dA.cumsum(-1)                                      # log-decay from the chunk start to step s
    xdt = x * dt[..., None]                                    # the input each step writes: dt_t * x_t

    # 1. Within a chunk: y_s += sum_{t<=s} (C_s . B_t) exp(dA_{t+1} + ... + dA_s) dt_t x_t.
    decay = torch.exp(segsum(dA))                              # (b, g, r, c, s, t)
    CB = torch.einsum("bcsgn,bctgn->bgcst", C, B)              # shared by the heads of a group
    y = torch.einsum("bgcst,bgrcst,bctgrp->bcsgrp", CB, decay, xdt)

    # 2. The state each chunk adds on its own: sum_t exp(dA_{t+1} + ... + dA_Q) dt_t x_t B_t^T.
    to_end = torch.exp(dA_cs[..., -1:] - dA_cs)                # (b, g, r, c, Q)
    chunk_states = torch.einsum("bctgn,bgrct,bctgrp->bcgrpn", B, to_end, xdt)

    # 3. Carry states across chunks (a short loop over l / Q chunks; each decay factor is one exp of a
    #    chunk total, so no long cumsum differences lose precision). entering[k] = state before chunk k.
    state = (x.new_zeros(b, g, r, p, n) if initial_state is None
             else initial_state.to(acc).view(b, g, r, p, n))
    chunk_decay = torch.exp(dA_cs[..., -1])                    # (b, g, r, c)
    entering = []
    for k in range(c):
        entering.append(state)
        state = chunk_decay[..., k, None, None] * state + chunk_states[:, k]
    entering = torch.stack(entering, dim=1)                    # (b, c, g, r, p, n)

    # 4. What the entering state contributes inside the chunk: exp(dA_1 + ... + dA_s) C_s . state.
    y = y + torch.einsum("bcsgn,bcgrpn,bgrcs->bcsgrp", C, entering, torch.exp(dA_cs))
    y = y.reshape(b, c * Q, h, p)[:, :l]
    return y.to(out_dtype), state.view(b, h, p, n)
