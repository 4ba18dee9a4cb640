"""bmm_fp32 and baddbmm_fp32 (models/bmm_fp32.py): half operands, float32 results, against float64 products of the
same operands. On the CPU they take their fallbacks; on CUDA cuBLAS's out_dtype kernels (the gpu test)."""

import pytest
import torch

from sessa_bench.models.bmm_fp32 import baddbmm_fp32, bmm_fp32


def operands(dtype, device):
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 33, 65, generator=gen), torch.randn(3, 65, 17, generator=gen)
    c = torch.randn(3, 33, 17, generator=gen)
    return a.to(device, dtype), b.to(device, dtype), c.to(device)


def check(dtype, device, tol):
    a, b, c = operands(dtype, device)
    exact = a.double() @ b.double()
    prod, summed = bmm_fp32(a, b), baddbmm_fp32(c, a, b)
    assert prod.dtype == summed.dtype == torch.float32
    assert float((prod.double() - exact).abs().max()) <= tol
    assert float((summed.double() - (c.double() + exact)).abs().max()) <= tol
    # the result is float32, not the operands' dtype rounded out: a half rounding of values ~10 would be ~1e-2
    assert float((summed.double() - summed.to(dtype).double()).abs().max()) > 10 * tol


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_products_in_float32_cpu(dtype):
    check(dtype, "cpu", 1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_products_in_float32_cuda(dtype):
    check(dtype, "cuda", 1e-4)
