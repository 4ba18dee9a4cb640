"""GPU parity of the linear-memory feedback solves (run with `make test-gpu`): the Triton kernels and the
chunked PyTorch version on CUDA against the dense float64 reference, for s and every gradient, in float32
(exact dots, and TF32 dots) and bfloat16; bitwise repeatability (a race in the wavefront's flags would show
as run-to-run differences); more programs than fit on the GPU at once (the ticket order must not deadlock);
and peak memory far under one T x T buffer at T = 32768; the same for the two-level solve (block_rows) and its
strip kernels in other tiles (strip_tile)."""

import pytest
import torch

pytest.importorskip("triton")

from sessa_bench.models import kernels  # noqa: E402
from sessa_bench.models.kernels.feedback_chunked import feedback_chunked  # noqa: E402
from sessa_bench.models.kernels.feedback_dense import feedback_dense  # noqa: E402
from sessa_bench.models.kernels.feedback_triton import feedback_triton  # noqa: E402

pytestmark = pytest.mark.gpu
NAMES = ("s", "df", "dq_b", "dk_b", "dgamma")


@pytest.fixture(autouse=True)
def _exact_fp32():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def draw(B, T, D, regime, dtype, seed):
    """Inputs rounded to dtype, so the float64 reference sees exactly what the kernels see."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    f, q, k = (torch.randn(B, T, D, generator=gen, device="cuda") for _ in range(3))
    q = q * {"peaked": 4.0, "flat": 0.01}[regime]
    gamma = 0.999 * torch.tanh(4.0 * torch.randn(B, T, generator=gen, device="cuda"))
    return [x.to(dtype) for x in (f, q, k)] + [gamma]


def run(fn, inputs, ds, dtype=None):
    xs = [(x.to(dtype) if dtype else x).detach().requires_grad_() for x in inputs]
    s = fn(*xs)
    return [s.detach(), *torch.autograd.grad(s, xs, ds.to(s.dtype))]


def rel(a, b):
    return float((a.double() - b).norm() / max(float(b.norm()), 1e-3))


def check(fn, inputs, tol, ref=None):
    ds = torch.randn_like(inputs[0], dtype=torch.float64)
    ref = ref or run(feedback_dense, inputs, ds, torch.float64)
    out = run(fn, inputs, ds)
    for name, a, b, x in zip(NAMES, out, ref, [inputs[0], *inputs]):
        assert a.dtype == x.dtype and torch.isfinite(a).all(), name
        assert rel(a, b) <= tol, (name, rel(a, b))
    return out


SHAPES = [(2, 37, 16, 16), (2, 200, 64, 64), (3, 333, 96, 32), (1, 1000, 768, 64), (2, 129, 200, 32)]


@pytest.mark.parametrize("B,T,D,chunk", SHAPES)
@pytest.mark.parametrize("regime", ["peaked", "flat"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_triton_matches_dense(B, T, D, chunk, regime, dtype, tol):
    inputs = draw(B, T, D, regime, dtype, seed=T + D)
    check(lambda *x: feedback_triton(*x, chunk=chunk), inputs, tol)


TWO_LEVEL_SHAPES = [(2, 200, 64, 64, 128), (3, 333, 96, 32, 64), (1, 1000, 768, 64, 256), (2, 129, 200, 32, 64),
                    (2, 300, 64, 16, 16)]  # (B, T, D, chunk, block_rows): T is not a multiple of the block


@pytest.mark.parametrize("B,T,D,chunk,block_rows", TWO_LEVEL_SHAPES)
@pytest.mark.parametrize("regime", ["peaked", "flat"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_triton_two_level_matches_dense(B, T, D, chunk, block_rows, regime, dtype, tol):
    inputs = draw(B, T, D, regime, dtype, seed=T + D + block_rows)
    check(lambda *x: feedback_triton(*x, chunk=chunk, block_rows=block_rows), inputs, tol)


@pytest.mark.parametrize("B,T,D,chunk,block_rows,strip_tile", [
    (2, 1000, 768, 64, 256, 128), (2, 333, 96, 32, 64, 128), (1, 2100, 384, 64, 1024, 128), (2, 300, 64, 16, None, 64)])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("diag", [False, True], ids=["", "diag"])
def test_triton_strip_tiles_match_dense(B, T, D, chunk, block_rows, strip_tile, dtype, tol, diag):
    """The strip kernels in tiles other than the chunk (8 warps at 128), two-level and single level; with
    strip_diag the wavefronts read their alpha tiles from the strips."""
    inputs = draw(B, T, D, "peaked", dtype, seed=T + strip_tile)
    check(lambda *x: feedback_triton(*x, chunk=chunk, block_rows=block_rows, strip_tile=strip_tile,
                                     strip_diag=diag), inputs, tol)


@pytest.mark.parametrize("B,T,D,chunk,block_rows", [(2, 1000, 768, 64, 256), (1, 2100, 384, 64, 1024),
                                                    (2, 333, 96, 32, 64), (2, 1024, 768, 64, 256),
                                                    (1, 2048, 384, 64, 1024)])
@pytest.mark.parametrize("regime", ["peaked", "flat"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_triton_dense_blocks_match_dense(B, T, D, chunk, block_rows, regime, dtype, tol):
    """dense_blocks: each block inverted whole by block doubling, no wavefront (kernels/NOTES.md); the last
    block and chunk cut short by T, and T a whole number of blocks (every block's W_R in one doubling)."""
    inputs = draw(B, T, D, regime, dtype, seed=T + block_rows)
    check(lambda *x: feedback_triton(*x, chunk=chunk, block_rows=block_rows, strip_tile=128, dense_blocks=True),
          inputs, tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("n", [1024, 960])  # a block of 16 chunks, and one of 15 (padded to 16)
def test_pair_kernel_matches_the_pytorch_doubling(n, dtype, tol):
    """The dense blocks' doubling by _pair_product_kernel against the same doubling through cuBLAS (the
    kernel's reference): one rounding per product in both, their sums in another order."""
    from sessa_bench.models.kernels import feedback_triton as ft

    gen = torch.Generator(device="cuda").manual_seed(n)
    a = torch.randn(2, n, n + 64, generator=gen, device="cuda").softmax(-1).tril(-1)[:, :, 32:32 + n].to(dtype)
    gains = 0.999 * torch.tanh(3 * torch.randn(2, n, generator=gen, device="cuda"))
    w_chunks = 0.3 * torch.randn(2, -(-n // 64), 64, 64, generator=gen, device="cuda")
    want = ft._block_inverse(gains, a, w_chunks, 64)
    got = ft._block_inverse(gains, a, w_chunks, 64, "ieee")
    assert got.dtype == want.dtype and got.shape == want.shape
    assert rel(got, want.double()) <= tol, rel(got, want.double())


@pytest.mark.parametrize("dense", [False, True], ids=["wavefront", "dense"])
def test_forward_without_backward_is_the_same_s(dense):
    """Under no_grad the op skips h (alpha s, only dgamma reads it): the same s, at the bench's shape with the
    mixer's default strips (bit for bit) and with dense blocks (within bf16 rounding: their right-hand sides then
    take the gains into the strip, g alpha rounded once where alpha was)."""
    f, q, k, g = draw(4, 4096, 768, "peaked", torch.bfloat16, seed=10)
    fn = lambda *x: feedback_triton(*x, block_rows=1024, strip_tile=128, strip_diag=True,  # noqa: E731
                                    dense_blocks=dense)
    with_grad = fn(*(x.detach().requires_grad_() for x in (f, q, k, g))).detach()
    with torch.no_grad():
        without = fn(f, q, k, g)
    if dense:
        assert rel(without, with_grad) <= 2e-2, rel(without, with_grad)  # the bf16 tolerance of every GPU test
    else:
        assert torch.equal(without, with_grad)


def test_triton_strip_diag_repeatable_and_many_programs():
    """strip_diag at the bench's shape (B = 4, T = 4096, R = 1024, 128-tiles): bitwise repeatable (the
    wavefronts' waits still order every read) and within bf16 tolerance of the solve in the chunk's tiles."""
    inputs = draw(4, 4096, 768, "peaked", torch.bfloat16, seed=8)
    ds = torch.randn_like(inputs[0])
    fn = lambda *x: feedback_triton(*x, block_rows=1024, strip_tile=128, strip_diag=True)  # noqa: E731
    first = run(fn, inputs, ds)
    for name, a, b in zip(NAMES, run(fn, inputs, ds), first):
        assert torch.equal(a, b), name
    ref = run(lambda *x: feedback_triton(*x, block_rows=1024), inputs, ds)
    for name, a, b in zip(NAMES, first, ref):
        assert rel(a, b.double()) <= 2e-2, (name, rel(a, b.double()))


def test_triton_two_level_zero_gains():
    inputs = draw(2, 700, 128, "flat", torch.bfloat16, seed=4)
    inputs[3][:, ::3] = 0.0
    out = check(lambda *x: feedback_triton(*x, block_rows=128), inputs, 2e-2)
    assert out[4][:, ::3].abs().max() > 1e-3


def test_triton_two_level_repeatable_and_many_programs():
    """Many blocks, each with far more programs than fit at once: tickets restart per block launch."""
    inputs = draw(8, 2048, 768, "peaked", torch.bfloat16, seed=6)
    ds = torch.randn_like(inputs[0])
    fn = lambda *x: feedback_triton(*x, block_d=64, block_rows=512)  # noqa: E731
    first = run(fn, inputs, ds)
    for name, a, b in zip(NAMES, run(fn, inputs, ds), first):
        assert torch.equal(a, b), name
    ref = run(feedback_dense, [x[:1] for x in inputs], ds[:1].double(), torch.float64)
    for name, a, b in zip(NAMES, first, ref):
        assert rel(a[:1], b) <= 2e-2, (name, rel(a[:1], b))


@pytest.mark.parametrize("block_d", [16, 64, 256])
def test_triton_block_d(block_d):
    inputs = draw(2, 300, 160, "peaked", torch.bfloat16, seed=block_d)
    check(lambda *x: feedback_triton(*x, block_d=block_d), inputs, 2e-2)


def test_triton_tf32():
    torch.backends.cuda.matmul.allow_tf32 = True  # the fixture restores it
    inputs = draw(2, 500, 128, "peaked", torch.float32, seed=7)
    check(lambda *x: feedback_triton(*x), inputs, 3e-3)


def test_triton_is_auto_on_cuda():
    inputs = draw(1, 64, 32, "flat", torch.float32, seed=3)
    assert kernels.resolve_impl("auto", inputs[0]) == "triton"
    check(lambda *x: kernels.feedback(*x, impl="auto"), inputs, 1e-4)


def test_triton_repeatable_and_many_programs():
    """3072 solve programs (far more than can be resident): the ticket order must not deadlock, and the
    spin-wait flags must order every read after its write, so two runs agree bit for bit."""
    inputs = draw(8, 2048, 768, "peaked", torch.bfloat16, seed=5)
    ds = torch.randn_like(inputs[0])
    fn = lambda *x: feedback_triton(*x, block_d=64)  # noqa: E731
    first = run(fn, inputs, ds)
    for _ in range(2):
        for name, a, b in zip(NAMES, run(fn, inputs, ds), first):
            assert torch.equal(a, b), name
    ref = run(feedback_dense, [x[:1] for x in inputs], ds[:1].double(), torch.float64)
    for name, a, b in zip(NAMES, first, ref):
        assert rel(a[:1], b) <= 2e-2, (name, rel(a[:1], b))


def test_dq_dk_strips_sum_in_float32(monkeypatch):
    """dk (float32, before the cast to k_b's dtype) from eight strips of dl equals that from one strip to float32
    accuracy: the strip products keep float32 (rounded to bf16 per strip they differed by ~1e-3). dq's rows are
    each one product, rounded once to q's dtype: alike to that rounding."""
    from sessa_bench.models.kernels import feedback_triton as ft

    B, T, D = 2, 2048, 768
    f, q, k, g = draw(B, T, D, "peaked", torch.bfloat16, seed=7)
    cfg = ft._Config(torch.bfloat16, D, 64, None, None)
    s, lse, *_ = ft.forward_kernels(f, q, k, g, 64, None, None)
    gen = torch.Generator(device="cuda").manual_seed(8)
    u = torch.randn(B, T, D, generator=gen, device="cuda")
    delta = torch.randn(B, T, generator=gen, device="cuda")
    grads = {}
    for strips in (1, 8):
        monkeypatch.setattr(ft, "STRIP_ELEMS", B * T * T // strips)
        grads[strips] = ft._qk_grads(q, k, u, s, g.float(), lse, delta, cfg)
    assert [x.dtype for x in grads[8]] == [torch.bfloat16, torch.float32]
    for name, a, b, tol in zip(("dq", "dk"), grads[8], grads[1], (4e-3, 1e-5)):
        assert rel(a, b.double()) <= tol, (name, rel(a, b.double()))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_chunked_on_cuda(dtype, tol):
    inputs = draw(2, 300, 96, "peaked", dtype, seed=9)
    check(lambda *x: feedback_chunked(*x, chunk=64), inputs, tol)


MIXER_DEFAULT = {"block_rows": kernels.DEFAULT_BLOCK_ROWS, "strip_tile": kernels.DEFAULT_STRIP_TILE,
                 "strip_diag": kernels.DEFAULT_STRIP_DIAG,
                 "dense_blocks": kernels.DEFAULT_DENSE_BLOCKS}  # what SessaMixer passes: its blocks inverted whole


@pytest.mark.parametrize("impl,knobs", [("triton", {}), ("triton", {"block_rows": 512}), ("triton", MIXER_DEFAULT),
                                        ("chunked", {})], ids=["single", "r512", "mixer_default", "chunked"])
def test_memory_linear_in_t(impl, knobs):
    T, D = 32768, 64
    inputs = draw(1, T, D, "flat", torch.bfloat16, seed=1)
    xs = [x.requires_grad_() for x in inputs]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    s = kernels.feedback(*xs, impl=impl, **knobs)
    s.backward(torch.ones_like(s))
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    assert peak < T * T * 2 // 4, peak / 2**20  # a quarter of one bf16 T x T matrix
