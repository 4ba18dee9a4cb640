"""Every @triton.jit kernel reads only the globals Triton compiles: constexprs (`X = tl.constexpr(...)`), other
jit functions and modules. A plain module constant read inside a kernel compiles under the CPU interpreter
(TRITON_INTERPRET=1, what the CPU suite runs) but not on a GPU: the split read's NEG = -1.0e30 failed all 14 GPU
tests of test_gpu_split_read.py on the H200 (2026-11-30) while every CPU test passed. Checked on the source."""

import ast
from pathlib import Path

import pytest

KERNELS = sorted((Path(__file__).resolve().parent.parent / "models" / "kernels").glob("*.py"))


def _is_jit(dec: ast.expr) -> bool:
    target = dec.func if isinstance(dec, ast.Call) else dec
    return isinstance(target, ast.Attribute) and target.attr == "jit"


def _is_constexpr(value: ast.expr) -> bool:
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr == "constexpr")


def plain_globals_read_in_kernels(source: str) -> list[str]:
    """'kernel: NAME' for each module-level variable that is not a constexpr and is read in a jit function."""
    tree = ast.parse(source)
    plain = set()
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and not _is_constexpr(node.value):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            plain |= {t.id for t in targets if isinstance(t, ast.Name)}
    bad = []
    for fn in tree.body:
        if isinstance(fn, ast.FunctionDef) and any(_is_jit(d) for d in fn.decorator_list):
            local = {a.arg for a in fn.args.args} | {n.id for n in ast.walk(fn)
                                                     if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            bad += sorted({f"{fn.name}: {n.id}" for n in ast.walk(fn) if isinstance(n, ast.Name)
                           and isinstance(n.ctx, ast.Load) and n.id in plain - local})
    return bad


def test_the_check_finds_a_plain_constant_in_a_kernel():
    src = ("import triton\nimport triton.language as tl\nNEG = -1.0e30\nOK = tl.constexpr(1)\n"
           "@triton.jit\ndef k(x_ptr, B: tl.constexpr):\n    y = NEG + OK\n    tl.store(x_ptr, y)\n"
           "def host():\n    return NEG\n")
    assert plain_globals_read_in_kernels(src) == ["k: NEG"]


@pytest.mark.parametrize("path", KERNELS, ids=lambda p: p.name)
def test_kernels_read_only_constexpr_globals(path):
    assert plain_globals_read_in_kernels(path.read_text()) == []
