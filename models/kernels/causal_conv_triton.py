"""SiLU(causal depthwise conv1d) in Triton, in the (B, T, C) layout Mamba2's in_proj produces: Mamba2's conv.

    y[b, t, c] = silu(bias[c] + sum_j w[c, j] x[b, t - K + 1 + j, c])      (x = 0 before t = 0)

F.conv1d needs (B, C, T): a transposed copy in, a transposed copy out, and its depthwise kernels (forward,
input grad, weight grad) took 9.2 of a 72 ms Mamba2 step at Table 1's shapes on the H200, the layout copies
and the SiLU more (results/bench/nvidia-h200-mamba2-speed-ab.md, profile). Here each pass reads and writes
each element once, in fp32, straight from the strided view of in_proj's output (channel stride 1).

forward   _fwd_kernel: y (x's dtype).
backward  _grad_kernel: g = dy * silu'(a), a recomputed from x (fp32, kept for the next kernel), and per
          (batch, time tile) partial sums of dw[c, j] = sum_t g[t] x[t - K + 1 + j] and db = sum_t g; torch
          adds the partials in a fixed order (deterministic). _dx_kernel: dx[s] = sum_j w[j] g[s + K - 1 - j].

`conv_silu` is a torch custom op (forward and backward), so torch.compile treats it as one node. Checked
against F.conv1d in float32 under TRITON_INTERPRET=1 (tests/test_causal_conv.py) and on the GPU
(tests/test_gpu_mamba2.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK_T, BLOCK_C = 32, 64  # a program's tile: 32 time steps x 64 channels


@triton.jit
def _pre_activation(x_ptr, w_ptr, b_ptr, bb, t, c, cm, T, sxb, sxt, K: tl.constexpr, BT: tl.constexpr,
                    BC: tl.constexpr):
    """bias + sum_j w[:, j] x[t - K + 1 + j] for the tile's rows t and channels c, in fp32."""
    acc = tl.zeros((BT, BC), tl.float32) + tl.load(b_ptr + c, mask=cm, other=0.0).to(tl.float32)[None, :]
    for j in tl.static_range(K):
        src = t - (K - 1) + j
        m = ((src >= 0) & (src < T))[:, None] & cm[None, :]
        xv = tl.load(x_ptr + bb * sxb + src[:, None] * sxt + c[None, :], mask=m, other=0.0).to(tl.float32)
        acc += xv * tl.load(w_ptr + c * K + j, mask=cm, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, T, C, sxb, sxt, K: tl.constexpr, BT: tl.constexpr,
                BC: tl.constexpr):
    pt, pc, bb = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t, c = pt * BT + tl.arange(0, BT), pc * BC + tl.arange(0, BC)
    cm = c < C
    a = _pre_activation(x_ptr, w_ptr, b_ptr, bb, t, c, cm, T, sxb, sxt, K, BT, BC)
    y = a * tl.sigmoid(a)
    tl.store(y_ptr + (bb * T + t[:, None]) * C + c[None, :], y.to(y_ptr.dtype.element_ty),
             mask=(t < T)[:, None] & cm[None, :])


@triton.jit
def _grad_kernel(x_ptr, w_ptr, b_ptr, dy_ptr, g_ptr, dw_ptr, db_ptr, T, C, NT, sxb, sxt, K: tl.constexpr,
                 BT: tl.constexpr, BC: tl.constexpr):
    pt, pc, bb = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t, c = pt * BT + tl.arange(0, BT), pc * BC + tl.arange(0, BC)
    cm = c < C
    inside = (t < T)[:, None] & cm[None, :]
    a = _pre_activation(x_ptr, w_ptr, b_ptr, bb, t, c, cm, T, sxb, sxt, K, BT, BC)
    sig = tl.sigmoid(a)
    dy = tl.load(dy_ptr + (bb * T + t[:, None]) * C + c[None, :], mask=inside, other=0.0).to(tl.float32)
    g = dy * sig * (1.0 + a * (1.0 - sig))  # zero outside the tile's rows: dy loads 0 there
    tl.store(g_ptr + (bb * T + t[:, None]) * C + c[None, :], g, mask=inside)
    part = bb * NT + pt  # this program's row of the partial sums
    tl.store(db_ptr + part * C + c, tl.sum(g, 0), mask=cm)
    for j in tl.static_range(K):
        src = t - (K - 1) + j
        m = ((src >= 0) & (src < T))[:, None] & cm[None, :]
        xv = tl.load(x_ptr + bb * sxb + src[:, None] * sxt + c[None, :], mask=m, other=0.0).to(tl.float32)
        tl.store(dw_ptr + (part * K + j) * C + c, tl.sum(g * xv, 0), mask=cm)


@triton.jit
def _dx_kernel(g_ptr, w_ptr, dx_ptr, T, C, K: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
    pt, pc, bb = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    s, c = pt * BT + tl.arange(0, BT), pc * BC + tl.arange(0, BC)
    cm = c < C
    acc = tl.zeros((BT, BC), tl.float32)
    for j in tl.static_range(K):
        r = s + (K - 1) - j  # the output row that input row s feeds through tap j
        m = (r < T)[:, None] & cm[None, :]
        gv = tl.load(g_ptr + (bb * T + r[:, None]) * C + c[None, :], mask=m, other=0.0)
        acc += gv * tl.load(w_ptr + c * K + j, mask=cm, other=0.0).to(tl.float32)[None, :]
    tl.store(dx_ptr + (bb * T + s[:, None]) * C + c[None, :], acc.to(dx_ptr.dtype.element_ty),
             mask=(s < T)[:, None] & cm[None, :])


def _channel_major(x: Tensor) -> Tensor:
    """x itself when its channels are contiguous (a slice of in_proj's output is), else a contiguous copy."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _grid(B: int, T: int, C: int) -> tuple[int, int, int]:
    return triton.cdiv(T, BLOCK_T), triton.cdiv(C, BLOCK_C), B


@torch.library.custom_op("sessa_bench::causal_conv_silu_fwd", mutates_args=())
def conv_silu_fwd(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """silu(causal depthwise conv) of x (B, T, C) with w (C, K) and b (C): (B, T, C), contiguous, x's dtype."""
    x = _channel_major(x)
    B, T, C = x.shape
    y = torch.empty((B, T, C), dtype=x.dtype, device=x.device)
    _fwd_kernel[_grid(B, T, C)](x, w.contiguous(), b.contiguous(), y, T, C, x.stride(0), x.stride(1),
                                K=w.shape[1], BT=BLOCK_T, BC=BLOCK_C)
    return y


@conv_silu_fwd.register_fake
def _(x, w, b):
    return x.new_empty(x.shape)


@torch.library.custom_op("sessa_bench::causal_conv_silu_bwd", mutates_args=())
def conv_silu_bwd(dy: Tensor, x: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dw, db) of conv_silu_fwd."""
    x, dy, w = _channel_major(x), dy.contiguous(), w.contiguous()
    B, T, C = x.shape
    K, NT = w.shape[1], triton.cdiv(T, BLOCK_T)
    g = torch.empty((B, T, C), dtype=torch.float32, device=x.device)
    dw_parts = torch.empty((B * NT, K, C), dtype=torch.float32, device=x.device)
    db_parts = torch.empty((B * NT, C), dtype=torch.float32, device=x.device)
    _grad_kernel[_grid(B, T, C)](x, w, b.contiguous(), dy, g, dw_parts, db_parts, T, C, NT, x.stride(0),
                                 x.stride(1), K=K, BT=BLOCK_T, BC=BLOCK_C)
    dx = torch.empty((B, T, C), dtype=x.dtype, device=x.device)
    _dx_kernel[_grid(B, T, C)](g, w, dx, T, C, K=K, BT=BLOCK_T, BC=BLOCK_C)
    # dw contiguous, as the fake kernel says: a transposed view made compiled graphs assert on its strides
    return dx, dw_parts.sum(0).t().contiguous().to(w.dtype), db_parts.sum(0).to(b.dtype)


@conv_silu_bwd.register_fake
def _(dy, x, w, b):
    return x.new_empty(x.shape), w.new_empty(w.shape), b.new_empty(b.shape)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, dy):
    return conv_silu_bwd(dy, *ctx.saved_tensors)


conv_silu_fwd.register_autograd(_backward, setup_context=_setup)


def conv_silu(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """silu(causal depthwise conv1d) of x (B, T, C) with weight w (C, K) and bias b (C), differentiable in all
    three; CUDA tensors (or any under TRITON_INTERPRET=1)."""
    if x.dim() != 3 or w.dim() != 2 or w.shape[0] != x.shape[-1] or b.shape != (x.shape[-1],):
        raise ValueError(f"conv_silu: x (B, T, C), w (C, K), b (C); got {tuple(x.shape)}, {tuple(w.shape)}, "
                         f"{tuple(b.shape)}")
    return conv_silu_fwd(x, w, b)
