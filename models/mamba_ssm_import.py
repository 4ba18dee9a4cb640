"""Import mamba_ssm's Mamba2 Triton kernels even when the package was built without its CUDA extension.

mamba-ssm 2.3.2's package __init__ imports ops/selective_scan_interface.py, which runs
`import selective_scan_cuda` (the compiled Mamba1 scan) unconditionally. Mamba2's chunked scan and gated
RMSNorm are pure Triton and never call it, so when that extension is missing we register an empty stand-in
module under its name first; only Mamba1 (which we never use) would then fail, at call time.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types

_STANDIN = "selective_scan_cuda"
last_error: str | None = None  # why the last import_mamba_ssm() returned None (for error messages)


@functools.cache
def import_mamba_ssm():
    """(mamba_chunk_scan_combined, rmsnorm_fn) from mamba_ssm.ops.triton, or None. Never raises."""
    global last_error
    try:
        if importlib.util.find_spec("mamba_ssm") is None:
            last_error = "the mamba-ssm package is not installed"
            return None
        added = False
        try:
            importlib.import_module(_STANDIN)
        except Exception:  # missing, or a compiled module that fails to load
            if _STANDIN not in sys.modules:
                sys.modules[_STANDIN] = types.ModuleType(
                    _STANDIN, "Empty stand-in registered by sessa_bench: mamba-ssm was built without it.")
                added = True
        try:
            from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn
            from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
        except Exception:
            if added:  # leave sys.modules as we found it
                sys.modules.pop(_STANDIN, None)
            raise
        last_error = None
        return mamba_chunk_scan_combined, rmsnorm_fn
    except Exception as e:  # the caller decides whether a missing backend is an error
        last_error = f"importing mamba_ssm's Triton ops failed: {type(e).__name__}: {e}"
        return None


@functools.cache
def import_state_update():
    """mamba_ssm's one-token Triton SSM update (selective_state_update), or None. Never raises."""
    if import_mamba_ssm() is None:  # registers the stand-in the package import needs
        return None
    try:
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
        return selective_state_update
    except Exception:
        return None
