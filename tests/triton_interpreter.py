"""Triton kernels on the CPU: TRITON_INTERPRET=1 in a child process (Triton reads it when imported and at each
launch), which runs a test file as a script and prints one JSON line of results. The interpreter runs a
kernel's programs one after another, so it checks arithmetic and indexing, not concurrency (the GPU tests do)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest


def _child(args: list, timeout: int, cwd=None) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def run_interpreted(script: str, timeout: int = 300) -> dict:
    """Run `script --interpret` under TRITON_INTERPRET=1; its last stdout line, parsed as JSON."""
    proc = _child([script, "--interpret"], timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_code_interpreted(code: str, cwd, timeout: int = 300) -> None:
    """Run `python -c code` from cwd under TRITON_INTERPRET=1: it must exit 0 with `ok` as its last line."""
    proc = _child(["-c", code], timeout, cwd)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def patch_interpreter() -> None:
    """In the child, before any launch: Triton 3.6's interpreter turns scalars into ints with int(1-element
    array), which numpy >= 2.3 refuses."""
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interpreter._patch_lang_tensor = patch_lang_tensor
