"""scripts/count_dense_glue.py: the bytes the feedback solve's PyTorch glue moves, on the meta device. Lease 28
timed the dense-block solve's glue at ~1.85 ms of a T = 4096 block step; session 35 cut it to ~8 passes over a
(B, T, D) float32 tensor in each direction at the shape below (the forward's was 27; session 36 to ~6), and the dq, dk strips
that follow every adjoint (the default solve's too) to dk's zero fill alone (6 passes before). The bounds fail
if a change brings the float32 temporaries back."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))


def test_feedback_glue_stays_small_and_the_module_is_restored():
    import count_dense_glue

    ft = count_dense_glue.ft
    before = (ft._strip, ft.bmm_fp32, ft.baddbmm_fp32, ft._dl_kernel)
    B, T, D, R = 2, 1024, 256, 256
    modes = count_dense_glue.count(B, T, D, R)
    assert (ft._strip, ft.bmm_fp32, ft.baddbmm_fp32, ft._dl_kernel) == before
    one_pass = B * T * D * 4  # one float32 (B, T, D) tensor
    glue = {where: count_dense_glue.glue_bytes(mode) for where, mode in modes.items()}
    forward, adjoint, grads = (modes[k] for k in modes)
    for where, mode in list(modes.items())[:2]:
        assert 4 * one_pass < glue[where] <= 7 * one_pass, (where, glue[where] / one_pass)
        # N = diag(g) a_bb is not formed whole (a zero fill and a product over every block's R x R, session 36):
        # its doubling reads each level's blocks from a_bb, scaled into the product's operand (mul), and
        # allocates nothing like it
        assert not mode.calls["zeros_like"] and mode.calls["zeros"] == T // R, dict(mode.calls)
    assert forward.calls["baddbmm"] == T // R - 1  # h of every block after the first, through the epilogue
    assert adjoint.calls["bmm"] > 0 and not adjoint.calls["add_"]
    grads_glue = glue[list(modes)[2]]
    assert grads_glue == one_pass and grads.calls["zeros"] == 1, grads_glue / one_pass  # dk's zero fill only
    assert grads.calls["baddbmm"] == grads.calls["bmm"] >= 1  # dk summed in place, dq written in place
