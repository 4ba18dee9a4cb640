"""The Triton feedback solve as torch custom ops (forward and backward), so torch.compile(fullgraph=True)
treats each as one opaque node with known output shapes instead of tracing into Triton launches.

This module does not import Triton: the op bodies call `kernels()`, which imports feedback_triton on first
use. Tests substitute a PyTorch pair with the same contract to check the op plumbing on CPU.
"""

from typing import Optional

import torch
from torch import Tensor

from . import DEFAULT_CHUNK, block_len, check_block_rows, check_chunk, check_strip_tile
from .feedback_chunked import check_inputs


def kernels():
    """(forward_kernels, backward_kernels) of feedback_triton.py."""
    from . import feedback_triton
    return feedback_triton.forward_kernels, feedback_triton.backward_kernels


@torch.library.custom_op("sessa_bench::feedback_triton_fwd", mutates_args=())
def feedback_fwd(f: Tensor, q_b: Tensor, k_b: Tensor, gamma: Tensor, chunk: int, block_d: Optional[int],
                 num_warps: Optional[int], block_rows: Optional[int] = None, strip_tile: Optional[int] = None,
                 strip_diag: bool = False, dense_blocks: bool = False,
                 need_h: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(s, lse, W, h, WR): the solve and what its backward needs (see feedback_triton.forward_kernels); need_h
    False: h and WR empty (no backward follows)."""
    return tuple(kernels()[0](f, q_b, k_b, gamma, chunk, block_d, num_warps, block_rows, strip_tile, strip_diag,
                              dense_blocks, need_h))


@feedback_fwd.register_fake
def _(f, q_b, k_b, gamma, chunk, block_d, num_warps, block_rows=None, strip_tile=None, strip_diag=False,
      dense_blocks=False, need_h=True):
    B, T, D = f.shape
    f32, dt = torch.float32, torch.promote_types(q_b.dtype, k_b.dtype)
    blocks = (B, T, block_len(T, chunk, block_rows)) if need_h and dense_blocks else (0,)
    return (f.new_empty((B, T, D)), f.new_empty((B, T), dtype=f32),
            f.new_empty((B, -(-T // chunk), chunk, chunk), dtype=f32),
            f.new_empty((B, T, D) if need_h else (0,), dtype=f32), f.new_empty(blocks, dtype=dt))


@torch.library.custom_op("sessa_bench::feedback_triton_bwd", mutates_args=())
def feedback_bwd(ds: Tensor, q_b: Tensor, k_b: Tensor, gamma: Tensor, lse: Tensor, W: Tensor, s: Tensor,
                 h: Tensor, WR: Tensor, chunk: int, block_d: Optional[int], num_warps: Optional[int],
                 block_rows: Optional[int] = None, strip_tile: Optional[int] = None,
                 strip_diag: bool = False, dense_blocks: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(df, dq_b, dk_b, dgamma)."""
    return tuple(kernels()[1](ds, q_b, k_b, gamma, lse, W, s, h, WR, chunk, block_d, num_warps, block_rows,
                              strip_tile, strip_diag, dense_blocks))


@feedback_bwd.register_fake
def _(ds, q_b, k_b, gamma, lse, W, s, h, WR, chunk, block_d, num_warps, block_rows=None, strip_tile=None,
      strip_diag=False, dense_blocks=False):
    return (s.new_empty(s.shape), q_b.new_empty(q_b.shape), k_b.new_empty(k_b.shape),
            gamma.new_empty(gamma.shape))


def _setup(ctx, inputs, output):
    f, q_b, k_b, gamma, *cfg, _need_h = inputs  # cfg: chunk .. dense_blocks, as feedback_bwd takes them
    s, lse, W, h, WR = output
    ctx.save_for_backward(q_b, k_b, gamma, lse, W, s, h, WR)
    ctx.cfg = tuple(cfg)


def _backward(ctx, ds, _dlse, _dW, _dh, _dWR):
    q_b, k_b, gamma, lse, W, s, h, WR = ctx.saved_tensors
    df, dq, dk, dgamma = feedback_bwd(ds, q_b, k_b, gamma, lse, W, s, h, WR, *ctx.cfg)
    return (df, dq, dk, dgamma) + (None,) * (len(ctx.cfg) + 1)  # none for the settings and need_h


feedback_fwd.register_autograd(_backward, setup_context=_setup)


def feedback_op(f, q_b, k_b, gamma, chunk: int = DEFAULT_CHUNK, block_d: Optional[int] = None,
                num_warps: Optional[int] = None, block_rows: Optional[int] = None,
                strip_tile: Optional[int] = None, strip_diag: bool = False, dense_blocks: bool = False) -> Tensor:
    """s: (B, T, D) in f's dtype. Inputs are checked here, outside the op, so errors name the argument."""
    check_inputs(f, q_b, k_b, gamma)
    check_chunk(chunk)
    check_block_rows(block_rows, chunk, dense_blocks)
    check_strip_tile(strip_tile)
    # h (alpha s, for dgamma) only where a backward can follow: not under no_grad (inference, prefill) nor for
    # inputs that need no gradient
    need_h = torch.is_grad_enabled() and any(x.requires_grad for x in (f, q_b, k_b, gamma))
    return feedback_fwd(f, q_b, k_b, gamma, chunk, block_d, num_warps, block_rows, strip_tile, bool(strip_diag),
                        bool(dense_blocks), need_h)[0]
