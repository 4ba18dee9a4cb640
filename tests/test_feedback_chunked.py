"""The linear-memory feedback solves against the dense T x T reference (feedback_dense, float64): the chunked
PyTorch version's output and all four gradients over sequence lengths that are and are not multiples of the
chunk, gains near +-gamma_max, peaked and flat routing and exact zeros in gamma; torch.autograd.gradcheck;
a dispatch-mode check that no T x T tensor is ever created (and that the same check catches the dense
version); the impl dispatch; and, where Triton is installed, the Triton kernels run by its CPU interpreter,
single-level and two-level (block_rows), their strip kernels also in tiles other than the chunk (strip_tile)."""

import functools
import json
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from sessa_bench.models import kernels
from sessa_bench.models.kernels.feedback_chunked import feedback_chunked
from sessa_bench.models.kernels.feedback_dense import feedback_dense
from triton_interpreter import patch_interpreter, run_interpreted

GAMMA_MAX = 0.999


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Thousands of tiny ops: with threads on a shared 2-core box each op waits on the others; one is faster.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def draw(B, T, D, regime="peaked", dtype=torch.float64, seed=0):
    """Fresh inputs. peaked: large logits, near one-hot routing; flat: near-uniform routing. Gains sit near
    +-GAMMA_MAX (tanh of a wide normal), where the solve is least contractive."""
    gen = torch.Generator().manual_seed(seed)
    f, q, k = (torch.randn(B, T, D, generator=gen, dtype=torch.float64) for _ in range(3))
    q = q * {"peaked": 4.0, "flat": 0.01}[regime]
    gamma = GAMMA_MAX * torch.tanh(4.0 * torch.randn(B, T, generator=gen, dtype=torch.float64))
    return [x.to(dtype) for x in (f, q, k, gamma)]


def run(fn, inputs, ds):
    """s and (df, dq_b, dk_b, dgamma) for the loss <s, ds>."""
    xs = [x.detach().clone().requires_grad_() for x in inputs]
    s = fn(*xs)
    return [s.detach(), *torch.autograd.grad(s, xs, ds.to(s.dtype))]


def rel(a, b):
    # The floor keeps analytically zero gradients (dq_b, dk_b at T <= 2, where every softmax is over one
    # entry) from dividing rounding noise by zero; every input is O(1), so 1e-3 is far below any real norm.
    return float((a.double() - b).norm() / max(float(b.norm()), 1e-3))


NAMES = ("s", "df", "dq_b", "dk_b", "dgamma")


@pytest.mark.parametrize("regime", ["peaked", "flat"])
@pytest.mark.parametrize("T", [1, 2, 5, 37, 100])
@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
def test_chunked_matches_dense_float64(T, chunk, regime):
    inputs = draw(2, T, 6, regime, seed=T * 100 + chunk)
    ds = torch.randn(2, T, 6, dtype=torch.float64)
    ref = run(feedback_dense, inputs, ds)
    out = run(lambda *x: feedback_chunked(*x, chunk=chunk), inputs, ds)
    for name, a, b in zip(NAMES, out, ref):
        assert a.dtype == torch.float64
        assert rel(a, b) <= 1e-10, (name, rel(a, b))


@pytest.mark.parametrize("T,chunk", [(37, 16), (100, 64), (100, 7)])
def test_chunked_float32_matches_dense_float64(T, chunk):
    inputs = draw(2, T, 6, "peaked", seed=T + chunk)
    ds = torch.randn(2, T, 6, dtype=torch.float64)
    ref = run(feedback_dense, inputs, ds)
    out = run(lambda *x: feedback_chunked(*x, chunk=chunk), [x.float() for x in inputs], ds)
    for name, a, b in zip(NAMES, out, ref):
        assert a.dtype == torch.float32
        assert rel(a, b) <= 1e-4, (name, rel(a, b))


def test_chunked_gamma_zero_gradient():
    """dgamma where gamma is exactly 0 (the direct form u . alpha s, not (s - f) . u / gamma)."""
    f, q, k, gamma = draw(2, 20, 5, "flat", seed=3)
    gamma[:, ::3] = 0.0
    ds = torch.randn(2, 20, 5, dtype=torch.float64)
    ref = run(feedback_dense, (f, q, k, gamma), ds)
    out = run(lambda *x: feedback_chunked(*x, chunk=4), (f, q, k, gamma), ds)
    assert torch.isfinite(out[4]).all()
    assert rel(out[4], ref[4]) <= 1e-10
    assert out[4][:, ::3].abs().max() > 1e-3  # the zero-gain positions still get a real gradient


@pytest.mark.parametrize("T,chunk", [(6, 4), (5, 1), (4, 8)])
def test_chunked_gradcheck(T, chunk):
    f, q, k, gamma = draw(1, T, 3, "peaked", seed=T)
    xs = [x.requires_grad_() for x in (f, q * 0.5, k, gamma * 0.9)]
    assert torch.autograd.gradcheck(lambda *x: feedback_chunked(*x, chunk=chunk), xs, eps=1e-6, atol=1e-8)


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def largest_tensor(fn, B, T, D):
    f, q, k, gamma = draw(B, T, D, "flat", dtype=torch.float32, seed=1)
    xs = [x.requires_grad_() for x in (f, q, k, gamma)]
    with LargestTensor() as mode:
        s = fn(*xs)
        s.backward(torch.ones_like(s))
    assert all(torch.isfinite(x.grad).all() for x in xs)
    return mode.largest


def test_chunked_never_builds_t_by_t():
    T, C = 2048, 16
    largest = largest_tensor(lambda *x: feedback_chunked(*x, chunk=C), 1, T, 8)
    assert largest <= C * T, largest  # one (C, T) strip of logits is the biggest thing, forward and backward


def test_largest_tensor_check_catches_dense():
    T = 64
    assert largest_tensor(feedback_dense, 1, T, 8) >= T * T


def test_bad_inputs_raise():
    f, q, k, gamma = draw(1, 5, 4)
    with pytest.raises(ValueError, match="chunk"):
        feedback_chunked(f, q, k, gamma, chunk=0)
    with pytest.raises(ValueError, match="q_b"):
        feedback_chunked(f, q[:, :4], k, gamma)
    with pytest.raises(ValueError, match="gamma"):
        feedback_chunked(f, q, k, gamma[..., None])
    with pytest.raises(ValueError, match="impl"):
        kernels.feedback(f, q, k, gamma, impl="fast")


def test_dispatch():
    short, long = torch.zeros(1, kernels.AUTO_DENSE_MAX_T, 2), torch.zeros(1, kernels.AUTO_DENSE_MAX_T + 1, 2)
    assert kernels.resolve_impl("auto", short) == "dense"
    assert kernels.resolve_impl("auto", long) == "chunked"
    assert kernels.resolve_impl("triton", short) == "triton"
    f, q, k, gamma = draw(2, 30, 4, seed=5)
    ref = feedback_dense(f, q, k, gamma)
    assert rel(kernels.feedback(f, q, k, gamma, impl="chunked"), ref) <= 1e-12
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA|triton"):
            kernels.feedback(f, q, k, gamma, impl="triton")


# --- the Triton kernels under TRITON_INTERPRET=1 -----------------------------------------------------------
# Triton reads TRITON_INTERPRET when it is imported and again at each launch, so the interpreted runs happen
# in a child process that has it from the start (this file run as a script, see the bottom); the tests here
# check what it reports. The interpreter runs programs one after another in launch order, so it checks the
# arithmetic and indexing of the kernels, not their behaviour under real concurrency (test_gpu_feedback.py).

INTERPRETED = {  # name -> (B, T, D, chunk, block_d, regime, strip_elems)
    **{f"T{T}-D{D}-C{C}-{r}": (2, T, D, C, None, r, None)
       for T, D, C in [(1, 8, 16), (5, 8, 16), (37, 20, 16), (70, 33, 32), (50, 16, 16)] for r in ("peaked", "flat")},
    "D40-three-d-tiles": (1, 45, 40, 16, 16, "peaked", None),  # each solve program owns one 16-wide D tile
    "several-dl-strips": (2, 40, 8, 16, None, "flat", 1),     # dq, dk from one-chunk row strips of dl
}

# The two-level solve (block_rows): name -> (B, T, D, chunk, block_d, regime, block_rows, zero_gamma). T is
# and is not a multiple of the chunk and of the block; 5 fits in one block (no strip at all).
TWO_LEVEL = {
    **{f"T{T}-C16-R32-{r}": (2, T, 8, 16, None, r, 32, False) for T in (5, 37, 70, 100) for r in ("peaked", "flat")},
    "T50-R16-one-chunk-blocks": (2, 50, 8, 16, None, "peaked", 16, False),  # no within-block pairs at all
    "T70-D33-C32-R64": (2, 70, 33, 32, None, "flat", 64, False),
    "T45-D40-R32-three-d-tiles": (1, 45, 40, 16, 16, "peaked", 32, False),
    "T70-R32-zero-gains": (2, 70, 8, 16, None, "flat", 32, True),           # gamma = 0 at every third row
}


TWO_LEVEL_HALF = ("T70-C16-R32-flat", "T100-C16-R32-peaked")  # also in float16: 3 and 4 blocks

# The strip kernels (alpha's strips, dl) in tiles other than the chunk (strip_tile): name -> (B, T, D, chunk,
# block_rows, strip_tile, regime, strip_elems). Tiles larger than the chunk, blocks and widths that are not
# multiples of the tile (R = 48 against 64: padded strip rows, masked columns), T not a multiple of either,
# the single level (dl only), dl in strips of one tile (strip_elems 1), and 128 (the tile `make bench` times).
STRIP_TILED = {
    "T100-C16-R32-S32": (2, 100, 8, 16, 32, 32, "peaked", None),
    "T70-C16-R48-S64": (2, 70, 8, 16, 48, 64, "flat", None),
    "T37-C16-single-S32": (2, 37, 8, 16, None, 32, "peaked", None),
    "T70-C16-R32-S32-dl-strips": (2, 70, 8, 16, 32, 32, "flat", 1),
    "T150-C32-R64-S128": (1, 150, 8, 32, 64, 128, "peaked", None),
}

# strip_diag: the two-level wavefronts read each block's own alpha tiles from its strip: name -> (B, T, D,
# chunk, block_rows, strip_tile, regime, zero_gamma). Blocks of one and of several chunks, a last block cut
# short by T, strip tiles smaller, equal and larger than the chunk, zero gains.
STRIP_DIAG = {
    "T100-C16-R32": (2, 100, 8, 16, 32, None, "peaked", False),
    "T70-C16-R48-S32": (2, 70, 8, 16, 48, 32, "flat", False),
    "T50-C16-R16-one-chunk-blocks": (2, 50, 8, 16, 16, None, "peaked", False),
    "T150-C32-R64-S128": (1, 150, 8, 32, 64, 128, "flat", False),
    "T90-C32-R64-S16": (2, 90, 8, 32, 64, 16, "peaked", False),
    "T70-C16-R32-zero-gains": (2, 70, 8, 16, 32, None, "flat", True),
}

# dense_blocks: each block inverted whole by block doubling (no wavefront), same fields as STRIP_DIAG. Blocks
# of one chunk (no doubling), of 2, 3 (padded to 4) and 4 chunks, T shorter than one block, the last block and
# chunk cut short by T, strip tiles other than the chunk, zero gains; T a whole number of blocks (every block's
# alpha and W_R at once, _diag_inverses), with blocks of 2 chunks and of 3 (padded), a tile wider than a block.
DENSE_BLOCKS = {
    "T100-C16-R32": (2, 100, 8, 16, 32, None, "peaked", False),
    "T70-C16-R48-S32": (2, 70, 8, 16, 48, 32, "flat", False),
    "T50-C16-R16-one-chunk-blocks": (2, 50, 8, 16, 16, None, "peaked", False),
    "T150-C32-R128-S64": (1, 150, 8, 32, 128, 64, "flat", False),
    "T40-C16-R64-one-block": (2, 40, 8, 16, 64, None, "peaked", False),
    "T70-C16-R32-zero-gains": (2, 70, 8, 16, 32, None, "flat", True),
    "T128-C16-R32-whole-blocks": (2, 128, 8, 16, 32, None, "peaked", False),
    "T96-C16-R48-S128-whole-padded-blocks": (2, 96, 8, 16, 48, 128, "flat", False),
}


def half_inputs(inputs) -> list:
    """f, q_b, k_b in float16 (the interpreter cannot compute in bfloat16), gamma in float32."""
    return [x.half() for x in inputs[:3]] + [inputs[3].float()]


def against_dense(kernel, inputs, ds_seed: int, half: bool = False, f32_f: bool = False):
    """kernel's s and gradients (its inputs float32, or f, q_b, k_b float16 with `half`, f kept float32 with
    `f32_f` too) and their errors against the float64 dense solve of the same float64 inputs; in float32, an
    output of another dtype counts as an infinite error."""
    f = inputs[0]
    ds = torch.randn(*f.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(ds_seed))
    ref = run(feedback_dense, inputs, ds)
    cast = half_inputs(inputs) if half else [x.float() for x in inputs]
    if f32_f:
        cast[0] = inputs[0].float()
    out = run(kernel, cast, ds)
    return out, {n: rel(a, b) if half or a.dtype == torch.float32 else float("inf")
                 for n, a, b in zip(NAMES, out, ref)}


def strip_in_place(ft) -> dict:
    """One strip of alpha by _strip in tiles wider than its width (48 columns, tiles of 32: the last column
    tile half outside): against alpha from the float64 dense softmax, and whether the kernel wrote anything
    past the strip in a NaN-filled scratch (1.0: it did; a row's overhang would land in the next row, or past
    the last one)."""
    B, T, D, chunk = 2, 90, 8, 16
    _, q, k, gamma = (x.float() for x in draw(B, T, D, "flat", seed=5))
    cfg = ft._Config(torch.float32, D, chunk, None, None, strip_tile=32)
    lse, _, _ = ft._prep(q, k, gamma, cfg)
    scratch = torch.full((B * 96 * 96,), float("nan"))
    r0, r1, c0, c1 = 64, 90, 16, 64                      # rows 64-89 against columns 16-63
    got = ft._strip(q, k, lse, r0, r1, c0, c1, scratch, cfg)
    logits = (q.double() @ k.double().transpose(1, 2)) / D ** 0.5
    logits = logits.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(-1), float("-inf"))
    alpha = torch.nan_to_num(logits.softmax(-1))[:, r0:r1, c0:c1]
    used = B * 32 * (c1 - c0)                             # its 26 rows fill one row tile of 32
    return {"alpha": rel(got, alpha), "wrote_past": float(not scratch[used:].isnan().all())}


# The lse pass in pieces (_lse_part_kernel, combined by _prep_kernel): name -> (T, chunk, strip_tile, LSE_PIECE,
# LSE_PIECES). One piece a row tile; one tile a piece; pieces capped (longer pieces than LSE_PIECE); a cap that
# does not divide the tiles (the piece _prep passes, cdiv(tiles, pieces), below LSE_PIECE); more than the 16 pieces
# _prep_kernel reads at once; T not a multiple of the tile or the chunk.
LSE_PIECES = {"T90-C16-S32-one-piece": (90, 16, 32, 4, 32), "T90-C16-S32-one-tile": (90, 16, 32, 1, 32),
              "T90-C16-S32-capped": (90, 16, 32, 1, 2), "T200-C16-S16-capped": (200, 16, 16, 1, 4),
              "T144-C16-S16-uneven": (144, 16, 16, 4, 32), "T300-C32-S16-many": (300, 32, 16, 1, 32)}


def lse_pieces(ft) -> dict:
    """_prep's lse and each chunk's alpha_cc against the float64 softmax, for every LSE_PIECES case (row 0 has
    no past: its lse is any finite number, its alpha row 0)."""
    errors, saved = {}, (ft.LSE_PIECE, ft.LSE_PIECES)
    for name, (T, chunk, tile, piece, pieces) in LSE_PIECES.items():
        ft.LSE_PIECE, ft.LSE_PIECES = piece, pieces
        _, q, k, gamma = (x.float() for x in draw(2, T, 8, "flat", seed=T + tile))
        lse, _, A = ft._prep(q, k, gamma, ft._Config(torch.float32, 8, chunk, None, None, strip_tile=tile))
        logits = (q.double() @ k.double().transpose(1, 2)) / 8 ** 0.5
        logits = logits.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(-1), float("-inf"))
        n = A.shape[1] * chunk
        alpha = F.pad(torch.nan_to_num(logits.softmax(-1)), (0, n - T, 0, n - T))
        blocks = torch.stack([alpha[:, c:c + chunk, c:c + chunk] for c in range(0, n, chunk)], 1)
        errors["lse-pieces-" + name] = {"lse": rel(lse[:, 1:], logits.logsumexp(-1)[:, 1:]),
                                        "alpha_cc": rel(A, blocks), "finite": float(not lse.isfinite().all())}
    ft.LSE_PIECE, ft.LSE_PIECES = saved
    return errors


def interpreted_errors() -> dict:
    """Run in the child: the Triton kernels in float32 against the dense float64 reference."""
    patch_interpreter()
    from sessa_bench.models.kernels import feedback_triton as ft

    errors = {}
    for name, (B, T, D, chunk, block_d, regime, strip) in INTERPRETED.items():
        ft.STRIP_ELEMS = strip or (1 << 25)
        inputs = draw(B, T, D, regime, seed=T * D + chunk)
        ds = torch.randn(B, T, D, dtype=torch.float64, generator=torch.Generator().manual_seed(T))
        ref = run(feedback_dense, inputs, ds)
        out = run(lambda *x: ft.feedback_triton(*x, chunk=chunk, block_d=block_d), [x.float() for x in inputs], ds)
        errors[name] = {n: rel(a, b) if a.dtype == torch.float32 else float("inf") for n, a, b in zip(NAMES, out, ref)}
    ft.STRIP_ELEMS = 1 << 25
    errors["strip-in-place"] = strip_in_place(ft)
    errors.update(lse_pieces(ft))
    for name, (B, T, D, chunk, block_d, regime, block_rows, zero_gamma) in TWO_LEVEL.items():
        f, q, k, gamma = draw(B, T, D, regime, seed=T * D + block_rows)
        if zero_gamma:
            gamma[:, ::3] = 0.0
        out, errors["two-level-" + name] = against_dense(
            lambda *x: ft.feedback_triton(*x, chunk=chunk, block_d=block_d, block_rows=block_rows),
            (f, q, k, gamma), T + 1)
        if zero_gamma:  # the zero-gain rows still get a real dgamma (u . h, with h's strip part included);
            # 0 when they do, 1 (above every tolerance) when they do not
            errors["two-level-" + name]["dgamma_at_zero_gain"] = 1.0 - float(out[4][:, ::3].abs().max() > 1e-3)
    # Half precision (float16: the interpreter cannot compute in bfloat16): the path where the wavefronts also
    # store s and gamma u in q's dtype for the strip products (STORE_LP), which float32 skips in the forward.
    for name in TWO_LEVEL_HALF:
        B, T, D, chunk, block_d, regime, block_rows, _ = TWO_LEVEL[name]
        _, errors["two-level-half-" + name] = against_dense(
            lambda *x: ft.feedback_triton(*x, chunk=chunk, block_d=block_d, block_rows=block_rows),
            draw(B, T, D, regime, seed=T * D + block_rows), T + 1, half=True)
    for name, (B, T, D, chunk, block_rows, tile, regime, strip) in STRIP_TILED.items():
        ft.STRIP_ELEMS = strip or (1 << 25)
        _, errors["strip-tile-" + name] = against_dense(
            lambda *x: ft.feedback_triton(*x, chunk=chunk, block_rows=block_rows, strip_tile=tile),
            draw(B, T, D, regime, seed=T * D + tile), T + 2)
    ft.STRIP_ELEMS = 1 << 25
    # strip_diag and dense_blocks over their cases (the same fields), two of each also in float16: the strips,
    # the tiles and the block products read in half precision
    for prefix, cases, option, offset, halves in (
            ("strip-diag-", STRIP_DIAG, {"strip_diag": True}, 1, ("T100-C16-R32", "T70-C16-R48-S32")),
            ("dense-blocks-", DENSE_BLOCKS, {"dense_blocks": True}, 2, ("T100-C16-R32", "T150-C32-R128-S64"))):
        for name, (B, T, D, chunk, block_rows, tile, regime, zero_gamma) in cases.items():
            f, q, k, gamma = draw(B, T, D, regime, seed=T * D + block_rows + offset)
            if zero_gamma:
                gamma[:, ::3] = 0.0
            solve = functools.partial(ft.feedback_triton, chunk=chunk, block_rows=block_rows, strip_tile=tile, **option)
            _, errors[prefix + name] = against_dense(solve, (f, q, k, gamma), T + 2 + offset)
            if name in halves:
                _, errors[prefix + "half-" + name] = against_dense(solve, (f, q, k, gamma), T + 2 + offset, half=True)
            if option.get("dense_blocks") and name == halves[0]:  # f float32 beside half q_b, k_b: s kept apart
                out, errors[prefix + "half-qk-" + name] = against_dense(solve, (f, q, k, gamma), T + 2 + offset,
                                                                       half=True, f32_f=True)
                # 0 when s carries float32 digits (not all of it is a float16 number), 1 when it went through half
                errors[prefix + "half-qk-" + name]["s_kept_float32"] = 1.0 - float(
                    out[0].dtype == torch.float32 and bool((out[0] != out[0].half().float()).any()))
    # The blocks' own alpha and W_R all at once (T a whole number of blocks) against block by block: bit for bit
    for T, R, tile in ((128, 32, None), (96, 48, 128)):
        f, q, k, gamma = half_inputs(draw(2, T, 8, "peaked", seed=T))
        cfg = ft._Config(torch.float16, 8, 16, None, None, strip_tile=tile, dense_blocks=True)
        lse, W, _ = ft._prep(q, k, gamma, cfg)
        together, each = (fn(q, k, gamma, lse, W, cfg, R) for fn in (ft._diag_inverses, ft._diag_inverses_each))
        errors[f"diag-inverses-T{T}-R{R}"] = {
            "blocks": float(any(x.shape != (2, T, R) for x in (*together, *each))),
            "equal": float(not all(map(torch.equal, together, each)))}
    # A forward without a backward (need_h=False: inference, prefill) computes no h (nor the dense blocks' W_R)
    # and the same s: bit for bit in the wavefronts (two-level, strips read); in the dense blocks, whose
    # right-hand sides then take the gains in the strip (g alpha rounded once where alpha was), within float16
    # rounding of the path with h and of the float64 solve. The dense backward reading the forward's W_R gives
    # the gradients of one inverting again, bit for bit.
    inputs = draw(2, 100, 8, "flat", seed=17)
    f, q, k, gamma = half_inputs(inputs)
    exact = feedback_dense(*inputs)
    for name, option in (("wavefront", {"strip_diag": True}), ("dense", {"dense_blocks": True})):
        settings = dict(block_rows=32, strip_tile=32, **option)
        s, lse, W, h, WR = ft.forward_kernels(f, q, k, gamma, 16, None, None, **settings)
        s0, _, _, h0, WR0 = ft.forward_kernels(f, q, k, gamma, 16, None, None, need_h=False, **settings)
        errors[f"no-h-{name}"] = {"s": float(not torch.equal(s, s0)) if name == "wavefront" else rel(s0, s),
                                  "s_exact": rel(s0, exact), "h_empty": float(h0.numel() != 0),
                                  "h_full": float(h.shape != s.shape), "WR_empty": float(WR0.numel() != 0),
                                  "WR": float(WR.shape != ((2, 100, 32) if name == "dense" else (0,)))}
        if name == "dense":
            ds = torch.randn_like(s)
            kept, again = (ft.backward_kernels(ds, q, k, gamma, lse, W, s, h, x, 16, None, None, **settings)
                           for x in (WR, WR[:0]))
            errors["dense-kept-WR"] = {"grads": float(not all(map(torch.equal, kept, again)))}
    # dgamma's row dot (_rowdot): rows not a multiple of its 16, D not of its 256-wide loads
    gen = torch.Generator().manual_seed(5)
    u, h = (torch.randn(2, 37, 300, generator=gen) for _ in range(2))
    errors["rowdot"] = {"err": rel(ft._rowdot(u, h), (u.double() * h.double()).sum(-1))}
    # _block_inverse's products by _pair_product_kernel against its PyTorch products (the reference): blocks read
    # from a strided strip, chunks that are a power of 2 and not (padded), one chunk (no level at all)
    for n, C, dt in ((64, 16, torch.float32), (48, 16, torch.float16), (128, 32, torch.float16),
                     (16, 16, torch.float32)):
        gen = torch.Generator().manual_seed(n + C)
        a = torch.randn(2, n, n + 8, generator=gen).softmax(-1).tril(-1)[:, :, 3:3 + n].to(dt)
        gains = 0.99 * torch.tanh(3 * torch.randn(2, n, generator=gen))
        w_chunks = 0.3 * torch.randn(2, -(-n // C), C, C, generator=gen)
        want = ft._block_inverse(gains, a, w_chunks, C)
        got = ft._block_inverse(gains, a, w_chunks, C, "ieee")
        errors[f"pair-kernel-n{n}-C{C}-{str(dt)[6:]}"] = {
            "W": rel(got, want.double()), "dtype": float(got.dtype != want.dtype or got.shape != want.shape)}
    # dq, dk from five strips of dl against one strip, float16 inputs: dk's sum over the strips is kept in float32
    # (each strip's part rounded to float16 the sums did not agree); dq's rows are each one product, rounded
    # once to q's dtype by the product itself, so only their rounding can differ.
    f, q, k, gamma = draw(2, 70, 8, "peaked", seed=13)
    q, k, gamma = q.half(), k.half(), gamma.float()
    s, lse, *_ = ft.forward_kernels(f.half(), q, k, gamma, 16, None, None)
    gen = torch.Generator().manual_seed(14)
    u, delta = torch.randn(2, 70, 8, generator=gen), torch.randn(2, 70, generator=gen)
    grads = []
    for strip in (1 << 25, 1):  # one strip of all rows; strips of one chunk each
        ft.STRIP_ELEMS = strip
        grads.append(ft._qk_grads(q, k, u, s, gamma, lse, delta, ft._Config(torch.float16, 8, 16, None, None)))
    ft.STRIP_ELEMS = 1 << 25
    errors["dl-strips-half"] = {n: rel(a, b.double()) for n, a, b in zip(("dq", "dk"), grads[1], grads[0])}
    errors["dl-strips-half"]["dtypes"] = float([x.dtype for x in grads[1]] != [torch.float16, torch.float32])
    # dl reading gamma u as the dense adjoint holds it (v, in q's dtype) against reading u (float32): float32
    # alike to rounding; float16 within the rounding of gamma u against that of u
    for dt in (torch.float32, torch.float16):
        qd, kd, sd = (x.to(dt) for x in (q, k, s))
        cfg = ft._Config(dt, 8, 16, None, None)
        by_u, by_v = (ft._qk_grads(qd, kd, u, sd, gamma, lse, delta, cfg, v)
                      for v in (None, (gamma[..., None] * u).to(dt)))
        errors[f"dl-scaled-{str(dt)[6:]}"] = {n: rel(a, b.double()) for n, a, b in zip(("dq", "dk"), by_v, by_u)}
    # block_rows >= T is one block: the very same launches as block_rows=None, so equal bit for bit.
    inputs = [x.float() for x in draw(2, 37, 8, "peaked", seed=11)]
    ds = torch.randn(2, 37, 8, dtype=torch.float64)
    single = run(lambda *x: ft.feedback_triton(*x, chunk=16), inputs, ds)
    for block_rows in (48, 64, 4096):
        out = run(lambda *x: ft.feedback_triton(*x, chunk=16, block_rows=block_rows), inputs, ds)
        errors[f"one-block-R{block_rows}"] = {n: float(not torch.equal(a, b)) for n, a, b in zip(NAMES, out, single)}
    return errors


@pytest.fixture(scope="module")
def interpreted():
    return run_interpreted(__file__)


@pytest.mark.parametrize("case", list(INTERPRETED))
def test_triton_interpreted_float32(interpreted, case):
    for name, err in interpreted[case].items():
        assert err <= 1e-4, (case, name, err)


# the two-level solve, its strips in other tiles (strip_tile) and its wavefronts reading alpha from the strips
# (strip_diag): every output and gradient within float32 rounding of the float64 dense solve
@pytest.mark.parametrize("case", [f"two-level-{c}" for c in TWO_LEVEL] + [f"strip-tile-{c}" for c in STRIP_TILED]
                         + [f"strip-diag-{c}" for c in STRIP_DIAG] + [f"dense-blocks-{c}" for c in DENSE_BLOCKS])
def test_triton_two_level_variants_interpreted_float32(interpreted, case):
    errors = interpreted[case]
    assert set(NAMES) <= set(errors)
    for name, err in errors.items():
        assert err <= 1e-4, (case, name, err)


@pytest.mark.parametrize("case", list(LSE_PIECES))
def test_triton_lse_in_pieces_is_the_logsumexp(interpreted, case):
    for name, err in interpreted["lse-pieces-" + case].items():
        assert err <= 1e-6, (case, name, err)


def test_triton_strip_stays_inside_its_strip(interpreted):
    errors = interpreted["strip-in-place"]
    assert errors["wrote_past"] == 0.0
    assert errors["alpha"] <= 1e-5


@pytest.mark.parametrize("case", ["T100-C16-R32", "T70-C16-R48-S32"])
def test_triton_strip_diag_interpreted_float16(interpreted, case):
    for name, err in interpreted["strip-diag-half-" + case].items():
        assert err <= 3e-3, (case, name, err)


@pytest.mark.parametrize("case", ["T128-R32", "T96-R48"])
def test_triton_dense_blocks_all_at_once_equal_block_by_block(interpreted, case):
    assert interpreted[f"diag-inverses-{case}"] == {"blocks": 0.0, "equal": 0.0}


@pytest.mark.parametrize("name", ["wavefront", "dense"])
def test_triton_forward_without_backward_skips_h(interpreted, name):
    """need_h False: no h and no W_R, and the same s (the dense blocks': within float16 rounding, their gains
    taken into the strip); need_h True: h, and W_R only for the dense blocks."""
    errors = dict(interpreted[f"no-h-{name}"])
    assert errors.pop("s") <= (0.0 if name == "wavefront" else 1e-3), interpreted[f"no-h-{name}"]
    assert errors.pop("s_exact") <= 1e-3, interpreted[f"no-h-{name}"]
    assert errors == {"h_empty": 0.0, "h_full": 0.0, "WR_empty": 0.0, "WR": 0.0}


def test_triton_rowdot_is_the_row_sum_of_products(interpreted):
    """dgamma's one-pass row dot against the float64 sum of u * h, at a shape its tiles do not divide."""
    assert interpreted["rowdot"]["err"] <= 1e-6, interpreted["rowdot"]


def test_triton_dense_backward_reads_the_forwards_block_inverses(interpreted):
    """The dense blocks' backward on the forward's W_R gives the gradients of one that inverts the blocks again."""
    assert interpreted["dense-kept-WR"] == {"grads": 0.0}


@pytest.mark.parametrize("case", ["n64-C16-float32", "n48-C16-float16", "n128-C32-float16", "n16-C16-float32"])
def test_triton_pair_kernel_matches_the_pytorch_doubling(interpreted, case):
    """The dense blocks' doubling by _pair_product_kernel (the blocks read and written where they lie) against
    the same doubling through PyTorch: the same roundings, so float32 and float16 agree to their last bits."""
    errors = interpreted["pair-kernel-" + case]
    assert errors["dtype"] == 0.0
    assert errors["W"] <= (1e-6 if "float32" in case else 1e-3), errors


@pytest.mark.parametrize("case", ["T100-C16-R32", "T150-C32-R128-S64"])
def test_triton_dense_blocks_interpreted_float16(interpreted, case):
    """float16 inputs: W_R, the right-hand sides and the strips in half precision for the products, float32
    sums (bf16 on the GPU: scripts/block_inverse_numerics.py measured 1.4e-3-2.0e-3 at T = 4096)."""
    errors = interpreted["dense-blocks-half-" + case]
    assert set(errors) == set(NAMES)
    for name, err in errors.items():
        assert err <= 3e-3, (case, name, err)


def test_triton_dense_blocks_interpreted_float32_f_half_qk(interpreted):
    """f in float32 beside float16 q_b, k_b: the dense solve keeps a float32 s apart from the half copy the
    strip products read, and returns s in f's dtype."""
    errors = interpreted["dense-blocks-half-qk-T100-C16-R32"]
    assert set(errors) == set(NAMES) | {"s_kept_float32"}
    for name, err in errors.items():
        assert err <= 3e-3, name


def test_triton_dense_blocks_need_block_rows():
    from sessa_bench.models.kernels.feedback_triton_op import feedback_op
    f, q, k, gamma = draw(1, 5, 4, dtype=torch.float32)
    with pytest.raises(ValueError, match="dense_blocks=True needs block_rows"):
        feedback_op(f, q, k, gamma, chunk=16, dense_blocks=True)


@pytest.mark.parametrize("case", TWO_LEVEL_HALF)
def test_triton_two_level_interpreted_float16(interpreted, case):
    """float16 inputs against the float64 reference: the half-precision copies of s and gamma u that the
    strip products read are stored by the wavefront kernels themselves (0.0003-0.0006 measured here)."""
    errors = interpreted["two-level-half-" + case]
    assert set(errors) == set(NAMES)
    for name, err in errors.items():
        assert err <= 3e-3, (case, name, err)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-6), ("float16", 3e-3)])
def test_triton_dl_reads_gamma_u_as_the_dense_adjoint_holds_it(interpreted, dtype, tol):
    for name, err in interpreted[f"dl-scaled-{dtype}"].items():
        assert err <= tol, (dtype, name, err)


def test_triton_dl_strips_sum_in_float32(interpreted):
    """dk summed over strips in float32 (to float32 rounding of one strip's), dq in q's dtype (to its rounding)."""
    errors = interpreted["dl-strips-half"]
    assert errors["dtypes"] == 0.0, errors
    assert errors["dk"] <= 1e-5 and errors["dq"] <= 1e-3, errors


@pytest.mark.parametrize("block_rows", [48, 64, 4096])
def test_triton_two_level_one_block_is_single_level(interpreted, block_rows):
    assert interpreted[f"one-block-R{block_rows}"] == {n: 0.0 for n in NAMES}


def test_triton_strip_tile_must_be_a_listed_power_of_two():
    from sessa_bench.models.kernels.feedback_triton_op import feedback_op
    f, q, k, gamma = draw(1, 5, 4, dtype=torch.float32)
    for bad in (0, 8, 48, 256, 64.0, True):
        with pytest.raises(ValueError, match="strip_tile"):
            feedback_op(f, q, k, gamma, chunk=16, strip_tile=bad)


def test_triton_block_rows_must_be_a_multiple_of_the_chunk():
    from sessa_bench.models.kernels.feedback_triton_op import feedback_op
    f, q, k, gamma = draw(1, 5, 4, dtype=torch.float32)
    for bad in (0, -32, 40, 32.0, True):
        with pytest.raises(ValueError, match="block_rows"):
            feedback_op(f, q, k, gamma, chunk=16, block_rows=bad)


if __name__ == "__main__" and sys.argv[1:] == ["--interpret"]:
    print(json.dumps(interpreted_errors()))
