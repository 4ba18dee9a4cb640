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
- "triton": a split-KV Triton kernel (models/kernels/split_read_triton.py): the cache is also split along
  its length, each split an online softmax in float32, then one combine. CUDA only (or TRITON_INTERPRET=1).
- "matmul": caches of one key/value head only (Sessa's feedback read: one head D wide): two batched
  matrix-vector products through cuBLAS, which spread a row's whole cache over the GPU at any batch size, with
  float32 logits and softmax; the weights enter the second product in the cache's dtype (as flash attention
  rounds P), accumulated in float32 (models/bmm_fp32.py).

`make bench` times them side by side (conf/bench/*.yaml, decode.variants).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .bmm_fp32 import bmm_fp32
from .kernels import triton_runs_on

READS = ("reduce", "sdpa", "triton", "matmul")


def masked_read(q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor,
                impl: str = "reduce") -> torch.Tensor:
    B, H, d = q.shape
    Hkv = K.shape[2]
    if impl == "sdpa":
        o = F.scaled_dot_product_attention(q[:, :, None], K.transpose(1, 2), V.transpose(1, 2),
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
        if Hkv != 1:
            raise ValueError(f"decode read='matmul' reads caches of one key/value head (Sessa's feedback read), "
                             f"got {Hkv}; read attention with 'sdpa', 'reduce' or 'triton' ('sdpa+matmul': "
                             f"attention with sdpa, the feedback with matmul)")
        return _matmul_read(q, K[:, :, 0], V[:, :, 0], mask)
    if impl != "reduce":
        raise ValueError(f"decode read={impl!r} is not one of {READS}")
    acc = torch.promote_types(q.dtype, torch.float32)
    qg = q.view(B, 1, Hkv, H // Hkv, d).to(acc)                              # (B, 1, Hkv, G, d)
    logits = (qg * K[:, :, :, None].to(acc)).sum(-1) / math.sqrt(d)          # (B, L, Hkv, G)
    logits = logits.masked_fill(~mask[None, :, None, None], float("-inf"))
    p = logits.softmax(1)
    o = (p[..., None] * V[:, :, :, None].to(acc)).sum(1)                     # (B, Hkv, G, d)
    return o.reshape(B, H, d).to(q.dtype)


def _matmul_read(q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """q (B, H, d) against one key/value head, K and V (B, L, d) (views of the cache: no copy)."""
    logits = bmm_fp32(q.to(K.dtype), K.transpose(1, 2)) / math.sqrt(q.shape[-1])  # (B, H, L), >= float32
    p = logits.masked_fill(~mask, float("-inf")).softmax(-1)
    return bmm_fp32(p.to(V.dtype), V).to(q.dtype)                                  # (B, H, d)
