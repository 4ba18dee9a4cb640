"""split_linear: the halves of one Linear as two contiguous products over a sequence, the same numbers and
gradients as lin(x).chunk(2, -1) (float64), one product at a decoding step."""

import pytest
import torch
from torch import nn

from sessa_bench.models.split_linear import split_linear


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("T", [5, 1])
def test_split_linear_is_the_chunked_product(bias, T):
    torch.manual_seed(0)
    lin = nn.Linear(6, 8, bias=bias).double()
    x = torch.randn(3, T, 6, dtype=torch.float64, requires_grad=True)
    got, want = split_linear(lin, x), lin(x).chunk(2, dim=-1)
    for a, b in zip(got, want):
        assert a.shape == (3, T, 4)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert all(a.is_contiguous() for a in got) == (T > 1)  # a decoding step keeps the one product's views
    dy = [torch.randn(3, T, 4, dtype=torch.float64) for _ in range(2)]
    params = [x, *lin.parameters()]
    g_got = torch.autograd.grad(got, params, dy)
    g_want = torch.autograd.grad(want, params, dy)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
