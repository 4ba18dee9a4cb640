"""The read of a static decode step: one query per head against a whole preallocated cache under a mask.

    o = masked_read(q, K, V, mask, impl)     # q (B, H, d), K and V (B, L, H_kv, d), mask (L,) bool -> (B, H, d)

Query head h reads key/value head h // (H / H_kv) (grouped-query attention). Two implementations of the same
softmax(q K^T / sqrt(d)) V over the positions where mask is True:

- "reduce": logits and the weighted sum as float32 elementwise products and sums. Every step is parallel over
  the cache length, in eager mode it costs a float32 copy of the cache, and under torch.compile the product and
  the sum fuse into one pass over the bf16 cache. The logits stay float32 before the softmax, as in the
  parallel forward.
- "sdpa": F.scaled_dot_product_attention with a boolean mask (the first implementation). With one query its
  kernels parallelise over batch x heads only: Sessa's feedback read (one head 768 wide) runs on one thread
  block at batch 1, the suspected cause of its 62 tokens/s (results/bench/nvidia-h200-decode-2026-11-28.md).
  Its kernels are tried in a stated order, cuDNN first (models/sdpa_order.py: left to the process's state,
  after a training forward the read ran PyTorch's memory-efficient kernel, 260 us a layer at batch 16 against
  58 us in a fresh process).
- "triton": a split-KV Triton kernel (models/kernels/split_read_triton.py): the cache is also split along
  its length, each split an online softmax in float32, then one combine. CUDA only (or TRITON_INTERPRET=1).
- "matmul": two batched matrix products through cuBLAS, one per side of the softmax, over each sequence's whole
  cache row (L, H_kv * d) (a view of the cache: no copy), which spread the read over the GPU at any batch size,
  with float32 logits and softmax; the weights enter the second product in the cache's dtype (as flash
  attention rounds P), accumulated in float32 (models/bmm_fp32.py). With one key/value head (Sessa's feedback
  read, one head D wide) these are exactly the two products of attention; with H_kv heads the queries enter as
  a block-diagonal matrix (query head h's vector in the columns of its key/value head, zeros elsewhere), so
  the products do H_kv times the arithmetic to read the cache once each at the GEMMs' bandwidth, and the output
  is their block diagonal. Tried because under the boolean mask sdpa ran PyTorch's memory-efficient kernel
  (results/bench/nvidia-h200-profile-2026-12-01.md; the process's state chose it, above); measured, it halved
  Sessa's decode rate at batch 16 (results/bench/nvidia-h200-decode-matmul-2026-12-01.md: the product with V
  gives cuBLAS few output tiles per sequence and no split along the cache), so only the one wide feedback
  head reads this way (`auto`).

`make bench` times them side by side (conf/bench/*.yaml, decode.variants).
"""

from __future__ import annotations

import math

import torch

from .bmm_fp32 import bmm_fp32
from .kernels import triton_runs_on
from .sdpa_order import sdpa_in_order

READS = ("reduce", "sdpa", "triton", "matmul")


def masked_read(q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor,
                impl: str = "reduce") -> torch.Tensor:
    B, H, d = q.shape
    Hkv = K.shape[2]
    if impl == "sdpa":
        # the order stated, not left to the process's state (models/sdpa_order.py); flash takes no mask
        o = sdpa_in_order(("cudnn", "efficient", "math"), q[:, :, None], K.transpose(1, 2), V.transpose(1, 2),
                          attn_mask=mask[None, None, None, :], enable_gqa=Hkv != H)
        return o[:, :, 0]
    if impl == "triton":
        if not torch.compiler.is_compiling():  # traced: StaticDecoder registered the op before compiling
            if not triton_runs_on(q):
                raise ValueError(f"decode read='triton' needs the triton package and CUDA tensors, got "
                                 f"{q.device}; use read='reduce' or 'sdpa'")
            from .kernels import split_read_triton  # noqa: F401 (registers the op; imports Triton)
        # unit stride along the head dim (the caches have it: no copy), the mask as bytes
        return torch.ops.sessa_bench.split_read(q.contiguous(), K.contiguous(), V.contiguous(),
                                                mask.to(torch.uint8))
    if impl == "matmul":
        return _matmul_read(q, K, V, mask)
    if impl != "reduce":
        raise ValueError(f"decode read={impl!r} is not one of {READS}")
    acc = torch.promote_types(q.dtype, torch.float32)
    qg = q.view(B, 1, Hkv, H // Hkv, d).to(acc)                              # (B, 1, Hkv, G, d)
    logits = (qg * K[:, :, :, None].to(acc)).sum(-1) / math.sqrt(d)          # (B, L, Hkv, G)
    logits = torch.where(mask[None, :, None, None], logits, float("-inf"))
    p = logits.softmax(1)
    o = (p[..., None] * V[:, :, :, None].to(acc)).sum(1)                     # (B, Hkv, G, d)
    return o.reshape(B, H, d).to(q.dtype)


def _matmul_read(q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """q (B, H, d) against K and V (B, L, Hkv, d), each side one batched product over the rows (L, Hkv * d)."""
    B, H, d = q.shape
    L, Hkv = K.shape[1], K.shape[2]
    G = H // Hkv
    if Hkv == 1:
        qb = q.to(K.dtype)                                                        # (B, H, d)
    else:  # qb[b, j, g, j, :] = q[b, j * G + g]: query head j * G + g reads key/value head j only
        qb = q.new_zeros(B, Hkv, G, Hkv, d, dtype=K.dtype)
        qb.diagonal(dim1=1, dim2=3).copy_(q.view(B, Hkv, G, d).permute(0, 2, 3, 1))
        qb = qb.view(B, H, Hkv * d)
    logits = bmm_fp32(qb, K.reshape(B, L, Hkv * d).transpose(1, 2)) / math.sqrt(d)  # (B, H, L), >= float32
    p = torch.where(mask, logits, float("-inf")).softmax(-1)  # one kernel where ~mask + masked_fill were two
    r = bmm_fp32(p.to(V.dtype), V.reshape(B, L, Hkv * d))                          # (B, H, Hkv * d)
    if Hkv > 1:  # the block diagonal: r[b, j * G + g, j * d:(j + 1) * d]
        r = r.view(B, Hkv, G, Hkv, d).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2).reshape(B, H, d)
    return r.to(q.dtype)
