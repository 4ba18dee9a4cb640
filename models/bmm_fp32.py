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


def baddbmm_fp32(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """c + a @ b for c in promote_types(dtype, float32) and a, b as in bmm_fp32: on CUDA cuBLAS adds c in its
    epilogue (one pass, no float32 temporary of the product)."""
    acc = torch.promote_types(a.dtype, torch.float32)
    if a.dtype == acc:
        return torch.baddbmm(c, a, b)
    if a.is_cuda:
        try:
            return torch.baddbmm(c, a, b, out_dtype=acc)
        except (TypeError, RuntimeError):  # torch without baddbmm(out_dtype=)
            pass
    return c + bmm_fp32(a, b)
