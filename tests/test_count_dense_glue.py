"""scripts/count_dense_glue.py: the bytes the feedback solve's PyTorch glue moves, on the meta device. Lease 28
timed the dense-block solve's glue at ~1.85 ms of a T = 4096 block step; session 35 cut it to ~8 passes over a
(B, T, D) float32 tensor in each direction at the shape below (the forward's was 27; session 36 to ~4), and the
dq, dk strips that follow every adjoint (the default solve's too) to dk's zero fill alone (6 passes before). The
bounds fail if a change brings the float32 temporaries back."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))


def test_feedback_glue_stays_small_and_the_module_is_restored():
    import count_dense_glue

    ft = count_dense_glue.ft
    before = (ft._strip, ft.bmm_fp32, ft.baddbmm_fp32, ft._dl_kernel, ft._pair_products, ft._pair_prec)
    B, T, D, R = 2, 1024, 256, 256
    modes = count_dense_glue.count(B, T, D, R)
    assert (ft._strip, ft.bmm_fp32, ft.baddbmm_fp32, ft._dl_kernel, ft._pair_products, ft._pair_prec) == before
    one_pass = B * T * D * 4  # one float32 (B, T, D) tensor
    glue = {where: count_dense_glue.glue_bytes(mode) for where, mode in modes.items()}
    forward, adjoint, grads = (modes[k] for k in modes)
    # session 40: s's rows rounded by cuBLAS (no float32 result copied in), block 0's right-hand side read in place,
    # the adjoint's ds added in the products' epilogue (no float32 Y): forward ~2.6 passes (was ~4), adjoint ~1.5
    for (where, mode), bound in zip(list(modes.items())[:2], (3, 2)):
        assert bound - 1 < glue[where] / one_pass <= bound, (where, glue[where] / one_pass)
        # the doubling (session 36) forms no N = diag(g) a_bb (a zero fill and a product over every block's R x R)
        # and copies no block out and back: each level is two launches of _pair_product_kernel, which reads the
        # blocks of W and a_bb where they lie, scales N's rows as it loads them and writes W21 in place; with T a
        # whole number of blocks, one doubling serves them all (one zero fill, not one a block)
        assert not mode.calls["zeros_like"] and not mode.calls["clone"], dict(mode.calls)
    levels = (R // 64).bit_length() - 1  # doublings from the 64-row chunks to a block of R rows
    assert forward.calls["pair_product"] == 2 * levels and forward.calls["zeros"] == 1, dict(forward.calls)
    # the adjoint reads the forward's W_R (session 38): no doubling, nor the strip of the blocks' own alpha
    assert not adjoint.calls["pair_product"] and not adjoint.calls["zeros"], dict(adjoint.calls)
    assert forward.calls["baddbmm"] == T // R - 1  # h of every block after the first, through the epilogue
    assert adjoint.calls["bmm"] > 0 and not adjoint.calls["add_"] and not adjoint.calls["add"]
    grads_glue = glue[list(modes)[2]]
    assert grads_glue == one_pass and grads.calls["zeros"] == 1, grads_glue / one_pass  # dk's zero fill only
    assert grads.calls["baddbmm"] == grads.calls["bmm"] >= 1  # dk summed in place, dq written in place
