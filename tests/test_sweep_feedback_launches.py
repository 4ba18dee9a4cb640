"""scripts/sweep_feedback_launches.py on CPU (Triton's interpreter): every launch setting it times reaches the
kernel it names and computes what the solve's own launch computes, so a GPU lease cannot time a wrong kernel."""

from pathlib import Path

from triton_interpreter import run_code_interpreted

ROOT = Path(__file__).resolve().parent.parent

PROBE = r'''
import sys
sys.path[:0] = ["scripts", "tests"]
import torch
from triton_interpreter import patch_interpreter
patch_interpreter()
import sweep_feedback_launches as sweep
ft = sweep.ft
fns, cfg = sweep.kernels(1, 256, 16, 128, device="cpu")
seen = []
real = ft._launch
ft._launch = lambda kernel, warps: seen.append((kernel, real(kernel, warps))) or real(kernel, warps)
for name, fn in fns.items():
    ref = fn(check=True).float()
    for warps, stages, k_step in sweep.SETTINGS[::3]:
        ft.LAUNCH[sweep.LAUNCH_KEY[name]] = {"num_warps": warps, "num_stages": stages}
        cfg.BK, seen[:] = k_step, []
        out = fn(check=True).float()
        assert torch.allclose(out, ref, rtol=1e-2, atol=1e-3), (name, warps, stages, k_step)
        want = (sweep.LAUNCH_KEY[name], {"num_warps": warps, "num_stages": stages})
        assert seen and all(s == want for s in seen if s[0] == want[0]) and want in seen, (name, seen)
    ft.LAUNCH[sweep.LAUNCH_KEY[name]], cfg.BK = {}, 16
print("ok")
'''


def test_every_setting_reaches_its_kernel_and_matches_the_solves_launch():
    run_code_interpreted(PROBE, ROOT)
