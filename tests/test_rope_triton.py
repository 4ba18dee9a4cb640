"""The fused RoPE kernel (models/kernels/rope_triton.py), run by Triton's CPU interpreter, against the written-
out rotation (rope.rotate_real) in float64 on the same values: forward and backward, float32 and float16,
head dims with an odd number of pairs (the Transformer's 66), one position (a decode step) and several; and
through the attention layer, whose eager rotate takes it wherever Triton runs."""

import sys

import pytest
import torch

from triton_interpreter import patch_interpreter, run_interpreted

CASES = {"B2-T5-H3-d8": (2, 5, 3, 8), "B1-T7-H12-d66": (1, 7, 12, 66), "B3-T1-H2-d4": (3, 1, 2, 4)}


def angles(T: int, d: int, start: int = 3):
    from sessa_bench.models.rope import rope_cos_sin, rope_inv_freq
    return rope_cos_sin(rope_inv_freq(d), start, T, "cpu", torch.float32)


def interpreted_errors() -> dict:
    patch_interpreter()
    from sessa_bench.models.rope import fused, rotate, rotate_real

    out = {}
    for name, (B, T, H, d) in CASES.items():
        cos, sin = angles(T, d)
        g = torch.Generator().manual_seed(T * d)
        x64 = torch.randn(B, T, H, d, dtype=torch.float64, generator=g)
        dy = torch.randn(B, T, H, d, dtype=torch.float64, generator=g)
        for dtype in (torch.float32, torch.float16):
            x = x64.to(dtype).requires_grad_()
            xr = x.detach().double().requires_grad_()  # the same values, rotated in float64
            y = rotate(x, cos, sin)
            ref = rotate_real(xr, cos.double(), sin.double())
            (y.double() * dy).sum().backward()
            (ref * dy).sum().backward()
            err = lambda a, b: float((a.double() - b).abs().max() / b.abs().max())  # noqa: E731
            out[f"{name}-{dtype}"] = {"fused": fused(cos), "dtype": str(y.dtype), "fwd": err(y, ref),
                                      "bwd": err(x.grad, xr.grad)}
    # the attention layer's q and k go through it: its output against the same layer's on the complex path
    from sessa_bench.models import rope as rope_module
    from sessa_bench.models.attention import CausalAttention
    torch.manual_seed(0)
    layer = CausalAttention(24, 4, backend="math")
    x = torch.randn(2, 9, 24)
    got = layer(x)
    rope_module.fused = lambda cos: False
    want = layer(x)
    out["layer"] = {"fused": True, "dtype": str(got.dtype), "fwd": float((got - want).abs().max()), "bwd": 0.0}
    return out


@pytest.fixture(scope="module")
def interpreted():
    return run_interpreted(__file__)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype,tol", [("torch.float32", 1e-6), ("torch.float16", 2 ** -10)])
def test_fused_rope_interpreted(interpreted, case, dtype, tol):
    """float32: to float32 rounding of the float64 rotation; float16: its one rounding to float16, forward
    and backward (the gradient is the rotation by the negated angle, rounded once); largest error over the
    largest value."""
    r = interpreted[f"{case}-{dtype}"]
    assert r["fused"] and r["dtype"] == dtype, r
    assert r["fwd"] <= tol and r["bwd"] <= tol, r


def test_attention_layer_rotates_through_the_kernel(interpreted):
    assert interpreted["layer"]["fwd"] <= 1e-6, interpreted["layer"]


def test_the_cpu_rotation_stays_the_complex_one():
    """Without TRITON_INTERPRET a CPU tensor never takes the kernel (the float64 references rotate on CPU)."""
    from sessa_bench.models.rope import fused, rotation
    cos, sin = angles(4, 8)
    assert not fused(cos) and rotation(cos, sin) is not None


if __name__ == "__main__" and sys.argv[1:] == ["--interpret"]:
    import json
    print(json.dumps(interpreted_errors()))
