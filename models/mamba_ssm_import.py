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


@functools.cache
def import_mamba_ssm_kernels():
    """The forward and backward functions behind mamba_ssm's Mamba2 autograd Functions (the chunked scan's
    and the gated RMSNorm's; module-private in mamba-ssm 2.3, which its own Functions call), each adapted to
    the signature sessa_bench's custom ops use (models/mamba_ssm_ops.py), or None. Never raises.

        scan_fwd(x, dt, A, B, C, chunk_size, D, dt_bias, initial_states) -> (y, final_state)
        scan_bwd(dy, dfinal, x, dt, A, B, C, y, chunk_size, D, dt_bias, initial_states)
            -> (dx, ddt, dA, dB, dC, dD, ddt_bias, dinitial_states or None)
        norm_fwd(y, weight, z, eps, group_size) -> (out, rstd)       # 2-D y and z, norm(y * silu(z))
        norm_bwd(dout, y, weight, z, eps, group_size, rstd) -> (dy, dweight, dz)
    """
    if import_mamba_ssm() is None:
        return None
    try:
        from mamba_ssm.ops.triton.layernorm_gated import _layer_norm_bwd, _layer_norm_fwd
        from mamba_ssm.ops.triton.ssd_combined import _mamba_chunk_scan_combined_bwd, _mamba_chunk_scan_combined_fwd
    except Exception:
        return None

    def scan_fwd(x, dt, A, B, C, chunk_size, D, dt_bias, initial_states):
        out = _mamba_chunk_scan_combined_fwd(x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias,
                                             initial_states=initial_states, dt_softplus=True)
        return out[0], out[5]  # (out, out_x, dt, dA_cumsum, states, final_states, ...)

    def scan_bwd(dy, dfinal, x, dt, A, B, C, y, chunk_size, D, dt_bias, initial_states):
        dx, ddt, dA, dB, dC, dD, _, ddt_bias, dinit = _mamba_chunk_scan_combined_bwd(
            dy, x, dt, A, B, C, y, chunk_size, D=D, dt_bias=dt_bias, initial_states=initial_states,
            dfinal_states=dfinal, dt_softplus=True)
        return dx, ddt, dA, dB, dC, dD, ddt_bias, dinit

    def norm_fwd(y, weight, z, eps, group_size):
        out, _, rstd = _layer_norm_fwd(y, weight, None, eps, z=z, group_size=group_size, norm_before_gate=False,
                                       is_rms_norm=True)
        return out, rstd

    def norm_bwd(dout, y, weight, z, eps, group_size, rstd):
        dy, dw, _, dz = _layer_norm_bwd(dout, y, weight, None, eps, None, rstd, z=z, group_size=group_size,
                                        norm_before_gate=False, is_rms_norm=True)
        return dy, dw, dz

    return scan_fwd, scan_bwd, norm_fwd, norm_bwd
