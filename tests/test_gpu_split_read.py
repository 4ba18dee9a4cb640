"""GPU parity of the split-KV Triton decode read (models/kernels/split_read_triton.py) against the reduce read
in float64, at the decode benchmark's shapes (`base`, 4096-token context: the Transformer's 12 heads of 66,
Sessa's one 768-wide feedback head), in fp32 and bf16; and CUDA-graph greedy decoding with read="triton"
against the reference sampler (the CPU half runs the kernel in Triton's interpreter: test_split_read.py)."""

import pytest
import torch

from sessa_bench.models.generate import greedy
from sessa_bench.models.masked_read import masked_read
from test_decode_static import make

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
pytest.importorskip("triton")

TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}  # ||a - b|| / ||b||


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("B,H,Hkv,d", [(1, 12, 12, 66), (16, 12, 12, 66), (16, 12, 4, 66), (1, 1, 1, 768)])
def test_split_read_matches_the_reduce_read(dtype, B, H, Hkv, d):
    g = torch.Generator(device="cuda").manual_seed(0)
    L = 4160
    q = torch.randn(B, H, d, device="cuda", generator=g)
    K, V = (torch.randn(B, L, Hkv, d, device="cuda", generator=g) for _ in range(2))
    mask = torch.arange(L, device="cuda") <= 4100
    ref = masked_read(q.double(), K.double(), V.double(), mask, "reduce")
    out = masked_read(q.to(dtype), K.to(dtype), V.to(dtype), mask, "triton")
    assert out.dtype == dtype
    err = ((out.double() - ref).norm() / ref.norm()).item()
    assert err < TOL[dtype], err


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("family", ["sessa", "transformer", "sessa_gqa"])
def test_cuda_graph_greedy_with_the_triton_read(family, compile):
    model = make(family, dtype=torch.float32, device="cuda")
    prompt = torch.randint(0, 17, (4, 7), device="cuda")
    out = greedy(model, prompt, 12, cuda_graph=True, compile=compile, read="triton")
    assert torch.equal(out, model.generate(prompt, 12))
