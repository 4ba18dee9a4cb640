"""Triton feedback solve for CUDA: the same s as feedback_dense in O(B T D + B T C) memory, fp32 accumulation.

Notation as in feedback_chunked.py: chunk (tile) size C = BC rows, alpha[t, j] = exp(l[t, j] - lse[t]) for j < t,
N_c = diag(gamma_c) alpha_cc the strictly lower diagonal block of chunk c, W_c = (I - N_c)^{-1}.
NOTES.md beside this file has the algorithm, its flop and byte counts and the expected times.

forward
  _lse_part_kernel grid (row tiles, pieces, B), fully parallel: flash-style online logsumexp of a row tile's
                   logits over one piece of its past (a few strip tiles), partial (max, sum) per row.
  _prep_kernel     grid (chunks, B), fully parallel: lse from those pieces, alpha_cc and
                   W_c = (I+N)(I+N^2)(I+N^4)... (N is nilpotent: log2(C) doublings).
  _solve_kernel    one program per (chunk, batch, D tile), in chunk order: s_c = W_c (f_c + gamma_c
                   sum_{j<c} alpha_cj s_j). The alpha tiles need no s, so each program computes them while
                   earlier chunks are still being solved and waits, per tile, on a flag that the program of
                   chunk j raises once s_j is stored. Programs take tickets from an atomic counter, so a
                   program only waits on programs that hold smaller tickets and are already running: no
                   deadlock whatever the launch order or the number of resident programs.
backward
  _adjoint_kernel  the same wavefront in reverse chunk order for u = M^{-T} ds (df = u), with column
                   strips of alpha: u_c = W_c^T (ds_c + sum_{t>c} alpha_tc^T gamma_t u_t).
  dgamma, delta    u . h and gamma u . h, elementwise in PyTorch (h = alpha s is saved by the forward).
  _dl_kernel       the softmax backward dl = alpha (gamma u s^T - delta) / sqrt(D) for a strip of R rows,
                   written to an (R, T) scratch; cuBLAS then does dq_strip = dl k, dk += dl^T q. The strip
                   bounds memory at B R T (linear in T for fixed R) and the D = 768-wide contractions of the
                   outputs run once, on the tensor cores, instead of once per D tile.
two-level (block_rows=R; NOTES.md; the Sessa mixer's default, R = 1024)
  _alpha_kernel    writes one strip of alpha below the diagonal: per block of R rows, the columns before it
                   (forward) or the rows after it (adjoint); torch.bmm applies it to s or gamma u, and the two
                   wavefronts above run one launch per block over the block's chunks only (C0 / C1, CROSS).
                   strip_diag: the strip also covers the block's own tiles, which the wavefronts then read
                   instead of computing (DIAG). strip_tile: the tile of the strip kernels and of the lse
                   pass (the chunk by default).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ..bmm_fp32 import baddbmm_fp32, bmm_fp32
from . import DEFAULT_CHUNK, block_len, check_block_rows, check_chunk, check_strip_tile, triton_runs_on

STRIP_ELEMS = 1 << 25  # scratch for dl: B * R * T elements at most (64 MiB in bf16)
# Launch options of the three logit kernels over and above the _Config's warps (num_warps, num_stages; empty:
# Triton's defaults), for scripts/sweep_feedback_launches.py, which times settings before any becomes a default.
LAUNCH = {"lse": {}, "prep": {}, "strip": {}, "dl": {}}
# The lse pass in pieces of a row tile's past (_lse_part_kernel): at most LSE_PIECE strip tiles each, so that the
# longest rows are not one program's work (the old single pass walked them alone: 187 TFLOP/s where the strips
# reach 360, results/bench/nvidia-h200-logit-gemms-2026-12-03.md); at most LSE_PIECES pieces a row (longer
# pieces past that), so their partial sums stay linear in T. Pieces of 2 tiles: 0.170 ms at B = 4, T = 4096
# against 0.180 (4) and 0.194 (8), level at 16384 (0.533 / 0.535 / 0.539; lease 39, ...-logit-gemms-2026-12-03-b.md).
LSE_PIECE, LSE_PIECES = 2, 32


def _launch(kernel: str, num_warps: int) -> dict:
    return {"num_warps": num_warps, **LAUNCH[kernel]}


@triton.jit
def _gram(X, Y, rows, cols, T, D, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, DT: tl.constexpr,
          PREC: tl.constexpr):
    """X[rows] @ Y[cols]^T over the full width D, fp32 accumulator, a (BM, BN) tile; X, Y already offset to
    the batch."""
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for d0 in range(0, D, BK):
        dk = d0 + tl.arange(0, BK)
        x = tl.load(X + rows[:, None] * D + dk[None, :], mask=(rows[:, None] < T) & (dk[None, :] < D), other=0.0)
        y = tl.load(Y + cols[:, None] * D + dk[None, :], mask=(cols[:, None] < T) & (dk[None, :] < D), other=0.0)
        acc = tl.dot(x.to(DT), tl.trans(y.to(DT)), acc, input_precision=PREC)
    return acc


@triton.jit
def _wait(FLAG):
    """Spin until FLAG is set; the returned value feeds the masks of the loads it guards, so no compiler
    pass can move those loads above the wait."""
    ready = tl.atomic_add(FLAG, 0, sem="acquire")
    while ready == 0:
        ready = tl.atomic_add(FLAG, 0, sem="acquire")
    return ready


@triton.jit
def _online_lse(m_i, z_i, l, w):
    """The running (max, sum of w exp) of each row after the (rows, n) logits l (-inf where masked), each weighted
    by w (1 for logits; a partial's own sum when l are partial maxima); safe for rows that have seen nothing
    finite yet (max -inf)."""
    m_new = tl.maximum(m_i, tl.max(l, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    return m_new, z_i * tl.exp(m_i - m_safe) + tl.sum(w * tl.exp(l - m_safe[:, None]), 1)


@triton.jit
def _lse_part_kernel(Q, K, MP, ZP, T, D, NP, piece, scale,
                     BT: tl.constexpr, BK: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """One piece of the logsumexp of the rows of one BT-tile over their past: rows [i BT, (i+1) BT), the
    columns [p L, (p+1) L) (L = `piece` tiles of BT) before each row; its (max, sum of exp) per row into
    MP, ZP[b, p] (NP pieces a row). Pieces that start past the tile's own columns have nothing to do."""
    i = tl.num_programs(0) - 1 - tl.program_id(0)  # longest rows first
    p = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    n = tl.minimum(piece, i + 1 - p * piece)  # of them in this tile's past (its own tile included)
    if n > 0:
        rows = i * BT + tl.arange(0, BT)
        m_i = tl.full((BT,), float("-inf"), tl.float32)
        z_i = tl.zeros((BT,), tl.float32)
        for t in range(0, n):
            cols = (p * piece + t) * BT + tl.arange(0, BT)
            l = _gram(Q + b * T * D, K + b * T * D, rows, cols, T, D, BT, BT, BK, DT, PREC) * scale
            m_i, z_i = _online_lse(m_i, z_i, tl.where(cols[None, :] < rows[:, None], l, float("-inf")), 1.0)
        tl.store(MP + (b * NP + p) * T + rows, m_i, mask=rows < T)
        tl.store(ZP + (b * NP + p) * T + rows, z_i, mask=rows < T)


@triton.jit
def _prep_kernel(Q, K, G, MP, ZP, LSE, Wm, Am, T, D, NC, NP, piece, scale,
                 BC: tl.constexpr, BK: tl.constexpr, LOG2BC: tl.constexpr, DT: tl.constexpr,
                 PREC: tl.constexpr, WPREC: tl.constexpr, BT: tl.constexpr, PB: tl.constexpr):
    """Per chunk: lse from the pieces of _lse_part_kernel (a row's: those its BT-tile has), alpha_cc and W_c."""
    c = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    Q += b * T * D
    K += b * T * D
    rows = c * BC + tl.arange(0, BC)
    have = (rows // BT) // piece + 1  # pieces of each row's tile
    m_i = tl.full((BC,), float("-inf"), tl.float32)
    z_i = tl.zeros((BC,), tl.float32)
    for p0 in range(0, ((c * BC + BC - 1) // BT) // piece + 1, PB):
        ps = p0 + tl.arange(0, PB)
        at = (b * NP + ps[None, :]) * T + rows[:, None]
        mask = (ps[None, :] < have[:, None]) & (rows[:, None] < T)
        m_i, z_i = _online_lse(m_i, z_i, tl.load(MP + at, mask=mask, other=float("-inf")),
                               tl.load(ZP + at, mask=mask, other=0.0))
    lse = tl.where(z_i == 0.0, 0.0, m_i + tl.log(z_i))  # row 0 has no past: any finite lse gives alpha = 0
    tl.store(LSE + b * T + rows, lse, mask=rows < T)
    l_cc = _gram(Q, K, rows, rows, T, D, BC, BC, BK, DT, PREC) * scale
    a_cc = tl.where((rows[None, :] < rows[:, None]) & (rows[:, None] < T), tl.exp(l_cc - lse[:, None]), 0.0)
    g = tl.load(G + b * T + rows, mask=rows < T, other=0.0)
    n = g[:, None] * a_cc
    # W = sum_{i < BC} N^i, built as (I + N)(I + N^2)(I + N^4)...: after k steps W = sum_{i < 2^(k+1)} N^i.
    w = (rows[:, None] == rows[None, :]).to(tl.float32) + n
    p = n
    for _ in tl.static_range(LOG2BC - 1):
        p = tl.dot(p, p, input_precision=WPREC)
        w = w + tl.dot(w, p, input_precision=WPREC)
    i = tl.arange(0, BC)
    offs = ((b * NC + c) * BC + i[:, None]) * BC + i[None, :]
    tl.store(Wm + offs, w)
    tl.store(Am + offs, a_cc)


@triton.jit
def _solve_kernel(Q, K, F, G, LSE, Wm, Am, S, H, SLP, X, R0, XR, FLAGS, COUNTER, T, D, NC, ND, NB, C0, scale,
                  AS, ASB, LDA,
                  BC: tl.constexpr, BD: tl.constexpr, BK: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr,
                  PV_LOWP: tl.constexpr, PV_PREC: tl.constexpr, WPREC: tl.constexpr, CROSS: tl.constexpr,
                  STORE_LP: tl.constexpr, DIAG: tl.constexpr, STORE_H: tl.constexpr):
    # One launch solves the chunks C0, C0 + 1, ... (the grid sets how many): all NC chunks in the single-level
    # solve, one block of chunks in the two-level one. CROSS: X (B, XR, D, rows R0 .. R0 + XR - 1) holds, for
    # these rows, alpha s summed over the columns before chunk C0 (the strip product), to add to the
    # right-hand side and to h.
    # STORE_LP: s is also stored into SLP in its dtype (q's), for the later blocks' strip products (one
    # store here instead of a copy kernel per block).
    # DIAG: the block's own alpha tiles are read from its strip AS (batch stride ASB, row stride LDA; row 0 =
    # row R0, column 0 = column 0), written once by _alpha_kernel, instead of computed here in every D tile.
    tile = tl.atomic_add(COUNTER, 1)  # tickets in chunk order: see the module docstring
    c = C0 + tile // (NB * ND)
    b = (tile // ND) % NB
    d = tile % ND
    b64 = b.to(tl.int64)
    base = b64 * T * D
    rows = c * BC + tl.arange(0, BC)
    dcols = d * BD + tl.arange(0, BD)
    lse = tl.load(LSE + b64 * T + rows, mask=rows < T, other=0.0)
    acc = tl.zeros((BC, BD), dtype=tl.float32)
    for jt in range(C0, c):
        cols = jt * BC + tl.arange(0, BC)
        if DIAG:
            p = tl.load(AS + b64 * ASB + (rows - R0)[:, None] * LDA + cols[None, :], mask=rows[:, None] < T,
                        other=0.0)
        else:
            p = tl.exp(_gram(Q + base, K + base, rows, cols, T, D, BC, BC, BK, DT, PREC) * scale - lse[:, None])
        ready = _wait(FLAGS + (b * NC + jt) * ND + d)
        s_j = tl.load(S + base + cols[:, None] * D + dcols[None, :],
                      mask=(dcols[None, :] < D) & (ready != 0), other=0.0, cache_modifier=".cg")
        if PV_LOWP:
            acc = tl.dot(p.to(DT), s_j.to(DT), acc)
        else:
            acc = tl.dot(p, s_j, acc, input_precision=PV_PREC)
    io = base + rows[:, None] * D + dcols[None, :]
    io_mask = (rows[:, None] < T) & (dcols[None, :] < D)
    if CROSS:
        acc += tl.load(X + b64 * XR * D + (rows - R0)[:, None] * D + dcols[None, :], mask=io_mask, other=0.0)
    g = tl.load(G + b64 * T + rows, mask=rows < T, other=0.0)
    r = tl.load(F + io, mask=io_mask, other=0.0).to(tl.float32) + g[:, None] * acc
    i = tl.arange(0, BC)
    offs = ((b64 * NC + c) * BC + i[:, None]) * BC + i[None, :]
    s_c = tl.dot(tl.load(Wm + offs), r, input_precision=WPREC)
    tl.store(S + io, s_c, mask=io_mask)
    if STORE_LP:
        tl.store(SLP + io, s_c.to(SLP.dtype.element_ty), mask=io_mask)
    tl.debug_barrier()  # every thread's part of s_c is stored before the flag goes up
    tl.atomic_xchg(FLAGS + (b * NC + c) * ND + d, 1, sem="release")
    if STORE_H:  # h = alpha s for the backward (dgamma = u . h), off the critical path; not without a backward
        h = acc + tl.dot(tl.load(Am + offs), s_c, input_precision=WPREC)
        tl.store(H + io, h, mask=io_mask)


@triton.jit
def _adjoint_kernel(Q, K, DS, G, LSE, Wm, U, VLP, Y, R0, YR, FLAGS, COUNTER, T, D, NC, ND, NB, C1, scale,
                    AS, ASB, LDA,
                    BC: tl.constexpr, BD: tl.constexpr, BK: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr,
                    PV_LOWP: tl.constexpr, PV_PREC: tl.constexpr, WPREC: tl.constexpr, CROSS: tl.constexpr,
                    STORE_LP: tl.constexpr, DIAG: tl.constexpr):
    # One launch solves the chunks C1 - 1, C1 - 2, ... (the grid sets how many), summing over later chunks
    # before C1 only. CROSS: Y (B, YR, D, rows R0 .. R0 + YR - 1) holds, for these rows, alpha^T (gamma u) over
    # the rows from chunk C1 on (the strip product).
    # STORE_LP: gamma u is also stored into VLP in its dtype (q's), for the earlier blocks' strip products.
    # DIAG: the block's own alpha tiles come from its strip AS (row 0 = row R0, column 0 = column R0).
    tile = tl.atomic_add(COUNTER, 1)  # tickets in reverse chunk order
    c = C1 - 1 - tile // (NB * ND)
    b = (tile // ND) % NB
    d = tile % ND
    b64 = b.to(tl.int64)
    base = b64 * T * D
    cols = c * BC + tl.arange(0, BC)  # this program solves u for the rows of chunk c = columns of alpha
    dcols = d * BD + tl.arange(0, BD)
    acc = tl.zeros((BC, BD), dtype=tl.float32)
    for i in range(0, C1 - 1 - c):
        tt = C1 - 1 - i  # latest chunk first: it was solved first, so the waits overlap with work
        rows = tt * BC + tl.arange(0, BC)
        lse = tl.load(LSE + b64 * T + rows, mask=rows < T, other=0.0)
        g = tl.load(G + b64 * T + rows, mask=rows < T, other=0.0)
        if DIAG:
            p = tl.load(AS + b64 * ASB + (rows - R0)[:, None] * LDA + (cols - R0)[None, :],
                        mask=rows[:, None] < T, other=0.0)
        else:
            p = tl.exp(_gram(Q + base, K + base, rows, cols, T, D, BC, BC, BK, DT, PREC) * scale - lse[:, None])
        p = tl.where(rows[:, None] < T, p, 0.0)
        ready = _wait(FLAGS + (b * NC + tt) * ND + d)
        u_t = tl.load(U + base + rows[:, None] * D + dcols[None, :],
                      mask=(rows[:, None] < T) & (dcols[None, :] < D) & (ready != 0), other=0.0,
                      cache_modifier=".cg")
        v_t = g[:, None] * u_t
        if PV_LOWP:
            acc = tl.dot(tl.trans(p.to(DT)), v_t.to(DT), acc)
        else:
            acc = tl.dot(tl.trans(p), v_t, acc, input_precision=PV_PREC)
    io = base + cols[:, None] * D + dcols[None, :]
    io_mask = (cols[:, None] < T) & (dcols[None, :] < D)
    rhs = tl.load(DS + io, mask=io_mask, other=0.0).to(tl.float32) + acc
    if CROSS:
        rhs += tl.load(Y + b64 * YR * D + (cols - R0)[:, None] * D + dcols[None, :], mask=io_mask, other=0.0)
    i = tl.arange(0, BC)
    offs = ((b64 * NC + c) * BC + i[:, None]) * BC + i[None, :]
    u_c = tl.dot(tl.trans(tl.load(Wm + offs)), rhs, input_precision=WPREC)
    tl.store(U + io, u_c, mask=io_mask)
    if STORE_LP:
        g_c = tl.load(G + b64 * T + cols, mask=cols < T, other=0.0)
        tl.store(VLP + io, (g_c[:, None] * u_c).to(VLP.dtype.element_ty), mask=io_mask)
    tl.debug_barrier()
    tl.atomic_xchg(FLAGS + (b * NC + c) * ND + d, 1, sem="release")


@triton.jit
def _dl_kernel(Q, K, U, S, G, LSE, DELTA, DL, T, D, r0, LDL, RS, scale,
               BC: tl.constexpr, BK: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr, SCALED: tl.constexpr):
    """One (BC, BC) tile of a strip of dl per program; BC here is the strip tile (_Config.TS), which need not
    be the chunk: the strip kernels have no per-chunk structure."""
    i = tl.program_id(0)
    jt = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    base = b * T * D
    rows = r0 + i * BC + tl.arange(0, BC)
    cols = jt * BC + tl.arange(0, BC)
    out = DL + b * RS * LDL + (i * BC + tl.arange(0, BC))[:, None] * LDL + cols[None, :]
    if jt * BC >= r0 + (i + 1) * BC - 1:  # every column at or after every row of the tile: alpha = 0 there
        tl.store(out, tl.zeros((BC, BC), dtype=DL.dtype.element_ty))
    else:
        lse = tl.load(LSE + b * T + rows, mask=rows < T, other=0.0)
        g = tl.load(G + b * T + rows, mask=rows < T, other=0.0)
        delta = tl.load(DELTA + b * T + rows, mask=rows < T, other=0.0)
        l = _gram(Q + base, K + base, rows, cols, T, D, BC, BC, BK, DT, PREC) * scale
        past = (cols[None, :] < rows[:, None]) & (rows[:, None] < T)
        p = tl.where(past, tl.exp(l - lse[:, None]), 0.0)
        # dl = alpha (g (u s^T) - delta) / sqrt(D); SCALED: U holds gamma u already, in q's dtype (a dot operand as
        # stored, which a float32 u converted in registers before each dot is not)
        us = _gram(U + base, S + base, rows, cols, T, D, BC, BC, BK, DT, PREC)
        dalpha = us if SCALED else g[:, None] * us
        tl.store(out, (p * (dalpha - delta[:, None]) * scale).to(DL.dtype.element_ty))


@triton.jit
def _alpha_kernel(Q, K, LSE, G, OUT, T, D, r0, c0, LDO, RS, scale,
                  BC: tl.constexpr, BK: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr, GAINS: tl.constexpr):
    """OUT[b, i, j] = alpha[r0 + i, c0 + j] for one (BC, BC) tile per program (BC: the strip tile,
    _Config.TS): the strips of the two-level solve, below the diagonal or (strip_diag) also over a block's
    own rows and columns; rows past T get 0, columns past the strip's width (LDO) are not written. GAINS:
    gamma[r0 + i] alpha[r0 + i, c0 + j] (rounded once), the rows of diag(gamma) alpha."""
    i = tl.program_id(0)
    jt = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    base = b * T * D
    rows = r0 + i * BC + tl.arange(0, BC)
    cols = c0 + jt * BC + tl.arange(0, BC)
    j = jt * BC + tl.arange(0, BC)
    if c0 + jt * BC >= r0 + (i + 1) * BC - 1:  # every column at or after every row (a block's own strip)
        p = tl.zeros((BC, BC), dtype=tl.float32)
    else:
        lse = tl.load(LSE + b * T + rows, mask=rows < T, other=0.0)
        l = _gram(Q + base, K + base, rows, cols, T, D, BC, BC, BK, DT, PREC) * scale  # fp32 logits, then exp
        p = tl.where((cols[None, :] < rows[:, None]) & (rows[:, None] < T), tl.exp(l - lse[:, None]), 0.0)
        if GAINS:
            p = p * tl.load(G + b * T + rows, mask=rows < T, other=0.0)[:, None]
    out = OUT + b * RS * LDO + (i * BC + tl.arange(0, BC))[:, None] * LDO + j[None, :]
    tl.store(out, p.to(OUT.dtype.element_ty), mask=j[None, :] < LDO)


@triton.jit
def _pair_product_kernel(A, B, C, G, S, pairs, sab, sap, sar, sac, sbb, sbp, sbr, sbc, scb, scp, scr, scc, sgb, sgp,
                         BT: tl.constexpr, SCALE: tl.constexpr, LOWP: tl.constexpr, PREC: tl.constexpr):
    """C[b, p] = A[b, p] @ X for the S x S blocks of pair p of batch element b, at any strides (the diagonal
    blocks of a block's W and alpha, read and written where they lie), one BT x BT tile of C per program:
    X = diag(G[b, p]) B[b, p] (SCALE; rows scaled in float32 and rounded to A's dtype) or B[b, p]; products in
    A's dtype with float32 sums (PREC for float32 operands); C rounded to its dtype once."""
    bp = tl.program_id(0)
    b = (bp // pairs).to(tl.int64)
    p = (bp % pairs).to(tl.int64)
    rows = tl.program_id(1) * BT + tl.arange(0, BT)
    cols = tl.program_id(2) * BT + tl.arange(0, BT)
    A += b * sab + p * sap
    B += b * sbb + p * sbp
    acc = tl.zeros((BT, BT), dtype=tl.float32)
    for k0 in range(0, S, BT):
        ks = k0 + tl.arange(0, BT)
        a = tl.load(A + rows[:, None] * sar + ks[None, :] * sac)
        x = tl.load(B + ks[:, None] * sbr + cols[None, :] * sbc)
        if SCALE:
            g = tl.load(G + b * sgb + p * sgp + ks)
            x = (g[:, None] * x.to(tl.float32)).to(A.dtype.element_ty)
        if LOWP:
            acc = tl.dot(a, x, acc)
        else:
            acc = tl.dot(a, x, acc, input_precision=PREC)
    tl.store(C + b * scb + p * scp + rows[:, None] * scr + cols[None, :] * scc, acc.to(C.dtype.element_ty))


def _pair_products(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, g: torch.Tensor | None, prec: str) -> None:
    """out[:, p] = a[:, p] @ (diag(g[:, p]) b[:, p] if g is given else b[:, p]) for (B, pairs, S, S) views at any
    strides (g: (B, pairs, S), unit stride along S), by _pair_product_kernel: no copies of the views."""
    B, pairs, S, _ = a.shape
    BT = min(64, S)
    sg = g.stride()[:2] if g is not None else (0, 0)
    _pair_product_kernel[(B * pairs, S // BT, S // BT)](
        a, b, out, g if g is not None else a, S, pairs, *a.stride(), *b.stride(), *out.stride(), *sg,
        BT=BT, SCALE=g is not None, LOWP=a.dtype != torch.float32, PREC=prec, num_warps=4)


_TL = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


class _Config:
    """Tile sizes and dot precisions for one call (all compile-time constants of the kernels)."""

    def __init__(self, dtype: torch.dtype, D: int, chunk: int, block_d: int | None, num_warps: int | None,
                 strip_tile: int | None = None, strip_diag: bool = False, dense_blocks: bool = False):
        if dtype not in _TL:
            raise ValueError(f"feedback impl='triton' needs q_b/k_b in float16, bfloat16 or float32, got {dtype}")
        check_chunk(chunk)
        self.BC, self.DT = chunk, _TL[dtype]
        self.LOG2BC = chunk.bit_length() - 1
        self.BK = 64 if D >= 64 else max(16, triton.next_power_of_2(D))
        self.BD = block_d or max(16, min(128, triton.next_power_of_2(D)))
        if self.BD < 16 or self.BD & (self.BD - 1):
            raise ValueError(f"feedback block_d={block_d!r} must be a power of two >= 16")
        self.ND = triton.cdiv(D, self.BD)
        self.num_warps = num_warps or (8 if self.BD >= 256 else 4)
        # The strips (_alpha_kernel, _dl_kernel): square tiles of TS, the chunk unless asked otherwise; 8 warps
        # (two warpgroups) from 128 up. _lse_part_kernel's tiles are (TS, TS) too.
        check_strip_tile(strip_tile)
        self.TS = strip_tile or chunk
        self.strip_warps = 8 if self.TS >= 128 else 4
        # strip_diag: the two-level wavefronts read each block's own alpha tiles from its strip (written once,
        # in TS-tiles) instead of computing them in every D tile's program
        self.strip_diag = bool(strip_diag)
        # dense_blocks: each block of the two-level solve inverted whole (_block_inverse) instead of walked
        self.dense = bool(dense_blocks)
        low = dtype != torch.float32
        tf32 = torch.backends.cuda.matmul.allow_tf32
        fp32_prec = "tf32" if tf32 else "ieee"
        # The logits are exponentiated, so a TF32 rounding of q.k (1e-3 of |l|) would become a relative
        # error of alpha itself: with float32 operands they keep float32 accuracy (3xTF32 when TF32 is on).
        self.PREC = "tf32" if low else ("tf32x3" if tf32 else "ieee")   # q.k and u.s (bf16/fp16: exact products)
        self.PV_LOWP, self.PV_PREC = low, fp32_prec                      # alpha @ s and alpha^T (gamma u) tiles
        self.WPREC = "tf32x3" if low else fp32_prec                      # the small fp32 W products


def _prep(q, k, g, cfg: _Config):
    """lse (B, T), and each chunk's W_c and alpha_cc (B, NC, C, C), float32: the logsumexp in pieces of at most
    LSE_PIECE strip tiles of a row tile's past (_lse_part_kernel; more where T has more than LSE_PIECES
    pieces: their partials are B x pieces x T), combined per chunk by _prep_kernel."""
    B, T, D = q.shape
    NC = triton.cdiv(T, cfg.BC)
    NT = triton.cdiv(T, cfg.TS)
    NP = triton.cdiv(NT, max(LSE_PIECE, triton.cdiv(NT, LSE_PIECES)))
    piece = triton.cdiv(NT, NP)  # tiles a piece: NP of them cover the longest row's NT
    lse = torch.empty(B, T, dtype=torch.float32, device=q.device)
    parts = torch.empty(2, B, NP, T, dtype=torch.float32, device=q.device)
    W = torch.empty(B, NC, cfg.BC, cfg.BC, dtype=torch.float32, device=q.device)
    A = torch.empty_like(W)
    scale = 1.0 / math.sqrt(D)
    _lse_part_kernel[(NT, NP, B)](q, k, parts[0], parts[1], T, D, NP, piece, scale, BT=cfg.TS, BK=cfg.BK,
                                  DT=cfg.DT, PREC=cfg.PREC, **_launch("lse", cfg.strip_warps))
    _prep_kernel[(NC, B)](q, k, g, parts[0], parts[1], lse, W, A, T, D, NC, NP, piece, scale, BC=cfg.BC, BK=cfg.BK,
                          LOG2BC=cfg.LOG2BC, DT=cfg.DT, PREC=cfg.PREC, WPREC=cfg.WPREC, BT=cfg.TS, PB=16,
                          **_launch("prep", cfg.num_warps))
    return lse, W, A


def _wavefront_state(B, T, cfg: _Config, launches: int, device):
    """The flags of every (batch element, chunk, D tile) and a fresh ticket counter for each launch."""
    NC = triton.cdiv(T, cfg.BC)
    flags = torch.zeros(B * NC * cfg.ND, dtype=torch.int32, device=device)
    counters = torch.zeros(launches, dtype=torch.int32, device=device)
    return flags, counters, NC


def _blocks(T, cfg: _Config, block_rows: int | None):
    """(first chunk, chunks) of each block of the two-level solve; one block of all chunks without it."""
    NC = triton.cdiv(T, cfg.BC)
    m = NC if block_rows is None else max(1, block_rows // cfg.BC)
    return [(c0, min(m, NC - c0)) for c0 in range(0, NC, m)]


def _block_len(T, cfg: _Config, block_rows: int | None) -> int:
    """Rows of _blocks' longest block (its first), a multiple of the chunk."""
    return block_len(T, cfg.BC, block_rows)


def _strip(q, k, lse, r0, r1, c0, c1, scratch, cfg: _Config, gains=None):
    """alpha[:, r0:r1, c0:c1] (every entry strictly below the diagonal) in the scratch, via _alpha_kernel in
    tiles of TS; c0, c1 and r0 are multiples of BC. Returns a (B, r1 - r0, c1 - c0) view, in the dtype of q.
    gains: (B, T) float32 gamma, each row times its gain (diag(gamma) alpha)."""
    B, T, D = q.shape
    TS = cfg.TS
    nr, nc = triton.cdiv(r1 - r0, TS), triton.cdiv(c1 - c0, TS)
    out = scratch[:B * nr * TS * (c1 - c0)].view(B, nr * TS, c1 - c0)
    _alpha_kernel[(nr, nc, B)](q, k, lse, lse if gains is None else gains, out, T, D, r0, c0, c1 - c0, nr * TS,
                               1.0 / math.sqrt(D), BC=TS, BK=cfg.BK, DT=cfg.DT, PREC=cfg.PREC,
                               GAINS=gains is not None, **_launch("strip", cfg.strip_warps))
    return out[:, :r1 - r0]


def _strip_buffer(B: int, rows: int, cols: int, cfg: _Config, q: torch.Tensor) -> torch.Tensor:
    """Scratch for one _strip of `rows` x `cols` (rows rounded up to the strip tile, as _strip writes them), in
    q's dtype, for a strip kept beyond the next one (the shared _scratch is rewritten by every strip)."""
    return torch.empty(B * _ceil_to(rows, cfg.TS) * cols, dtype=q.dtype, device=q.device)


def _ceil_to(n: int, m: int) -> int:
    return triton.cdiv(n, m) * m


def _scratch(B, T, cfg: _Config, block_rows, dtype, device):
    """One strip buffer for every block: forward R rows x bR columns, adjoint T - (b+1)R rows x R columns
    (with strip_diag (b+1)R columns and T - bR rows), rows rounded up to the strip tile, columns to the chunk:
    B x R x T elements so rounded at most, linear in T for a fixed R."""
    R = _block_len(T, cfg, block_rows)
    unit = max(cfg.TS, cfg.BC)
    return torch.empty(B * _ceil_to(R, unit) * _ceil_to(T, unit), dtype=dtype, device=device)


def _diag_blocks(X: torch.Tensor, size: int) -> torch.Tensor:
    """(B, P, P) -> (B, P // size, size, size): a view of X's diagonal blocks of `size` rows, at any strides (a
    block's own alpha is a column slice of its strip)."""
    B, P, _ = X.shape
    sb, sr, sc = X.stride()
    return X.as_strided((B, P // size, size, size), (sb, size * (sr + sc), sr, sc), X.storage_offset())


def _block_inverse(g, a_bb, W_chunks, C: int, prec: str | None = None):
    """W_R = (I - diag(g) a_bb)^{-1} ((B, n, n), in a_bb's dtype) of one block of n rows: g (B, n) its gains, a_bb
    (B, n, n) its own alpha (strictly lower, q's dtype, from the strip), W_chunks (B, ceil(n / C), C, C) its
    chunks' inverses from _prep (float32). Block doubling, [[W11, 0], [W22 N21 W11, W22]] for m = C, 2C, ... rows,
    with the products' operands in a_bb's dtype and float32 sums (bmm_fp32); padded to C 2^k rows with the
    identity. W is kept in a_bb's dtype: every product reads it rounded to that dtype, so a float32 copy would
    hold the same values at twice the bytes (and a cast before every read). N = diag(g) a_bb is never formed
    whole: each level scales the blocks N21 it reads straight from a_bb into the product's operand buffer (in
    float32, rounded to a_bb's dtype once, as a whole N was): about half of N's entries over all levels.
    prec (where Triton runs, the mixer's solve): each level's two products by _pair_product_kernel, reading and
    writing the blocks where they lie (float32 operands at that precision); else through cuBLAS/PyTorch with the
    blocks copied out and back, the reference the kernel is tested against (and the CPU scripts' path)."""
    B, n, _ = a_bb.shape
    m = W_chunks.shape[1]
    P = C * triton.next_power_of_2(m)
    Wf = torch.zeros(B, P, P, dtype=a_bb.dtype, device=a_bb.device)
    chunks = _diag_blocks(Wf, C)
    chunks[:, :m] = W_chunks
    chunks[:, m:] = torch.eye(C, device=a_bb.device)
    if n < P:  # a block cut short by T, or of chunks that are not a power of 2: zero rows, columns and gains
        a_bb, g = F.pad(a_bb, (0, P - n, 0, P - n)), F.pad(g, (0, P - n))
    buf = torch.empty(B * P * P // 4, dtype=a_bb.dtype, device=a_bb.device)  # the largest level's operand
    size = C
    while size < P:
        pairs = P // (2 * size)
        Wd, Ad = _diag_blocks(Wf, 2 * size), _diag_blocks(a_bb, 2 * size)
        g_lo = g.view(B, pairs, 2 * size)[..., size:]  # the gains of each pair's second half
        tmp = buf[:B * pairs * size * size].view(B, pairs, size, size)
        if prec is not None:  # left = W22 diag(g2) A21, then W21 = left W11, each in one launch
            _pair_products(Wd[..., size:, size:], Ad[..., size:, :size], tmp, g_lo, prec)
            _pair_products(tmp, Wd[..., :size, :size], Wd[..., size:, :size], None, prec)
        else:
            flat = lambda x: x.reshape(-1, size, size)  # noqa: E731  (B * pairs, size, size), a copy
            torch.mul(Ad[..., size:, :size], g_lo[..., None], out=tmp)  # N21, rounded to a_bb's dtype once
            left = bmm_fp32(flat(Wd[..., size:, size:]), tmp.view(-1, size, size))
            Wd[..., size:, :size] = bmm_fp32(left.to(a_bb.dtype), flat(Wd[..., :size, :size])).view(B, -1, size, size)
        size *= 2
    return Wf[:, :n, :n]


def _pair_prec(x: torch.Tensor, cfg: _Config) -> str | None:
    """The precision of _block_inverse's products by _pair_product_kernel where Triton runs on x, else None
    (its PyTorch products)."""
    return cfg.PV_PREC if triton_runs_on(x, True) else None


def _diag_inverses_each(q, k, g, lse, W, cfg: _Config, block_rows: int):
    """(AB, W_R) of the blocks of _blocks, one block at a time, each a (B, T, R) tensor in q's dtype holding block
    b's (B, n, n) in its rows, its first n columns (_block_w): AB each block's own alpha (a strip of its rows and
    columns), W_R = (I - diag(g) a_bb)^{-1} (_block_inverse). Entries past a block's own n columns are never read
    and left unwritten. One block (T <= R: Table 1's lengths) is its own strip, already (B, T, R): no copy."""
    B, T, D = q.shape
    blocks = _blocks(T, cfg, block_rows)
    WR = q.new_empty(B, T, _block_len(T, cfg, block_rows))
    AB = None if len(blocks) == 1 else torch.empty_like(WR)
    for c0, m in blocks:
        r0, r1 = c0 * cfg.BC, min((c0 + m) * cfg.BC, T)
        strip = _strip(q, k, lse, r0, r1, r0, (c0 + m) * cfg.BC, _strip_buffer(B, r1 - r0, m * cfg.BC, cfg, q), cfg)
        if AB is None:
            AB = strip
        else:
            _block_w(AB, r0, r1).copy_(strip[:, :, :r1 - r0])
        a_bb = _block_w(AB, r0, r1)
        WR[:, r0:r1, :r1 - r0] = _block_inverse(g[:, r0:r1], a_bb, W[:, c0:c0 + m], cfg.BC, _pair_prec(q, cfg))
    return AB, WR


def _diag_inverses(q, k, g, lse, W, cfg: _Config, block_rows: int):
    """_diag_inverses_each's (AB, W_R), computed before the blocks' sequential loop (neither a_bb nor W_R
    depends on s or u). When T is a whole number of blocks, all at once: (B, T, D) seen as B x blocks sequences
    of R rows (each row's lse still that of its whole past), one strip launch for every block's own alpha and one
    doubling for all their W_R, so the doubling's launches do not grow with T / R and each fills more of the GPU;
    W_R is then the doubling's own buffer (no copy where R / chunk is a power of 2). The same numbers bit for
    bit. Memory B T R for each of the two, linear in T as the strips'."""
    B, T, D = q.shape
    R = _block_len(T, cfg, block_rows)
    nb = T // R
    if nb < 2 or T % R:
        return _diag_inverses_each(q, k, g, lse, W, cfg, block_rows)
    C = cfg.BC
    scratch = _strip_buffer(B * nb, R, R, cfg, q)
    a = _strip(q.view(B * nb, R, D), k.view(B * nb, R, D), lse.view(B * nb, R), 0, R, 0, R, scratch, cfg)
    w = _block_inverse(g.view(B * nb, R), a, W.view(B * nb, R // C, C, C), C, _pair_prec(q, cfg))
    return a.reshape(B, T, R), w.reshape(B, T, R)


def _block_w(X: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
    """Block [r0, r1)'s (B, n, n) of one of _diag_inverses' (B, T, R) tensors (its own alpha or W_R), a view."""
    return X[:, r0:r1, :r1 - r0]


def _as_rhs(rows: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """A block's right-hand side that is only these rows (the first block's f, the last block's ds): read in place
    where they have buf's dtype (q's), else rounded into buf."""
    return rows if rows.dtype == buf.dtype else buf.copy_(rows)


def _solve_dense(f, q, k, g, lse, W, cfg: _Config, block_rows: int, need_h: bool = True):
    """_solve with each block inverted whole: s_b = W_R (f_b + g_b X_b), h_b = X_b + alpha_bb s_b, where X_b =
    alpha[bR:(b+1)R, :bR] s[:bR] as in the two-level solve, and alpha_bb and W_R of every block from _diag_inverses,
    before the blocks' loop. Products in q's dtype with float32 sums; no wavefront. Returns s (in q's dtype where
    f has it: the float32 s would only be rounded to it by the caller), h in float32 and the blocks' W_R (B, T, R)
    for the backward (need_h False: h and W_R empty). Lease 28 timed this path's
    PyTorch glue between the products at ~1 ms of a T = 4096 step (kernels/NOTES.md, "Dense blocks"), so each block
    writes its tensors once: f_b + g_b X_b straight into q's dtype, h_b through cuBLAS's epilogue, the products'
    float32 results straight into their rows of s, h (and u in the adjoint)."""
    B, T, D = f.shape
    s_lp = torch.empty(B, T, D, dtype=q.dtype, device=f.device)  # what the strip products read
    s = s_lp if f.dtype == q.dtype else torch.empty(B, T, D, dtype=torch.float32, device=f.device)
    h = torch.empty((B, T, D) if need_h else (0,), dtype=torch.float32, device=f.device)
    rhs = torch.empty(B, _block_len(T, cfg, block_rows), D, dtype=q.dtype, device=f.device)
    scratch = _scratch(B, T, cfg, block_rows, q.dtype, f.device)
    AB, WR = _diag_inverses(q, k, g, lse, W, cfg, block_rows)
    # Without h (no backward) X_b = alpha s is not kept, so the gains go into the strip and the right-hand side is
    # one product whose epilogue adds f_b: no float32 X_b written and read again, no separate pass for f + g X
    # (0.06 ms of the T = 4096 block's 1.42 ms forward on an H200, lease 39); g alpha is rounded to q's dtype
    # once where alpha was, so s differs from the path with h in its last bits
    fold = not need_h and f.dtype == q.dtype
    for c0, m in _blocks(T, cfg, block_rows):
        r0, r1 = c0 * cfg.BC, min((c0 + m) * cfg.BC, T)
        a_bb, w, rhs_b = _block_w(AB, r0, r1), _block_w(WR, r0, r1), rhs[:, :r1 - r0]
        if r0 and fold:  # f_b + (diag(g) alpha) s: cuBLAS adds f_b in its float32 epilogue, rounded once
            torch.baddbmm(f[:, r0:r1], _strip(q, k, lse, r0, r1, 0, r0, scratch, cfg, gains=g), s_lp[:, :r0],
                          out=rhs_b)
        elif r0:
            x = bmm_fp32(_strip(q, k, lse, r0, r1, 0, r0, scratch, cfg), s_lp[:, :r0])  # the columns before the block
            torch.addcmul(f[:, r0:r1], g[:, r0:r1, None], x, out=rhs_b)  # in float32, rounded once
        else:  # block 0: f's own rows
            rhs_b = _as_rhs(f[:, r0:r1], rhs_b)
        if s is s_lp:  # cuBLAS rounds its float32 sums into s's rows itself: no float32 result to copy in
            torch.bmm(w, rhs_b, out=s_lp[:, r0:r1])
        else:
            s_lp[:, r0:r1] = bmm_fp32(w, rhs_b, out=s[:, r0:r1])
        if need_h and r0:
            baddbmm_fp32(x, a_bb, s_lp[:, r0:r1], out=h[:, r0:r1])
        elif need_h:
            bmm_fp32(a_bb, s_lp[:, r0:r1], out=h[:, r0:r1])
    return s, h, WR if need_h else WR.new_empty(0)


def _adjoint_dense(ds, q, k, g, lse, W, WR, cfg: _Config, block_rows: int):
    """_adjoint with each block inverted whole: blocks in reverse order, u_b = W_R^T (ds_b + Y_b), Y_b =
    alpha[(b+1)R:, bR:(b+1)R]^T (gamma u)[(b+1)R:]; W_R the forward's (_solve_dense), recomputed where WR is
    empty. As in _solve_dense, each block's right-hand side and gamma u are written once, in q's dtype.
    Returns u and gamma u in q's dtype (every row: what _qk_grads's dl reads)."""
    B, T, D = ds.shape
    u = torch.empty(B, T, D, dtype=torch.float32, device=ds.device)
    v_lp = torch.empty(B, T, D, dtype=q.dtype, device=ds.device)  # gamma u, as the strip products read it
    rhs = torch.empty(B, _block_len(T, cfg, block_rows), D, dtype=q.dtype, device=ds.device)
    scratch = _scratch(B, T, cfg, block_rows, q.dtype, ds.device)
    if not WR.numel():
        WR = _diag_inverses(q, k, g, lse, W, cfg, block_rows)[1]
    for c0, m in _blocks(T, cfg, block_rows)[::-1]:
        r0, r1 = c0 * cfg.BC, min((c0 + m) * cfg.BC, T)
        w, rhs_b = _block_w(WR, r0, r1), rhs[:, :r1 - r0]
        if r1 < T:  # the rows after the block, its columns
            strip = _strip(q, k, lse, r1, T, r0, (c0 + m) * cfg.BC, scratch, cfg)[:, :, :r1 - r0]
            if ds.dtype == q.dtype:  # ds_b added in cuBLAS's float32 epilogue, rounded once: no float32 Y_b
                torch.baddbmm(ds[:, r0:r1], strip.transpose(1, 2), v_lp[:, r1:], out=rhs_b)
            else:
                torch.add(ds[:, r0:r1], bmm_fp32(strip.transpose(1, 2), v_lp[:, r1:]), out=rhs_b)
        else:  # the last block: ds's own rows
            rhs_b = _as_rhs(ds[:, r0:r1], rhs_b)
        ub = bmm_fp32(w.transpose(1, 2), rhs_b, out=u[:, r0:r1])
        torch.mul(ub, g[:, r0:r1, None], out=v_lp[:, r0:r1])
    return u, v_lp


def _solve(f, q, k, g, lse, W, A, cfg: _Config, block_rows: int | None = None, need_h: bool = True):
    """s, h = alpha s (need_h False: an empty h, for a forward without a backward) and what the dense blocks'
    backward reads (_solve_dense's W_R; the wavefronts: empty). block_rows None: one wavefront
    over all chunks. block_rows R: blocks of R rows in order; for block b, alpha[bR:(b+1)R, :bR] is written once and
    its product X with s[:bR] (cuBLAS) is read by a wavefront over the block's chunks, which adds the within-block
    part (CROSS) and writes s and h. With strip_diag the strip runs through the block's own columns (block 0 gets
    one too) and the wavefront reads its within-block alpha tiles from it (DIAG)."""
    if cfg.dense:
        return _solve_dense(f, q, k, g, lse, W, cfg, block_rows, need_h)
    B, T, D = f.shape
    s = torch.empty(B, T, D, dtype=torch.float32, device=f.device)
    h = torch.empty((B, T, D) if need_h else (0,), dtype=torch.float32, device=f.device)
    blocks = _blocks(T, cfg, block_rows)
    flags, counters, NC = _wavefront_state(B, T, cfg, len(blocks), f.device)
    s_lp = s  # the strip products read s in q's dtype (bf16 s tiles, as the wavefront's alpha @ s products)
    if len(blocks) > 1:
        scratch = _scratch(B, T, cfg, block_rows, q.dtype, f.device)
        if q.dtype != torch.float32:  # filled by the wavefronts as they solve (STORE_LP), block by block
            s_lp = torch.empty(B, T, D, dtype=q.dtype, device=f.device)
    diag = cfg.strip_diag and len(blocks) > 1
    for n, (c0, m) in enumerate(blocks):
        r0, r1 = c0 * cfg.BC, min((c0 + m) * cfg.BC, T)
        # the strip: alpha[r0:r1, :r0], with strip_diag through the block's own columns (c0 + m) * BC
        strip = _strip(q, k, lse, r0, r1, 0, (c0 + m) * cfg.BC if diag else r0, scratch, cfg) if n or diag else s
        x = bmm_fp32(strip[:, :, :r0], s_lp[:, :r0]) if n else s  # (B, r1 - r0, D); s: a pointer never read
        _solve_kernel[(m * B * cfg.ND,)](
            q, k, f, g, lse, W, A, s, h if need_h else s, s_lp, x, r0, r1 - r0, flags, counters[n:], T, D, NC,
            cfg.ND, B, c0,
            1.0 / math.sqrt(D), strip, strip.stride(0), strip.stride(1),
            BC=cfg.BC, BD=cfg.BD, BK=cfg.BK, DT=cfg.DT, PREC=cfg.PREC, PV_LOWP=cfg.PV_LOWP,
            PV_PREC=cfg.PV_PREC, WPREC=cfg.WPREC, CROSS=n > 0, STORE_LP=s_lp is not s and n + 1 < len(blocks),
            DIAG=diag, STORE_H=need_h, num_warps=cfg.num_warps)
    return s, h, q.new_empty(0)


def _adjoint(ds, q, k, g, lse, W, WR, cfg: _Config, block_rows: int | None = None):
    """u = M^{-T} ds, and gamma u in q's dtype where the solve has it for every row (the dense blocks; else None:
    the wavefronts keep it only for the strips of later blocks). Two-level: blocks in reverse order; for block
    b, Y = alpha[(b+1)R:, bR:(b+1)R]^T (gamma u)[(b+1)R:] (one strip, cuBLAS), which the reverse wavefront
    inside the block adds to the rest (CROSS). With strip_diag the strip starts at the block's own rows (the
    last block gets one too) and the wavefront reads its within-block alpha tiles from it (DIAG)."""
    if cfg.dense:
        return _adjoint_dense(ds, q, k, g, lse, W, WR, cfg, block_rows)
    B, T, D = ds.shape
    u = torch.empty(B, T, D, dtype=torch.float32, device=ds.device)
    blocks = _blocks(T, cfg, block_rows)[::-1]
    flags, counters, NC = _wavefront_state(B, T, cfg, len(blocks), ds.device)
    v_lp = u  # unused with one block
    if len(blocks) > 1:
        scratch = _scratch(B, T, cfg, block_rows, q.dtype, ds.device)
        # gamma u in q's dtype for the strips, filled by the wavefronts as they solve (STORE_LP)
        v_lp = torch.empty(B, T, D, dtype=q.dtype, device=ds.device)
    diag = cfg.strip_diag and len(blocks) > 1
    for n, (c0, m) in enumerate(blocks):
        r0, r1 = c0 * cfg.BC, min((c0 + m) * cfg.BC, T)
        y = strip = u
        if diag:  # rows from the block's own on, its columns: the wavefront reads its part, cuBLAS the rest
            strip = _strip(q, k, lse, r0, T, r0, (c0 + m) * cfg.BC, scratch, cfg)
            if n:
                y = bmm_fp32(strip[:, r1 - r0:].transpose(1, 2), v_lp[:, r1:])  # (B, r1 - r0, D)
        elif n:
            strip = _strip(q, k, lse, r1, T, r0, r1, scratch, cfg)  # rows after the block, its columns
            y = bmm_fp32(strip.transpose(1, 2), v_lp[:, r1:])  # (B, r1 - r0, D)
        _adjoint_kernel[(m * B * cfg.ND,)](
            q, k, ds, g, lse, W, u, v_lp, y, r0, r1 - r0, flags, counters[n:], T, D, NC, cfg.ND, B, c0 + m,
            1.0 / math.sqrt(D), strip, strip.stride(0), strip.stride(1),
            BC=cfg.BC, BD=cfg.BD, BK=cfg.BK, DT=cfg.DT, PREC=cfg.PREC, PV_LOWP=cfg.PV_LOWP,
            PV_PREC=cfg.PV_PREC, WPREC=cfg.WPREC, CROSS=n > 0, STORE_LP=n + 1 < len(blocks),
            DIAG=diag, num_warps=cfg.num_warps)
    return u, None


def _qk_grads(q, k, u, s, g, lse, delta, cfg: _Config, v=None):
    """dq (q's dtype), dk (fp32) from strips of R rows of dl = alpha (gamma u s^T - delta) / sqrt(D); v: gamma u
    in q's dtype for every row, read in place of u (and gamma) where given."""
    B, T, D = q.shape
    BC = cfg.TS  # the strip tile: rows of a strip and the tiles of dl
    T_pad = _ceil_to(T, BC)
    R = min(T_pad, BC * max(1, STRIP_ELEMS // (B * T_pad * BC)))
    dl_dtype = q.dtype
    dl = torch.empty(B, R, T_pad, dtype=dl_dtype, device=q.device)
    dq = torch.empty(B, T, D, dtype=q.dtype, device=q.device)  # each row one product: rounded once, by cuBLAS
    dk = torch.zeros(B, T, D, dtype=torch.float32, device=q.device)
    for r0 in range(0, T, R):
        r1 = min(r0 + R, T)
        grid = (triton.cdiv(r1 - r0, BC), triton.cdiv(r1, BC), B)
        _dl_kernel[grid](q, k, u if v is None else v, s, g, lse, delta, dl, T, D, r0, T_pad, R, 1.0 / math.sqrt(D),
                         BC=BC, BK=cfg.BK, DT=cfg.DT, PREC=cfg.PREC, SCALED=v is not None,
                         **_launch("dl", cfg.strip_warps))
        strip = dl[:, :r1 - r0, :r1]
        # fp32 products, as the wavefronts accumulate: rounded to bf16, dk's sum over strips carried one bf16
        # rounding per strip (the suspect of lease 17's graphed-vs-eager gradient gap of a Sessa step: 1.5e-3
        # at T = 2048, four strips; 1e-7 at T = 600, one strip). Written in place by the products (dk's sum by
        # cuBLAS's epilogue): the same float32 sums without a float32 temporary and its copy or add, ~0.18 GB less
        # traffic a T = 4096 block step at batch 4 (scripts/count_dense_glue.py)
        torch.bmm(strip, k[:, :r1], out=dq[:, r0:r1])  # float32 sums rounded once (no float32 dq and its cast)
        baddbmm_fp32(dk[:, :r1], strip.transpose(1, 2), q[:, r0:r1], out=dk[:, :r1])
    return dq, dk


@triton.jit
def _rowdot_kernel(U, H, OUT, N, D, BR: tl.constexpr, BD: tl.constexpr):
    """OUT[r] = sum_d U[r, d] H[r, d] in float32 for BR rows per program."""
    rows = tl.program_id(0) * BR + tl.arange(0, BR)
    acc = tl.zeros((BR,), dtype=tl.float32)
    for d0 in range(0, D, BD):
        d = d0 + tl.arange(0, BD)
        at = rows[:, None].to(tl.int64) * D + d[None, :]
        mask = (rows[:, None] < N) & (d[None, :] < D)
        x = tl.load(U + at, mask=mask, other=0.0).to(tl.float32)
        acc += tl.sum(x * tl.load(H + at, mask=mask, other=0.0).to(tl.float32), axis=1)
    tl.store(OUT + rows, acc, mask=rows < N)


def _rowdot(u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """(u * h).sum(-1) in float32 for contiguous (B, T, D) u, h, in one pass: dgamma, which as a product and a
    sum was two passes and a float32 (B, T, D) temporary (0.053 ms of a T = 4096 block step, lease 39)."""
    B, T, D = u.shape
    u, h = u.contiguous(), h.contiguous()
    out = torch.empty(B, T, dtype=torch.float32, device=u.device)
    BR = 16
    _rowdot_kernel[(triton.cdiv(B * T, BR),)](u, h, out, B * T, D, BR=BR, BD=min(256, triton.next_power_of_2(D)))
    return out


def forward_kernels(f, q_b, k_b, gamma, chunk: int, block_d: int | None, num_warps: int | None,
                    block_rows: int | None = None, strip_tile: int | None = None, strip_diag: bool = False,
                    dense_blocks: bool = False, need_h: bool = True):
    """The forward solve. Returns s (f's dtype) and what the backward needs: lse (B, T), W (B, NC, C, C)
    and h = alpha s (B, T, D), all float32 and contiguous, and with dense_blocks every block's inverse W_R (B, T,
    R) in q's dtype (else empty), which the backward would otherwise compute again; need_h False (no backward will
    follow: inference, prefill): h and W_R are empty and h is not computed. block_rows: see feedback_triton."""
    check_block_rows(block_rows, chunk, dense_blocks)
    dt = torch.promote_types(q_b.dtype, k_b.dtype)
    cfg = _Config(dt, f.shape[-1], chunk, block_d, num_warps, strip_tile, strip_diag, dense_blocks)
    q, k = q_b.to(dt).contiguous(), k_b.to(dt).contiguous()
    g = gamma.to(torch.float32).contiguous()
    lse, W, A = _prep(q, k, g, cfg)
    s, h, WR = _solve(f.contiguous(), q, k, g, lse, W, A, cfg, block_rows, need_h)  # s fp32 (dense: f's dtype)
    return s.to(f.dtype), lse, W, h, WR


def backward_kernels(ds, q_b, k_b, gamma, lse, W, s, h, WR, chunk: int, block_d: int | None,
                     num_warps: int | None, block_rows: int | None = None, strip_tile: int | None = None,
                     strip_diag: bool = False, dense_blocks: bool = False):
    """Gradients (df, dq_b, dk_b, dgamma) in the dtypes of (s, q_b, k_b, gamma); WR: forward_kernels' (empty:
    the dense blocks invert again)."""
    check_block_rows(block_rows, chunk, dense_blocks)
    dt = torch.promote_types(q_b.dtype, k_b.dtype)
    cfg = _Config(dt, s.shape[-1], chunk, block_d, num_warps, strip_tile, strip_diag, dense_blocks)
    q, k = q_b.to(dt).contiguous(), k_b.to(dt).contiguous()
    g = gamma.to(torch.float32).contiguous()
    u, v = _adjoint(ds.contiguous(), q, k, g, lse, W, WR, cfg, block_rows)
    dgamma = _rowdot(u, h)  # u . (alpha s): exact also where gamma = 0
    dq, dk = _qk_grads(q, k, u, s, g, lse, g * dgamma, cfg, v)
    return tuple(x.to(t.dtype) for x, t in zip((u, dq, dk, dgamma), (s, q_b, k_b, gamma)))


def feedback_triton(f: torch.Tensor, q_b: torch.Tensor, k_b: torch.Tensor, gamma: torch.Tensor,
                    chunk: int = DEFAULT_CHUNK, block_d: int | None = None, num_warps: int | None = None,
                    block_rows: int | None = None, strip_tile: int | None = None,
                    strip_diag: bool = False, dense_blocks: bool = False) -> torch.Tensor:
    """f, q_b, k_b: (B, T, D); gamma: (B, T). Returns s: (B, T, D) in f's dtype; differentiable, and traced
    by torch.compile as one custom op (feedback_triton_op.py).
    chunk: rows per tile and per diagonal solve; block_d: width of the D tile each solve program owns;
    block_rows: None for the single-level wavefront over all of T, or R (a multiple of chunk) for the
    two-level solve: blocks of R rows, the part of alpha left of / below each block as one strip through
    cuBLAS, the wavefronts only inside a block (NOTES.md). R >= T is the single-level solve.
    strip_tile: the square tile of the fully parallel strip kernels (alpha's strips, dl) and the width of the
    lse pass's tiles, None for the chunk; strip_diag: the two-level wavefronts read each block's own
    alpha tiles from its strip (written once) instead of computing them in every D tile; dense_blocks (needs
    block_rows): no wavefront, each block inverted whole by matrix products (NOTES.md, "Dense blocks";
    strip_diag then changes nothing). Speed knobs (NOTES.md): the same s and gradients up to rounding."""
    from .feedback_triton_op import feedback_op
    return feedback_op(f, q_b, k_b, gamma, chunk, block_d, num_warps, block_rows, strip_tile, strip_diag,
                       dense_blocks)
