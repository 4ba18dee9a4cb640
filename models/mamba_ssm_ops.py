"""mamba_ssm's Mamba2 Triton kernels as torch custom ops, so `torch.compile(fullgraph=True)` traces around
them instead of into mamba_ssm's autograd Functions (Python-side autotuning and device guards there can
break the graph).

Only the package's public entry points are used (mamba_chunk_scan_combined, rmsnorm_fn). Their backward
is not public on its own, so the backward op recomputes the forward under autograd and differentiates it:
exact, at the price of one more forward of the scan and the norm per training step. An op body runs with
autograd switched off in the dispatcher's thread-local state, so the recomputation runs on a short-lived
helper thread (fresh state) that uses the caller's CUDA device and stream, and is joined at once. Mamba2Mixer calls
these ops only while compiling; eager runs call mamba_ssm directly (no recomputation).

`kernels()` returns the (scan, rmsnorm) pair the ops run; tests substitute a PyTorch pair with the same
signatures to check the op plumbing (fake shapes, gradients, compilation) on CPU.
"""

import threading
from typing import Optional

import torch
from torch import Tensor

from . import mamba_ssm_import


def kernels():
    pair = mamba_ssm_import.import_mamba_ssm()
    if pair is None:
        raise RuntimeError(f"mamba2 backend='mamba_ssm' cannot run: {mamba_ssm_import.last_error}")
    return pair


def _with_autograd(fn, device: torch.device):
    """fn() with autograd working, from inside a custom op body (see the module docstring)."""
    out, err = [], []
    stream = torch.cuda.current_stream(device) if device.type == "cuda" else None

    def work():
        try:
            if stream is not None:
                with torch.cuda.device(device), torch.cuda.stream(stream):
                    out.append(fn())
            else:
                out.append(fn())
        except BaseException as e:  # re-raised in the caller's thread
            err.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


def _dense(t: Tensor) -> Tensor:
    """Contiguous: every op output here has the contiguous strides its fake promises."""
    return t.contiguous()


def _scan(x, dt, A, B, C, chunk_size, D, dt_bias, initial_states, want_state):
    scan = kernels()[0]
    out = scan(x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, initial_states=initial_states,
               dt_softplus=True, return_final_states=want_state)
    y, final = out if want_state else (out, None)
    # Fixed output dtypes (y in x's, the state in float32) and contiguous strides, so the fake below is right
    # by construction: compiled code checks the strides the fake promised (a stand-in's permuted y failed it).
    final = _dense(final.float()) if want_state else x.new_empty((0,), dtype=torch.float32)
    return _dense(y.to(x.dtype)), final


@torch.library.custom_op("sessa_bench::mamba_scan", mutates_args=())
def mamba_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, D: Tensor,
               dt_bias: Tensor, initial_states: Optional[Tensor], want_state: bool) -> tuple[Tensor, Tensor]:
    """y (b, l, h, p) = the chunked SSD scan with D skip and softplus(dt + dt_bias); final state (b, h, p, n)
    in float32, or an empty tensor when want_state is False."""
    with torch.no_grad():
        return _scan(x, dt, A, B, C, chunk_size, D, dt_bias, initial_states, want_state)


@mamba_scan.register_fake
def _(x, dt, A, B, C, chunk_size, D, dt_bias, initial_states, want_state):
    b, _, h, p = x.shape
    final = x.new_empty((b, h, p, B.shape[-1]) if want_state else (0,), dtype=torch.float32)
    return x.new_empty(x.shape), final


@torch.library.custom_op("sessa_bench::mamba_scan_backward", mutates_args=())
def mamba_scan_backward(dy: Tensor, dfinal: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                        chunk_size: int, D: Tensor, dt_bias: Tensor, initial_states: Optional[Tensor],
                        want_state: bool) -> list[Tensor]:
    """Gradients of (x, dt, A, B, C, D, dt_bias, initial_states) by recomputing the scan under autograd;
    the last one is empty when there is no initial state."""
    ins = [t.detach().requires_grad_() for t in (x, dt, A, B, C, D, dt_bias)]
    init = None if initial_states is None else initial_states.detach().requires_grad_()
    wrt = ins + ([init] if init is not None else [])

    def recompute():
        with torch.enable_grad():
            y, final = _scan(*ins[:5], chunk_size, ins[5], ins[6], init, want_state)
            outs, gouts = [y], [dy]
            if want_state:
                outs.append(final)
                gouts.append(dfinal)
            return torch.autograd.grad(outs, wrt, gouts, allow_unused=True)

    grads = _with_autograd(recompute, x.device)
    grads = [_dense(torch.zeros_like(t) if g is None else g.to(t.dtype)) for g, t in zip(grads, wrt)]
    if init is None:
        grads.append(x.new_empty((0,)))
    return grads


@mamba_scan_backward.register_fake
def _(dy, dfinal, x, dt, A, B, C, chunk_size, D, dt_bias, initial_states, want_state):
    wrt = [x, dt, A, B, C, D, dt_bias]
    return [x.new_empty(t.shape, dtype=t.dtype) for t in wrt] + [
        x.new_empty(initial_states.shape, dtype=initial_states.dtype) if initial_states is not None
        else x.new_empty((0,))]


def _scan_setup(ctx, inputs, output):
    x, dt, A, B, C, chunk_size, D, dt_bias, initial_states, want_state = inputs
    ctx.save_for_backward(x, dt, A, B, C, D, dt_bias, initial_states)
    ctx.chunk_size, ctx.want_state = chunk_size, want_state


def _scan_backward(ctx, dy, dfinal):
    x, dt, A, B, C, D, dt_bias, init = ctx.saved_tensors
    if dfinal is None or not ctx.want_state:
        dfinal = x.new_empty((0,))
    g = mamba_scan_backward(dy.contiguous(), dfinal, x, dt, A, B, C, ctx.chunk_size, D, dt_bias, init,
                            ctx.want_state)
    return g[0], g[1], g[2], g[3], g[4], None, g[5], g[6], (g[7] if init is not None else None), None


mamba_scan.register_autograd(_scan_backward, setup_context=_scan_setup)


def _norm(y, weight, z, eps, group_size):
    out = kernels()[1](y, weight, None, z=z, eps=eps, group_size=group_size, norm_before_gate=False)
    return _dense(out.to(y.dtype))


@torch.library.custom_op("sessa_bench::mamba_gated_rmsnorm", mutates_args=())
def mamba_gated_rmsnorm(y: Tensor, weight: Tensor, z: Tensor, eps: float, group_size: int) -> Tensor:
    """rmsnorm(y * silu(z)) * weight per group of group_size channels (norm_before_gate=False)."""
    with torch.no_grad():
        return _norm(y, weight, z, eps, group_size)


@mamba_gated_rmsnorm.register_fake
def _(y, weight, z, eps, group_size):
    return y.new_empty(y.shape)


@torch.library.custom_op("sessa_bench::mamba_gated_rmsnorm_backward", mutates_args=())
def mamba_gated_rmsnorm_backward(dout: Tensor, y: Tensor, weight: Tensor, z: Tensor, eps: float,
                                 group_size: int) -> list[Tensor]:
    ins = [t.detach().requires_grad_() for t in (y, weight, z)]

    def recompute():
        with torch.enable_grad():
            return torch.autograd.grad([_norm(*ins, eps, group_size)], ins, [dout], allow_unused=True)

    grads = _with_autograd(recompute, y.device)
    return [_dense(torch.zeros_like(t) if g is None else g.to(t.dtype)) for g, t in zip(grads, ins)]


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
