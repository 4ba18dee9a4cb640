"""The fused RoPE kernel on the GPU (run with `make test-gpu`): bf16 q/k at the Transformer's `base` shape
against the eager complex rotation (float32 arithmetic, one rounding), forward and backward, the same
values up to one bf16 rounding; inside a captured CUDA graph (how the tables train) the same output."""

import pytest
import torch

pytest.importorskip("triton")

from sessa_bench.models import rope as rope_module  # noqa: E402
from sessa_bench.models.rope import rope_cos_sin, rope_inv_freq, rotate  # noqa: E402

pytestmark = pytest.mark.gpu


def inputs(B=4, T=2048, H=12, d=66):
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(B, T, H, d, generator=gen, device="cuda").bfloat16()
    cos, sin = rope_cos_sin(rope_inv_freq(d), 5, T, "cuda", torch.float32)
    return x, cos, sin, torch.randn(x.shape, generator=gen, device="cuda").bfloat16()


def run(x, cos, sin, dy):
    x = x.detach().requires_grad_()
    y = rotate(x, cos, sin)
    y.backward(dy)
    return y, x.grad


def test_fused_rope_matches_the_complex_rotation(monkeypatch):
    x, cos, sin, dy = inputs()
    assert rope_module.fused(cos)
    got = run(x, cos, sin, dy)
    monkeypatch.setattr(rope_module, "fused", lambda cos: False)
    want = run(x, cos, sin, dy)
    for a, b in zip(got, want):
        assert a.dtype == torch.bfloat16
        assert float((a.float() - b.float()).abs().max()) <= 2 ** -7 * float(b.float().abs().max())


def test_fused_rope_in_a_cuda_graph():
    x, cos, sin, _ = inputs(B=2, T=256)
    eager = rotate(x, cos, sin)
    static = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        rotate(static, cos, sin)  # warm-up (compiles the kernel) outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = rotate(static, cos, sin)
    graph.replay()
    assert torch.equal(out, eager)
