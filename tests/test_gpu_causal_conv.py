"""GPU parity of Mamba2's fused SiLU(causal depthwise conv) kernel (models/kernels/causal_conv_triton.py)
against F.conv1d + SiLU in float64, forward and the three gradients, at Table 1's Mamba2 shapes: the input a
704-channel slice of in_proj's 1289-wide output (the tests' CPU half runs it in Triton's interpreter)."""

import pytest
import torch
import torch.nn.functional as F

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
triton = pytest.importorskip("triton")

TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}  # ||a - b|| / ||b||


def reference(x, w, b):
    K = w.shape[1]
    return F.silu(F.conv1d(x.transpose(1, 2), w[:, None], b, padding=K - 1, groups=x.shape[-1])[..., :x.shape[1]]
                  ).transpose(1, 2)


def forward_backward(fn, x, w, b, dy):
    x, w, b = (t.detach().requires_grad_() for t in (x, w, b))
    y = fn(x, w, b)
    y.backward(dy)
    return [y.detach(), x.grad, w.grad, b.grad]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_conv_silu_matches_conv1d(dtype):
    from sessa_bench.models.kernels.causal_conv_triton import conv_silu

    g = torch.Generator(device="cuda").manual_seed(0)
    wide = torch.randn(4, 600, 1289, device="cuda", generator=g)
    w = torch.randn(704, 4, device="cuda", generator=g) / 2
    b = torch.randn(704, device="cuda", generator=g)
    dy = torch.randn(4, 600, 704, device="cuda", generator=g)
    x = wide.to(dtype)[..., 576:576 + 704]  # a strided slice, as Mamba2's xBC
    ref = forward_backward(reference, x.double(), w.double(), b.double(), dy.double())
    out = forward_backward(conv_silu, x, w, b, dy.to(dtype))
    assert out[0].dtype == dtype and out[1].dtype == dtype and out[2].dtype == torch.float32
    errors = {n: ((a.double() - r).norm() / r.norm()).item() for n, a, r in zip(("y", "dx", "dw", "db"), out, ref)}
    print(f"\n{dtype}: {errors}")
    assert all(e < TOL[dtype] for e in errors.values()), errors
    again = forward_backward(conv_silu, x, w, b, dy.to(dtype))  # deterministic: the partial sums in a fixed order
    assert all(torch.equal(a, c) for a, c in zip(out, again))
