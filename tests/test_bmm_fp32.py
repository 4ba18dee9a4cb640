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
    # `out`: rows 5..37 of a larger float32 tensor (the dense solve writes a block's rows of (B, T, D) so)
    rows = {name: torch.full((3, 50, 17), 7.0, device=device) for name in ("bmm out", "baddbmm out")}
    results = {"bmm": bmm_fp32(a, b), "baddbmm": baddbmm_fp32(c, a, b),
               "bmm out": bmm_fp32(a, b, out=rows["bmm out"][:, 5:38]),
               "baddbmm out": baddbmm_fp32(c, a, b, out=rows["baddbmm out"][:, 5:38])}
    for name, r in results.items():
        want = exact + (c.double() if name.startswith("baddbmm") else 0)
        assert r.dtype == torch.float32, name
        assert float((r.double() - want).abs().max()) <= tol, name
        # the result is float32, not the operands' dtype rounded out: a half rounding of values ~10 would be ~1e-2
        assert float((r.double() - r.to(dtype).double()).abs().max()) > 10 * tol, name
    # accumulating in place, c the very slice written (the solve's dk over strips): c + a @ b, once
    acc_rows = torch.full((3, 50, 17), 7.0, device=device)
    acc_rows[:, 5:38] = c
    view = acc_rows[:, 5:38]
    baddbmm_fp32(view, a, b, out=view)
    assert float((acc_rows[:, 5:38].double() - (exact + c.double())).abs().max()) <= tol
    assert bool((acc_rows[:, :5] == 7).all() and (acc_rows[:, 38:] == 7).all())
    for name, buf in rows.items():  # written in place, and nowhere else
        assert results[name].data_ptr() == buf[:, 5:38].data_ptr(), name
        assert bool((buf[:, :5] == 7).all() and (buf[:, 38:] == 7).all()), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_products_in_float32_cpu(dtype):
    check(dtype, "cpu", 1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_products_in_float32_cuda(dtype):
    check(dtype, "cuda", 1e-4)
