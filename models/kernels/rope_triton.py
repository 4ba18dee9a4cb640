"""RoPE's rotation of q and k as one Triton kernel per direction (models/rope.py has the math).

Eagerly, `rope.rotate` casts x to float32, multiplies the pairs as complex numbers and casts back: forward and
backward, 8 launches per layer for q and k and about 1 GB of traffic per layer at `base`: by the sizes of
the profile's copies and multiplies (results/bench/nvidia-h200-profile-2026-11-30.md) an estimated ~11 % of
the Transformer's kernel time, not measured on its own. Here each row of x is read
once in its own dtype, rotated in float32 registers by the exact float32 angles, and written once:

    out[2i] = x[2i] cos - x[2i+1] sin        out[2i+1] = x[2i] sin + x[2i+1] cos

The backward is the same kernel with the angle negated (a rotation's inverse is its transpose). A torch
custom op with its autograd, so CUDA-graph capture and torch.compile see one node; compiled models do not
use it (rope.rotate takes the real form there, which Inductor fuses itself). CUDA only, or TRITON_INTERPRET=1
on the CPU tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _rope_kernel(x_ptr, cos_ptr, sin_ptr, out_ptr, T, PAIRS, HALF, SIGN: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)              # one (batch, position) row of H * d values
    t = row % T
    p = tl.arange(0, BLOCK)             # pair index within the row: head p // HALF, frequency p % HALF
    ok = p < PAIRS
    i = p % HALF
    base = row.to(tl.int64) * 2 * PAIRS
    x0 = tl.load(x_ptr + base + 2 * p, mask=ok, other=0.0).to(tl.float32)
    x1 = tl.load(x_ptr + base + 2 * p + 1, mask=ok, other=0.0).to(tl.float32)
    c = tl.load(cos_ptr + t * HALF + i, mask=ok, other=1.0)
    s = tl.load(sin_ptr + t * HALF + i, mask=ok, other=0.0) * SIGN
    dt = out_ptr.dtype.element_ty
    tl.store(out_ptr + base + 2 * p, (x0 * c - x1 * s).to(dt), mask=ok)
    tl.store(out_ptr + base + 2 * p + 1, (x0 * s + x1 * c).to(dt), mask=ok)


def _launch(x: Tensor, cos: Tensor, sin: Tensor, sign: int) -> Tensor:
    B, T, H, d = x.shape
    x = x.contiguous()
    cos, sin = cos.reshape(-1, d // 2).contiguous(), sin.reshape(-1, d // 2).contiguous()
    if cos.shape[0] != T:
        raise ValueError(f"rope: {cos.shape[0]} angle rows for {T} positions")
    out = torch.empty_like(x)
    pairs = H * d // 2
    _rope_kernel[(B * T,)](x, cos, sin, out, T, pairs, d // 2, SIGN=sign, BLOCK=triton.next_power_of_2(pairs),
                           num_warps=4 if pairs <= 1024 else 8)
    return out


@torch.library.custom_op("sessa_bench::rope", mutates_args=())
def rope(x: Tensor, cos: Tensor, sin: Tensor, inverse: bool = False) -> Tensor:
    """x (B, T, H, d) rotated by the angles whose cos and sin are (T, d/2) values (any shape that views so,
    e.g. rope_cos_sin's (1, T, 1, d/2)), float32; inverse: by the negated angles."""
    return _launch(x, cos, sin, -1 if inverse else 1)


@rope.register_fake
def _(x, cos, sin, inverse=False):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup(ctx, inputs, output):
    _, cos, sin, inverse = inputs
    ctx.save_for_backward(cos, sin)
    ctx.inverse = inverse


def _backward(ctx, grad):
    cos, sin = ctx.saved_tensors
    return rope(grad, cos, sin, not ctx.inverse), None, None, None


rope.register_autograd(_backward, setup_context=_setup)
