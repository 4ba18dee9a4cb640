"""scripts/count_dense_glue.py: the bytes the dense-block solve's PyTorch glue moves, on the meta device. Lease 28
timed that glue at ~1.85 ms of a T = 4096 block step; session 35 cut it to ~8 passes over a (B, T, D) float32
tensor in each direction at the shape below (the forward's was 27). The bound fails if a change brings the
float32 temporaries back."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))


def test_dense_glue_stays_within_ten_passes_and_the_module_is_restored():
    import count_dense_glue

    ft = count_dense_glue.ft
    before = (ft._strip, ft.bmm_fp32, ft.baddbmm_fp32)
    B, T, D, R = 2, 1024, 256, 256
    modes = count_dense_glue.count(B, T, D, R)
    assert (ft._strip, ft.bmm_fp32, ft.baddbmm_fp32) == before
    one_pass = B * T * D * 4  # one float32 (B, T, D) tensor
    for where, mode in modes.items():
        glue = count_dense_glue.glue_bytes(mode)
        assert 4 * one_pass < glue <= 10 * one_pass, (where, glue / one_pass)
        assert mode.calls["baddbmm" if "forward" in where else "bmm"] > 0
    assert modes["forward (_solve_dense)"].calls["baddbmm"] == T // R - 1  # h of every block after the first
