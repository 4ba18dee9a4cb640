"""scripts/probe_logit_gemms.py on CPU (Triton's interpreter): every row it times runs, at a small shape, so a
GPU lease cannot spend its minutes on a probe that breaks (lease 37-38 ran it twice)."""

from pathlib import Path

from triton_interpreter import run_code_interpreted

ROOT = Path(__file__).resolve().parent.parent

PROBE = r'''
import sys
sys.path[:0] = ["scripts", "tests"]
from triton_interpreter import patch_interpreter
patch_interpreter()
import probe_logit_gemms as probe
ft = probe.ft
piece = ft.LSE_PIECE
rows = probe.probe(1, 256, 16, 128, device="cpu", timer=lambda fn: 1.0)
names = [name for name, *_ in rows]
assert len(names) == len(set(names)) == 12, names
assert sum("lse pass" in n for n in names) == 4 and sum("_qk_grads" in n for n in names) == 2, names
assert ft.LSE_PIECE == piece  # restored after the lse rows
print("ok")
'''


def test_every_row_of_the_probe_runs():
    run_code_interpreted(PROBE, ROOT, timeout=600)
