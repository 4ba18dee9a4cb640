"""mamba_ssm's Mamba2 Triton kernels as torch custom ops, so `torch.compile(fullgraph=True)` traces around
them instead of into mamba_ssm's autograd Functions (Python-side autotuning and device guards there can
break the graph).

Each op's forward and backward call the functions mamba_ssm's own autograd Functions call
(`mamba_ssm_import.import_mamba_ssm_kernels`): the chunked scan's forward and backward, and the gated
RMSNorm's (its backward takes the rstd of a forward, recomputed: one cheap norm kernel). No autograd runs
inside an op body. (An earlier version recomputed the forward under autograd on a helper thread, since an
op body runs with autograd off; on CUDA that deadlocks: the op runs on the autograd engine's device thread,
which the helper's nested backward needs. The compiled Mamba2 never finished its first step on the H200.)
Mamba2Mixer calls these ops only while compiling; eager runs call mamba_ssm's public functions directly.

`kernels()` returns the (scan_fwd, scan_bwd, norm_fwd, norm_bwd) functions the ops run; tests substitute
PyTorch stand-ins with the same signatures to check the op plumbing (fake shapes, gradients, compilation)
on CPU. Every output is contiguous, as the fakes promise (compiled code checks the strides).
"""

from typing import Optional

import torch
from torch import Tensor

from . import mamba_ssm_import


def kernels():
    k = mamba_ssm_import.import_mamba_ssm_kernels()
    if k is None:
        why = mamba_ssm_import.last_error or "its forward/backward functions did not import (mamba-ssm 2.3 has them)"
        raise RuntimeError(f"mamba2 backend='mamba_ssm' cannot run compiled: {why}")
    return k


def _dense(t: Tensor) -> Tensor:
    """Contiguous: every op output here has the contiguous strides its fake promises."""
    return t.contiguous()


@torch.library.custom_op("sessa_bench::mamba_scan", mutates_args=())
def mamba_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, D: Tensor,
               dt_bias: Tensor, initial_states: Optional[Tensor], want_state: bool) -> tuple[Tensor, Tensor]:
    """y (b, l, h, p) = the chunked SSD scan with D skip and softplus(dt + dt_bias); final state (b, h, p, n)
    in float32, or an empty tensor when want_state is False."""
    y, final = kernels()[0](x, dt, A, B, C, chunk_size, D, dt_bias, initial_states)
    final = _dense(final.float()) if want_state else x.new_empty((0,), dtype=torch.float32)
    return _dense(y.to(x.dtype)), final


@mamba_scan.register_fake
def _(x, dt, A, B, C, chunk_size, D, dt_bias, initial_states, want_state):
    b, _, h, p = x.shape
    final = x.new_empty((b, h, p, B.shape[-1]) if want_state else (0,), dtype=torch.float32)
    return x.new_empty(x.shape), final


@torch.library.custom_op("sessa_bench::mamba_scan_backward", mutates_args=())
def mamba_scan_backward(dy: Tensor, dfinal: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                        y: Tensor, chunk_size: int, D: Tensor, dt_bias: Tensor, initial_states: Optional[Tensor],
                        want_state: bool) -> list[Tensor]:
    """Gradients of (x, dt, A, B, C, D, dt_bias, initial_states) from the forward's inputs and output y;
    the last one is empty when there is no initial state."""
    wrt = [x, dt, A, B, C, D, dt_bias]
    grads = kernels()[1](dy, dfinal if want_state else None, x, dt, A, B, C, y, chunk_size, D, dt_bias,
                         initial_states)
    out = [_dense(torch.zeros_like(t) if g is None else g.to(t.dtype)) for g, t in zip(grads[:7], wrt)]
    dinit = grads[7]
    if initial_states is None:
        return out + [x.new_empty((0,))]
    return out + [_dense(torch.zeros_like(initial_states) if dinit is None else dinit.to(initial_states.dtype))]


@mamba_scan_backward.register_fake
def _(dy, dfinal, x, dt, A, B, C, y, chunk_size, D, dt_bias, initial_states, want_state):
    wrt = [x, dt, A, B, C, D, dt_bias]
    return [x.new_empty(t.shape, dtype=t.dtype) for t in wrt] + [
        x.new_empty(initial_states.shape, dtype=initial_states.dtype) if initial_states is not None
        else x.new_empty((0,))]


def _scan_setup(ctx, inputs, output):
    x, dt, A, B, C, chunk_size, D, dt_bias, initial_states, want_state = inputs
    ctx.save_for_backward(x, dt, A, B, C, output[0], D, dt_bias, initial_states)
    ctx.chunk_size, ctx.want_state = chunk_size, want_state


def _scan_backward(ctx, dy, dfinal):
    x, dt, A, B, C, y, D, dt_bias, init = ctx.saved_tensors
    if dfinal is None or not ctx.want_state:
        dfinal = x.new_empty((0,))
    g = mamba_scan_backward(dy.contiguous(), dfinal.contiguous(), x, dt, A, B, C, y, ctx.chunk_size, D, dt_bias,
                            init, ctx.want_state)
    return g[0], g[1], g[2], g[3], g[4], None, g[5], g[6], (g[7] if init is not None else None), None


mamba_scan.register_autograd(_scan_backward, setup_context=_scan_setup)


def _rows(t: Tensor) -> Tensor:
    """(..., N) as contiguous rows (M, N), the layout the norm kernels take."""
    return t.reshape(-1, t.shape[-1]).contiguous()


@torch.library.custom_op("sessa_bench::mamba_gated_rmsnorm", mutates_args=())
def mamba_gated_rmsnorm(y: Tensor, weight: Tensor, z: Tensor, eps: float, group_size: int) -> Tensor:
    """rmsnorm(y * silu(z)) * weight per group of group_size channels (norm_before_gate=False)."""
    out, _ = kernels()[2](_rows(y), weight.contiguous(), _rows(z), eps, group_size)
    return _dense(out.to(y.dtype).reshape(y.shape))


@mamba_gated_rmsnorm.register_fake
def _(y, weight, z, eps, group_size):
    return y.new_empty(y.shape)


@torch.library.custom_op("sessa_bench::mamba_gated_rmsnorm_backward", mutates_args=())
def mamba_gated_rmsnorm_backward(dout: Tensor, y: Tensor, weight: Tensor, z: Tensor, eps: float,
                                 group_size: int) -> list[Tensor]:
    """Gradients of (y, weight, z); the forward's rstd is recomputed (one norm kernel)."""
    norm_fwd, norm_bwd = kernels()[2:]
    y2, z2, w = _rows(y), _rows(z), weight.contiguous()
    _, rstd = norm_fwd(y2, w, z2, eps, group_size)
    dy, dw, dz = norm_bwd(_rows(dout), y2, w, z2, eps, group_size, rstd)
    return [_dense(dy.to(y.dtype).reshape(y.shape)), _dense(dw.to(weight.dtype)),
            _dense(dz.to(z.dtype).reshape(z.shape))]


@mamba_gated_rmsnorm_backward.register_fake
def _(dout, y, weight, z, eps, group_size):
    return [y.new_empty(t.shape, dtype=t.dtype) for t in (y, weight, z)]


def _norm_setup(ctx, inputs, output):
    y, weight, z, eps, group_size = inputs
    ctx.save_for_backward(y, weight, z)
    ctx.eps, ctx.group_size = eps, group_size


def _norm_backward(ctx, dout):
    y, weight, z = ctx.saved_tensors
    dy, dw, dz = mamba_gated_rmsnorm_backward(dout.contiguous(), y, weight, z, ctx.eps, ctx.group_size)
    return dy, dw, dz, None, None


mamba_gated_rmsnorm.register_autograd(_norm_backward, setup_context=_norm_setup)
