"""The Mamba2 mixer with mamba_ssm's Mamba2 parameter names and shapes: one state_dict loads in both backends.

    [z, xBC, dt] = in_proj(u)                      xBC = [x, B, C]: d_inner, ngroups*d_state, ngroups*d_state
    x, B, C = SiLU(causal depthwise conv1d(xBC))   kernel d_conv, with bias
    dt = softplus(dt + dt_bias);  A = -exp(A_log)  one (dt, A) per head of `headdim` channels
    y = SSD(x, dt, A, B, C) + D * x                state_t = exp(dt_t A) state_{t-1} + dt_t x_t B_t^T
                                                   y_t = state_t C_t
    out = out_proj(rmsnorm(y * SiLU(z)))           RMS per group of d_inner/ngroups (norm_before_gate=False)

Backends (`backend=`): `torch` (our chunked SSD in models/ssd.py; runs anywhere, the reference), `mamba_ssm`
(the package's Triton kernels mamba_chunk_scan_combined + rmsnorm_fn on our parameters; CUDA only) and
`auto` (mamba_ssm when it imports and the input is on CUDA, else torch). The conv runs in PyTorch in both
(mamba_ssm's fused path would need the causal-conv1d package), or in our Triton kernel with
conv_impl="triton" (models/kernels/causal_conv_triton.py; CUDA only, F.conv1d elsewhere). Decoding keeps
only fixed states: the last d_conv-1 conv inputs and the (nheads, headdim, d_state) SSM state, so a step
costs the same at any context length.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import mamba_ssm_import
from .cache import LayerCache
from .kernels import triton_available, triton_runs_on
from .mixer import Mixer, WidthError
from .ssd import ssd_chunked, ssd_step

BACKENDS = ("auto", "torch", "mamba_ssm")
IN_PROJ_ALIGN = 64    # Mamba2Mixer.in_proj_align: 1.12x a graphed training step at Table 1's shapes on the H200
                      # (results/bench/nvidia-h200-mamba2-speed-ab-graphs.md)
CONV_IMPL = "triton"  # Mamba2Mixer.conv_impl: "triton" (SiLU(conv) fused, one pass each way in in_proj's layout:
                      # 1.45x conv1d's graphed training step at Table 1's shapes on the H200,
                      # results/bench/nvidia-h200-mamba2-speed-ab-conv.md), "conv1d" or "shift" (0.97x)
CONV_IMPLS = ("conv1d", "shift", "triton")


def _positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"mamba2 {name} must be a positive integer, got {v!r}")
    return v


def _f32(t: torch.Tensor) -> torch.Tensor:
    """t in at least float32 (float64 stays float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def resolve_backend(backend: str, x: torch.Tensor, mamba_ssm_available: bool | None = None) -> str:
    """The backend a call on x runs. mamba_ssm_available: the import probe, taken once when the mixer is
    built (None: probe now), so a forward only reads x's device."""
    if backend not in BACKENDS:
        raise ValueError(f"mamba2 backend={backend!r} is not one of {BACKENDS}")
    if backend == "torch":
        return "torch"
    if mamba_ssm_available is None:
        mamba_ssm_available = mamba_ssm_import.import_mamba_ssm() is not None
    ok = x.is_cuda and mamba_ssm_available
    if backend == "mamba_ssm" and not ok:
        why = "the input is not on a CUDA device" if not x.is_cuda else mamba_ssm_import.last_error
        raise RuntimeError(f"mamba2 backend='mamba_ssm' cannot run: {why}. It needs CUDA tensors and the "
                           f"mamba-ssm package (Triton kernels); use backend='torch' or 'auto'")
    return "mamba_ssm" if ok else "torch"


class GatedRMSNorm(nn.Module):
    """rmsnorm(x * silu(z)) * weight, the RMS taken over each group of `group_size` channels: mamba_ssm's
    RMSNormGated with norm_before_gate=False. Computed in at least float32, returned in x's dtype."""

    def __init__(self, dim: int, group_size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.group_size, self.eps = group_size, eps

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        acc = torch.promote_types(x.dtype, torch.float32)
        h = (x.to(acc) * F.silu(z.to(acc))).unflatten(-1, (-1, self.group_size))
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h.flatten(-2) * self.weight.to(acc)).to(x.dtype)


class Mamba2Mixer(Mixer):
    """Mamba2 mixer. `n_heads` is accepted only so every mixer shares the (d_model, n_heads, ...) call and is
    ignored: the number of SSM heads is nheads = expand * d_model // headdim."""

    def __init__(self, d_model: int, n_heads: int | None = None, d_state: int = 64, d_conv: int = 4,
                 expand: int = 2, headdim: int = 32, ngroups: int = 1, chunk_size: int = 64,
                 backend: str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4,
                 A_init_range: tuple[float, float] = (1, 16)):
        super().__init__()
        for name, v in (("d_model", d_model), ("d_state", d_state), ("d_conv", d_conv), ("headdim", headdim),
                        ("ngroups", ngroups), ("chunk_size", chunk_size)):
            _positive_int(name, v)
        if isinstance(expand, bool) or not isinstance(expand, (int, float)) or expand <= 0:
            raise ValueError(f"mamba2 expand must be a positive number, got {expand!r}")
        if float(expand * d_model) != int(expand * d_model):
            raise WidthError(f"mamba2 expand * d_model must be an integer, got {expand!r} * {d_model}")
        d_inner = int(expand * d_model)
        if d_inner % headdim:
            raise WidthError(f"mamba2 d_inner = expand * d_model = {d_inner} must be divisible by "
                             f"headdim={headdim}")
        nheads = d_inner // headdim
        if nheads % ngroups:
            raise WidthError(f"mamba2 nheads = d_inner / headdim = {nheads} must be divisible by "
                             f"ngroups={ngroups}")
        if backend not in BACKENDS:
            raise ValueError(f"mamba2 backend={backend!r} is not one of {BACKENDS}")
        if not (0 < dt_min <= dt_max):
            raise ValueError(f"mamba2 needs 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        if dt_init_floor < 0:
            raise ValueError(f"mamba2 dt_init_floor must be >= 0, got {dt_init_floor}")
        A_init_range = tuple(A_init_range)
        if len(A_init_range) != 2 or not (0 < A_init_range[0] <= A_init_range[1]):
            raise ValueError(f"mamba2 A_init_range must be (low, high) with 0 < low <= high, "
                             f"got {A_init_range}")

        self.d_model, self.d_state, self.d_conv, self.headdim = d_model, d_state, d_conv, headdim
        self.d_inner, self.nheads, self.ngroups, self.chunk_size = d_inner, nheads, ngroups, chunk_size
        self.backend = backend
        # Probes once, at build time (whatever the backend: it may be switched later, and the probe is cached
        # per process): mamba_ssm's chunked scan (training, prefill) and its one-token state update (decoding,
        # used by step_static on CUDA).
        self._mamba_ssm_ok = mamba_ssm_import.import_mamba_ssm() is not None
        self._state_update = mamba_ssm_import.import_state_update() if self._mamba_ssm_ok else None
        self.conv_dim = d_inner + 2 * ngroups * d_state                  # channels of [x, B, C]

        self.in_proj = nn.Linear(d_model, 2 * d_inner + 2 * ngroups * d_state + nheads, bias=False)
        # padding=d_conv-1 mirrors mamba_ssm's module; forward calls F.conv1d itself to stay causal.
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim,
                                padding=d_conv - 1, bias=True)
        # dt log-uniform in [dt_min, dt_max] (floored); dt_bias is its inverse softplus, so that
        # softplus(0 + dt_bias) starts at dt. log(-expm1(-dt)) = log(1 - e^-dt), stable for small dt.
        dt = torch.exp(torch.rand(nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(nheads).uniform_(*A_init_range)))
        self.D = nn.Parameter(torch.ones(nheads))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True  # read by the optimizer's parameter grouping
        self.norm = GatedRMSNorm(d_inner, group_size=d_inner // ngroups)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        # Execution choices of the parallel forward (not config: they change no parameter and compute the
        # same function, so runs with either are the same run). in_proj_align: in_proj's width
        # (2 d_inner + 2 G N + H, 1289 at `small`) is padded with zero rows to a multiple of this for the
        # product (1: not); a bf16 GEMM whose output rows are not 16-byte aligned runs on slow kernels
        # (results/bench/nvidia-h200-profile.md). conv_impl: "conv1d" (F.conv1d on the transposed input),
        # "shift" (the sum of d_conv shifted copies, in the input's layout) or "triton" (conv and SiLU fused,
        # in the input's layout; F.conv1d where Triton cannot run). scripts/mamba2_speed_ab.py measures
        # them; the defaults are what it measured best.
        self.in_proj_align = IN_PROJ_ALIGN
        self.conv_impl = CONV_IMPL
        self._triton_ok = triton_available()  # probed once, here, not in every forward

    def backend_used(self):
        """The SSD backend that ran last, with "+conv_triton" when the parallel forward's conv ran in the
        Triton kernel (runs before it became the default recorded the plain backend: they used conv1d)."""
        used = super().backend_used()
        return f"{used}+conv_triton" if used and getattr(self, "_conv_used", None) == "triton" else used

    # --- pieces ------------------------------------------------------------------------------------
    def _split_xbc(self, xBC: torch.Tensor):
        gn = self.ngroups * self.d_state
        x, B, C = xBC.split([self.d_inner, gn, gn], dim=-1)
        return (x.unflatten(-1, (self.nheads, self.headdim)), B.unflatten(-1, (self.ngroups, self.d_state)),
                C.unflatten(-1, (self.ngroups, self.d_state)))

    def _in_proj(self, u: torch.Tensor) -> torch.Tensor:
        """in_proj(u), its weight padded with zero rows to a multiple of in_proj_align for the product (the
        padded outputs are dropped: a view whose rows stay aligned)."""
        w = self.in_proj.weight
        pad = -w.shape[0] % self.in_proj_align
        if not pad:
            return self.in_proj(u)
        return F.linear(u, F.pad(w, (0, 0, 0, pad)))[..., :w.shape[0]]

    def _conv(self, xBC: torch.Tensor, conv_state: torch.Tensor | None):
        """SiLU(causal depthwise conv) of (B, T, conv_dim), continuing from conv_state (the d_conv-1 inputs
        before this chunk; zeros at the start). Also returns the new conv_state when one was given."""
        k, T = self.d_conv - 1, xBC.shape[1]
        w, b = self.conv1d.weight, self.conv1d.bias
        if conv_state is None and self.conv_impl == "triton" and triton_runs_on(xBC, self._triton_ok):
            from .kernels.causal_conv_triton import conv_silu  # imports Triton: only where it runs
            self._conv_used = "triton"
            return conv_silu(xBC, w[:, 0], b), None
        if conv_state is None:  # what the parallel forward ran (recorded in run summaries: backend_used)
            self._conv_used = "shift" if self.conv_impl == "shift" else "conv1d"
        if conv_state is None and self.conv_impl == "shift":
            # out[t] = b + sum_j w[j] x[t - k + j]: the time axis padded with k zeros in front; weights in
            # the input's dtype, as autocast gives F.conv1d
            xp, wt = F.pad(xBC, (0, 0, k, 0)), w[:, 0].to(xBC.dtype)
            out = b.to(xBC.dtype) + xp[:, :T] * wt[:, 0]
            for j in range(1, k + 1):
                out = out + xp[:, j:j + T] * wt[:, j]
            return F.silu(out), None
        xt = xBC.transpose(1, 2)
        if conv_state is None:
            out = F.conv1d(xt, w, b, padding=k, groups=self.conv_dim)[..., :T]
            return F.silu(out).transpose(1, 2), None
        inp = torch.cat([conv_state.to(xt.dtype), xt], dim=-1)
        out = F.conv1d(inp, w, b, groups=self.conv_dim)
        return F.silu(out).transpose(1, 2), inp[..., inp.shape[-1] - k:]

    def _mix(self, u: torch.Tensor, conv_state=None, ssm_state=None, want_state: bool = False):
        """The parallel forward; returns (out, new conv_state or None, final SSM state or None)."""
        z, xBC, dt = self._in_proj(u).split([self.d_inner, self.conv_dim, self.nheads], dim=-1)
        xBC, conv_state = self._conv(xBC, conv_state)
        x, B, C = self._split_xbc(xBC)
        A = -torch.exp(_f32(self.A_log))  # >= float32: exp of a low-precision A_log may overflow
        backend = resolve_backend(self.backend, u, self._mamba_ssm_ok)
        self._backend_used = backend
        final = None
        if backend == "mamba_ssm" and torch.compiler.is_compiling():
            # The same kernels behind torch custom ops, so the compiled graph has no break (models/mamba_ssm_ops.py).
            from . import mamba_ssm_ops
            y, final = mamba_ssm_ops.mamba_scan(x, dt, A, B, C, self.chunk_size, self.D, self.dt_bias,
                                                ssm_state, want_state)
            final = final if want_state else None
            y = mamba_ssm_ops.mamba_gated_rmsnorm(y.flatten(-2), self.norm.weight, z, self.norm.eps,
                                                  self.norm.group_size)
        elif backend == "mamba_ssm":
            scan, rmsnorm = mamba_ssm_import.import_mamba_ssm()
            y = scan(x, dt, A, B, C, self.chunk_size, D=self.D, dt_bias=self.dt_bias,
                     initial_states=ssm_state, dt_softplus=True, return_final_states=want_state)
            if want_state:
                y, final = y
            y = rmsnorm(y.flatten(-2), self.norm.weight, None, z=z, eps=self.norm.eps,
                        group_size=self.norm.group_size, norm_before_gate=False)
        else:
            dt = F.softplus(_f32(dt) + _f32(self.dt_bias))
            y, final = ssd_chunked(x, dt, A, B, C, self.chunk_size, initial_state=ssm_state)
            y = _f32(y) + _f32(self.D)[:, None] * _f32(x)
            y = self.norm(y.flatten(-2), z).to(u.dtype)
        return self.out_proj(y), conv_state, final

    # --- Mixer interface ---------------------------------------------------------------------------
    def parallel(self, x):
        return self._mix(x)[0]

    def init_cache(self, batch_size, max_len, device=None, dtype=None):
        device = device or self.in_proj.weight.device  # default: where and how the module lives
        dtype = dtype or self.in_proj.weight.dtype
        cache = LayerCache(batch_size, max_len, {},
                           {"conv": (self.conv_dim, self.d_conv - 1),
                            "ssm": (self.nheads, self.headdim, self.d_state)}, device=device, dtype=dtype)
        # The SSM state accumulates over the whole context: keep it in at least float32.
        ssm = cache.states["ssm"]
        cache.states["ssm"] = ssm.to(torch.promote_types(ssm.dtype, torch.float32))
        return cache

    def prefill(self, x, cache):
        out, conv_state, final = self._mix(x, cache.states["conv"], cache.states["ssm"], want_state=True)
        cache.states["conv"].copy_(conv_state)
        cache.states["ssm"].copy_(final)
        cache.advance(x.shape[1])
        return out

    def _step(self, x, cache, fused_update: bool):
        """One token through the fixed states (in place); fused_update: mamba_ssm's Triton SSM update."""
        u = x[:, 0]
        z, xBC, dt = self.in_proj(u).split([self.d_inner, self.conv_dim, self.nheads], dim=-1)
        conv = cache.states["conv"]
        window = torch.cat([conv, xBC[..., None].to(conv.dtype)], dim=-1)     # (B, conv_dim, d_conv)
        xBC = F.silu((window * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)
        conv.copy_(window[..., 1:])
        xs, B, C = self._split_xbc(xBC)
        A = -torch.exp(_f32(self.A_log))
        if fused_update:
            # Per-(head, channel) parameters as stride-0 views, the layout the kernel takes; it updates the
            # float32 state in place and adds the D skip.
            H, P, N = self.nheads, self.headdim, self.d_state
            y = self._state_update(cache.states["ssm"], xs, dt[..., None].expand(-1, H, P),
                                   A[:, None, None].expand(H, P, N), B, C, D=self.D[:, None].expand(H, P),
                                   dt_bias=self.dt_bias[:, None].expand(H, P), dt_softplus=True)
        else:
            dt = F.softplus(_f32(dt) + _f32(self.dt_bias))
            y, state = ssd_step(cache.states["ssm"], xs, dt, A, B, C)
            cache.states["ssm"].copy_(state)
            y = y + self.D.to(y.dtype)[:, None] * xs.to(y.dtype)
        y = self.norm(y.flatten(-2), z).to(u.dtype)
        return self.out_proj(y)[:, None]

    def step(self, x, cache):
        out = self._step(x, cache, fused_update=False)
        cache.advance(1)
        self._backend_used = "torch"
        return out

    def step_static(self, x, cache, pos):
        # The state is fixed-size, so the step already has fixed shapes; pos is not needed.
        return self._step(x, cache, fused_update=self._state_update is not None and x.is_cuda)

    # --- accounting --------------------------------------------------------------------------------
    def flops_per_token(self, seq_len):
        """Non-parameter forward FLOPs per token of the chunked SSD scan, with Q = min(chunk_size, seq_len),
        P = headdim, N = d_state, H = nheads, G = ngroups, 2 FLOPs per multiply-add:
            (Q + 1) * (G*N + H*P)    C.B scores and their use, over (Q + 1) / 2 causal positions on average
          + 4 * H*P*N                writing each token into its chunk's state, reading the entering state
          + 2 * H*P*N / Q            carrying one state per chunk across chunks
        Elementwise work (exp, decay masks, conv, D skip, norm) is not counted."""
        Q = min(self.chunk_size, max(int(seq_len), 1))
        HP, GN = self.nheads * self.headdim, self.ngroups * self.d_state
        HPN = HP * self.d_state
        return float((Q + 1) * (GN + HP) + 4 * HPN + 2 * HPN / Q)

    def state_per_token(self):
        return 0

    def state_fixed(self):
        return self.conv_dim * (self.d_conv - 1) + self.nheads * self.headdim * self.d_state
