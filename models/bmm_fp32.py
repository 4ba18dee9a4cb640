"""Batched matrix products with a float32 (or wider) result for half-precision operands: cuBLAS accumulates in
float32 and, asked for it (`out_dtype`), keeps that result instead of rounding it to the operands' dtype.
`out`: a (B, n, m) float32 tensor, e.g. a slice of rows of a larger one, that the result is written into (on
CUDA by cuBLAS itself, at the slice's strides, where a copy into it would be another pass)."""

from __future__ import annotations

import torch


def bmm_fp32(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b for (B, n, k) and (B, k, m) of one dtype, in promote_types(dtype, float32)."""
    acc, kw = torch.promote_types(a.dtype, torch.float32), _out(out)
    if a.dtype == acc:
        return torch.bmm(a, b, **kw)
    if a.is_cuda:
        try:
            return torch.bmm(a, b, out_dtype=acc, **kw)
        except (TypeError, RuntimeError):  # torch without bmm(out_dtype=): float32 accumulate, rounded out
            return _into(torch.bmm(a, b).to(acc), out)
    return torch.bmm(a.to(acc), b.to(acc), **kw)  # CPU: the exact products of the half operands, summed in float32


def baddbmm_fp32(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """c + a @ b for c in promote_types(dtype, float32) and a, b as in bmm_fp32: on CUDA cuBLAS adds c in its
    epilogue (one pass, no float32 temporary of the product)."""
    acc, kw = torch.promote_types(a.dtype, torch.float32), _out(out)
    if a.dtype == acc:
        return torch.baddbmm(c, a, b, **kw)
    if a.is_cuda:
        try:
            return torch.baddbmm(c, a, b, out_dtype=acc, **kw)
        except (TypeError, RuntimeError):  # torch without baddbmm(out_dtype=)
            pass
    return torch.add(c, bmm_fp32(a, b), **kw)


def _out(out: torch.Tensor | None) -> dict:
    """No `out` keyword at all without one: the compiled decode step traces bmm_fp32 (models/masked_read.py)."""
    return {} if out is None else {"out": out}


def _into(x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    return x if out is None else out.copy_(x)
