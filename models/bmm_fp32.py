"""Batched matrix products with a float32 (or wider) result for half-precision operands: cuBLAS accumulates in
float32 and, asked for it (`out_dtype`), keeps that result instead of rounding it to the operands' dtype."""

from __future__ import annotations

import torch


def bmm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for (B, n, k) and (B, k, m) of one dtype, in promote_types(dtype, float32)."""
    acc = torch.promote_types(a.dtype, torch.float32)
    if a.dtype == acc:
        return torch.bmm(a, b)
    if a.is_cuda:
        try:
            return torch.bmm(a, b, out_dtype=acc)
        except (TypeError, RuntimeError):  # torch without bmm(out_dtype=): float32 accumulate, rounded out
            return torch.bmm(a, b).to(acc)
    return torch.bmm(a.to(acc), b.to(acc))  # CPU: the exact products of the half operands, summed in float32
