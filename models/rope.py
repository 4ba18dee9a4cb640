"""Rotary position embedding on interleaved pairs (2i, 2i+1), angles t * base^(-2i/d) in float32.

Angles are always computed in float32 (or float64 for float64 inputs), never in the activation dtype:
bf16 cannot represent positions above 256 exactly.
"""

from __future__ import annotations

import torch

from .kernels import triton_runs_on


def rope_inv_freq(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dim, got head_dim={head_dim}")
    return base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)


def angle_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def rope_cos_sin(inv_freq: torch.Tensor, start: int | torch.Tensor, T: int, device,
                 dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angles of positions start .. start+T-1, shaped (1, T, 1, d/2) to broadcast.
    start is a Python int or a (1,) int64 device tensor (the static decode step); positions are formed
    in int64 and converted once, so both give bit-identical angles."""
    pos = (torch.arange(T, device=device) + start).to(dtype)
    ang = pos[:, None] * inv_freq.to(device=device, dtype=dtype)[None, :]  # (T, d/2)
    return ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]


def fused(cos: torch.Tensor) -> bool:
    """Whether the eager `rotate` runs the Triton kernel (kernels/rope_triton.py): float32 angles (x is not
    float64) on a device Triton runs on."""
    return cos.dtype == torch.float32 and not torch.compiler.is_compiling() and triton_runs_on(cos)


def rotation(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor | None:
    """cos + i sin, the eager `rotate`'s multiplier, built once for q and k (None when compiling: the
    compiled rotate takes the real form; None where the Triton kernel rotates)."""
    return None if torch.compiler.is_compiling() or fused(cos) else torch.complex(cos, sin)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rot: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate the interleaved pairs of x: (B, T, H, d) by precomputed angles, in the angles' dtype (rot:
    their `rotation`, when already built). On a GPU, one Triton kernel each way (rope_triton.py: x read and
    written once in its dtype). Else eagerly, each pair is a complex number times cos + i sin: one multiply,
    about 4 kernels forward and 4 backward where the real form below launches about 9 and 14. Compiled, the
    real form: Inductor fuses it into one kernel, and does not lower complex tensors."""
    if torch.compiler.is_compiling():
        return rotate_real(x, cos, sin)
    if fused(cos):
        from .kernels import rope_triton  # noqa: F401 (registers the op; imports Triton)
        return torch.ops.sessa_bench.rope(x, cos, sin)
    xc = torch.view_as_complex(x.to(cos.dtype).unflatten(-1, (x.shape[-1] // 2, 2)).contiguous())
    return torch.view_as_real(xc * (torch.complex(cos, sin) if rot is None else rot)).flatten(-2).to(x.dtype)


def rotate_real(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """rotate, written out on the real and imaginary parts."""
    xp = x.to(cos.dtype).unflatten(-1, (x.shape[-1] // 2, 2))
    x0, x1 = xp[..., 0], xp[..., 1]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2).to(x.dtype)


def apply_rope(x: torch.Tensor, inv_freq: torch.Tensor, start: int = 0) -> torch.Tensor:
    """x: (B, T, H, d). Position of x[:, t] is start + t."""
    return rotate(x, *rope_cos_sin(inv_freq, start, x.shape[1], x.device, angle_dtype(x)))
