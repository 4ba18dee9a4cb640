"""The static decode step's masked read (models/masked_read.py) as a split-KV Triton kernel.

    o[b, h] = softmax_{l: mask[l]}(q[b, h] . K[b, l, h // G] / sqrt(d)) V[b, l, h // G]

One query per head reads the whole preallocated cache. SDPA's kernels parallelise a one-query read over
batch x heads only (a 12-head Transformer at batch 1: 12 programs for a 4096-position cache), and the
"reduce" read is a float32 product and sum over the cache (its compiled form fuses them: 2,073 tokens/s at
batch 16 on the H200, 4.2x batch 1, where the goal is 8x: results/bench/README.md). Here the cache is also
split along its length, as in FlashDecoding:

  _partial_kernel  grid (B * H, S): split s of row (b, h) runs an online softmax over its positions (fp32
                   logits, masked positions skipped) -> its max m, its sum l and its unnormalised output.
  _combine_kernel  grid (B * H,): o = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s, in q's dtype.

S is chosen so that B * H * S fills the GPU (`splits`). Inference only (no backward); a torch custom op, so a
compiled step treats it as one node. Checked against softmax attention in float64 under TRITON_INTERPRET=1
(tests/test_split_read.py) and on the GPU (tests/test_gpu_split_read.py).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

# A masked logit: finite, so a split that sees no position gives exp(NEG - M) = 0, not NaN. A constexpr, since a
# jit function may read no other global (Triton 3.6 refuses to compile it; the CPU interpreter does not check).
NEG = tl.constexpr(-1.0e30)
TARGET_PROGRAMS = 264  # about two per SM of an H100 / H200 (132 SMs)
MAX_SPLITS = 64


@triton.jit
def _partial_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, m_ptr, l_ptr, acc_ptr, L, H, G, d, per_split,
                    sqb, sqh, skb, skl, skh, svb, svl, svh, scale, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    bh, sp = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    hk = h // G
    dd = tl.arange(0, BLOCK_D)
    dm = dd < d
    q = tl.load(q_ptr + b * sqb + h * sqh + dd, mask=dm, other=0.0).to(tl.float32)
    m_i = tl.max(tl.full((BLOCK_L,), NEG, tl.float32), 0)  # fp32 scalars, as the loop carries them
    l_i = tl.sum(tl.zeros((BLOCK_L,), tl.float32), 0)
    acc = tl.zeros((BLOCK_D,), tl.float32)
    start = sp * per_split
    for l0 in range(start, start + per_split, BLOCK_L):
        pos = l0 + tl.arange(0, BLOCK_L)
        inside = pos < L
        keep = (tl.load(mask_ptr + pos, mask=inside, other=0) != 0) & inside
        tile = keep[:, None] & dm[None, :]
        k = tl.load(k_ptr + b * skb + pos[:, None] * skl + hk * skh + dd[None, :], mask=tile, other=0.0)
        s = tl.where(keep, tl.sum(k.to(tl.float32) * q[None, :], 1) * scale, NEG)
        m_new = tl.maximum(m_i, tl.max(s, 0))
        p = tl.where(keep, tl.exp(s - m_new), 0.0)
        alpha = tl.exp(m_i - m_new)
        v = tl.load(v_ptr + b * svb + pos[:, None] * svl + hk * svh + dd[None, :], mask=tile, other=0.0)
        acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), 0)
        l_i = l_i * alpha + tl.sum(p, 0)
        m_i = m_new
    row = bh * tl.num_programs(1) + sp
    tl.store(m_ptr + row, m_i)
    tl.store(l_ptr + row, l_i)
    tl.store(acc_ptr + row * d + dd, acc, mask=dm)


@triton.jit
def _combine_kernel(m_ptr, l_ptr, acc_ptr, o_ptr, S, d, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    bh = tl.program_id(0)
    ss, dd = tl.arange(0, BLOCK_S), tl.arange(0, BLOCK_D)
    sm, dm = ss < S, dd < d
    big = tl.max(tl.load(m_ptr + bh * S + ss, mask=sm, other=NEG), 0)
    l = tl.sum(tl.zeros((BLOCK_S,), tl.float32), 0)  # an fp32 scalar, as the loop carries it
    acc = tl.zeros((BLOCK_D,), tl.float32)
    for s in range(S):  # one split at a time: an S x D tile would not fit in registers at Sessa's D = 768
        w = tl.exp(tl.load(m_ptr + bh * S + s) - big)
        l += w * tl.load(l_ptr + bh * S + s)
        acc += w * tl.load(acc_ptr + (bh * S + s) * d + dd, mask=dm, other=0.0)
    tl.store(o_ptr + bh * d + dd, (acc / l).to(o_ptr.dtype.element_ty), mask=dm)


def block_l(d: int) -> int:
    """Positions per loop step: a 32 x BLOCK_D tile for small heads, fewer rows for Sessa's 768-wide one."""
    return max(8, min(32, 4096 // triton.next_power_of_2(d)))


def splits(rows: int, L: int, d: int) -> int:
    """How many splits of the cache: enough for rows * S to reach TARGET_PROGRAMS, at most one per loop
    step of positions and at most MAX_SPLITS (a power of two, for the combine's tile)."""
    want = min(-(-TARGET_PROGRAMS // rows), -(-L // block_l(d)), MAX_SPLITS)
    return triton.next_power_of_2(max(want, 1))


@torch.library.custom_op("sessa_bench::split_read", mutates_args=())
def split_read(q: Tensor, K: Tensor, V: Tensor, mask: Tensor, n_splits: int = 0) -> Tensor:
    """q (B, H, d), K and V (B, L, H_kv, d), each with unit stride along d; mask (L,) uint8 -> (B, H, d).
    n_splits: the cache's splits, a power of two up to MAX_SPLITS; 0 (the decode step's): `splits`' choice
    (the read bench times others beside it, sessa_bench/bench/reads.py)."""
    B, H, d = q.shape
    L, Hkv = K.shape[1], K.shape[2]
    if n_splits and (n_splits & (n_splits - 1) or n_splits > MAX_SPLITS):
        raise ValueError(f"split_read n_splits={n_splits}: must be 0 (chosen by size) or a power of two up to "
                         f"{MAX_SPLITS}")
    S = n_splits or splits(B * H, L, d)
    BL = block_l(d)
    per_split = -(-L // S)
    per_split = -(-per_split // BL) * BL
    f32 = dict(dtype=torch.float32, device=q.device)
    m, lsum, acc = torch.empty(B * H * S, **f32), torch.empty(B * H * S, **f32), torch.empty(B * H * S, d, **f32)
    BD = triton.next_power_of_2(d)
    warps = 8 if BD >= 512 else 4  # Sessa's 768-wide head: its K and V tiles over more threads
    _partial_kernel[(B * H, S)](q, K, V, mask, m, lsum, acc, L, H, H // Hkv, d, per_split,
                                q.stride(0), q.stride(1), K.stride(0), K.stride(1), K.stride(2),
                                V.stride(0), V.stride(1), V.stride(2), 1.0 / math.sqrt(d), BLOCK_L=BL, BLOCK_D=BD,
                                num_warps=warps)
    o = torch.empty((B, H, d), dtype=q.dtype, device=q.device)
    _combine_kernel[(B * H,)](m, lsum, acc, o, S, d, BLOCK_S=S, BLOCK_D=BD)
    return o


@split_read.register_fake
def _(q, K, V, mask, n_splits=0):
    return q.new_empty(q.shape)
