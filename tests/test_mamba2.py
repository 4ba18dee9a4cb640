"""CPU tests of the Mamba2 mixer: the chunked SSD scan against a per-token loop and a closed form, decoding
against the parallel forward, causality, the mamba_ssm parameter layout, gradients and input validation."""

import sys

import pytest
import torch
import torch.nn.functional as F

from sessa_bench.models import mamba_ssm_import
from sessa_bench.models.mamba2 import Mamba2Mixer
from sessa_bench.models.ssd import ssd_chunked, ssd_naive, ssd_step

f64 = torch.float64


def ssd_inputs(b=2, l=7, h=4, p=3, g=2, n=5, init=True, dtype=f64):
    x = torch.randn(b, l, h, p, dtype=dtype)
    dt = torch.rand(b, l, h, dtype=dtype) * 0.9 + 0.1              # softplus'ed: positive
    A = -(torch.rand(h, dtype=dtype) * 2 + 0.2)                    # negative
    B, C = torch.randn(b, l, g, n, dtype=dtype), torch.randn(b, l, g, n, dtype=dtype)
    s0 = torch.randn(b, h, p, n, dtype=dtype) if init else None
    return x, dt, A, B, C, s0


def ssd_closed_form(x, dt, A, B, C, s0):
    """y_t = exp(A sum_{k<=t} dt_k) s0 C_t + sum_{s<=t} exp(A sum_{s<k<=t} dt_k) dt_s (C_t . B_s) x_s,
    head i reading group i // (h/g); plain loops."""
    b, l, h, p = x.shape
    g = B.shape[2]
    y = torch.zeros_like(x)
    for bi in range(b):
        for hi in range(h):
            gi = hi // (h // g)
            for t in range(l):
                acc = torch.exp(A[hi] * dt[bi, :t + 1, hi].sum()) * (s0[bi, hi] @ C[bi, t, gi])
                for s in range(t + 1):
                    w = torch.exp(A[hi] * dt[bi, s + 1:t + 1, hi].sum()) * dt[bi, s, hi]
                    acc = acc + w * (C[bi, t, gi] @ B[bi, s, gi]) * x[bi, s, hi]
                y[bi, t, hi] = acc
    return y


def test_naive_matches_closed_form():
    x, dt, A, B, C, s0 = ssd_inputs(b=1, l=6, h=4, p=2, g=2, n=3)
    y, _ = ssd_naive(x, dt, A, B, C, None, s0)
    torch.testing.assert_close(y, ssd_closed_form(x, dt, A, B, C, s0), rtol=1e-10, atol=1e-10)


def test_step_hand_computed():
    # One head, p = n = 1: state' = e^{dt A} s + dt x B, y = state' C.
    s, x, dt, A, B, C = 2.0, 3.0, 0.5, -1.0, 4.0, 5.0
    y, s_new = ssd_step(torch.full((1, 1, 1, 1), s, dtype=f64), torch.full((1, 1, 1), x, dtype=f64),
                        torch.full((1, 1), dt, dtype=f64), torch.tensor([A], dtype=f64),
                        torch.full((1, 1, 1), B, dtype=f64), torch.full((1, 1, 1), C, dtype=f64))
    expect = torch.exp(torch.tensor(dt * A, dtype=f64)) * s + dt * x * B
    torch.testing.assert_close(s_new.flatten(), expect.reshape(1))
    torch.testing.assert_close(y.flatten(), (expect * C).reshape(1))


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("length", [1, 7, 16, 37])
@pytest.mark.parametrize("chunk", [1, 3, 8, 16])
def test_chunked_matches_naive(chunk, length, groups):
    x, dt, A, B, C, s0 = ssd_inputs(l=length, g=groups, init=(length + chunk) % 2 == 0)
    y, final = ssd_chunked(x, dt, A, B, C, chunk, initial_state=s0)
    y_ref, final_ref = ssd_naive(x, dt, A, B, C, chunk, initial_state=s0)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(final, final_ref, rtol=1e-10, atol=1e-10)


def test_chunked_float32_long_decay():
    # Strong decays (dt * |A| up to ~8 per step) must not give inf/nan from the masked segment sums.
    x, dt, A, B, C, s0 = ssd_inputs(l=40, dtype=torch.float32)
    dt, A = dt * 4, A * 2
    y, final = ssd_chunked(x, dt, A, B, C, 16, s0)
    y_ref, final_ref = ssd_naive(*(t.double() for t in (x, dt, A, B, C)), None, s0.double())
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(final.double(), final_ref, rtol=1e-4, atol=1e-4)


def test_ssd_gradcheck():
    x, dt, A, B, C, s0 = ssd_inputs(b=1, l=5, h=2, p=2, g=2, n=2)
    inputs = [t.requires_grad_() for t in (x, dt, A, B, C, s0)]

    def f(x, dt, A, B, C, s0):
        return ssd_chunked(x, dt, A, B, C, 2, initial_state=s0)

    assert torch.autograd.gradcheck(f, inputs)


def test_ssd_bad_shapes():
    x, dt, A, B, C, _ = ssd_inputs(h=4, g=2)
    B3 = torch.randn(2, 7, 3, 5, dtype=f64)
    with pytest.raises(ValueError, match="divisible by groups"):
        ssd_chunked(x, dt, A, B3, B3, 4)
    with pytest.raises(ValueError, match="dt must have shape"):
        ssd_chunked(x, dt[:, 1:], A, B, C, 4)
    with pytest.raises(ValueError, match="chunk_size"):
        ssd_chunked(x, dt, A, B, C, 0)
    with pytest.raises(ValueError, match="initial_state"):
        ssd_chunked(x, dt, A, B, C, 4, initial_state=torch.zeros(1, 2, 3))


# --- the mixer ------------------------------------------------------------------------------------

def make_mixer(**kw) -> Mamba2Mixer:
    args = dict(d_model=16, n_heads=4, d_state=8, d_conv=4, expand=2, headdim=4, ngroups=2, chunk_size=4,
                backend="torch")
    args.update(kw)
    m = Mamba2Mixer(**args).double()
    with torch.no_grad():  # move the parameters that start at constants off them, so every term is tested
        m.D.uniform_(0.5, 1.5)
        m.norm.weight.uniform_(0.5, 1.5)
        m.conv1d.bias.normal_(0, 0.5)
    return m


@pytest.mark.parametrize("d_conv", [1, 4])
def test_step_by_step_equals_parallel(d_conv):
    m = make_mixer(d_conv=d_conv)
    u = torch.randn(2, 11, 16, dtype=f64)
    y = m(u)
    cache = m.init_cache(2, 11, dtype=f64)
    y_steps = torch.cat([m.step(u[:, t:t + 1], cache) for t in range(11)], dim=1)
    torch.testing.assert_close(y_steps, y, rtol=1e-10, atol=1e-10)
    assert cache.pos == 11 and m.backend_used() == "torch"


@pytest.mark.parametrize("prompt", [2, 7])
def test_prefill_then_steps_equals_parallel(prompt):
    m = make_mixer()
    u = torch.randn(2, 12, 16, dtype=f64)
    y = m(u)
    cache = m.init_cache(2, 12, dtype=f64)
    y_prompt = m(u[:, :prompt], cache)           # Mixer.forward: pos 0 and T > 1 -> prefill
    y_rest = m(u[:, prompt:], cache)             # pos > 0 -> token by token
    torch.testing.assert_close(torch.cat([y_prompt, y_rest], dim=1), y, rtol=1e-10, atol=1e-10)


def test_prefill_twice_continues_the_state():
    m = make_mixer()
    u = torch.randn(1, 13, 16, dtype=f64)
    cache = m.init_cache(1, 13, dtype=f64)
    y = torch.cat([m.prefill(u[:, :5], cache), m.prefill(u[:, 5:], cache)], dim=1)
    torch.testing.assert_close(y, m(u), rtol=1e-10, atol=1e-10)


def test_causality():
    m = make_mixer()
    u = torch.randn(2, 10, 16, dtype=f64)
    t = 6
    u2 = u.clone()
    u2[:, t] += torch.randn(2, 16, dtype=f64)
    y, y2 = m(u), m(u2)
    torch.testing.assert_close(y2[:, :t], y[:, :t], rtol=0, atol=1e-13)
    assert (y2[:, t:] - y[:, t:]).abs().amax(dim=-1).min() > 1e-8  # every later position sees the change


def test_gated_rmsnorm_per_group():
    m = make_mixer(ngroups=2)
    x, z = torch.randn(3, 32, dtype=f64), torch.randn(3, 32, dtype=f64)
    expect = torch.empty_like(x)
    for i in range(3):
        for g in range(2):
            sl = slice(16 * g, 16 * (g + 1))
            h = x[i, sl] * z[i, sl] * torch.sigmoid(z[i, sl])
            expect[i, sl] = h / torch.sqrt((h * h).mean() + 1e-5) * m.norm.weight[sl]
    torch.testing.assert_close(m.norm(x, z), expect)


@pytest.mark.parametrize("d_conv", [1, 4])
def test_execution_variants_compute_the_same_function(d_conv):
    """in_proj_align (zero rows padded for the product, their outputs dropped) and conv_impl="shift" (the
    conv as shifted copies) change how, not what: forward and every gradient equal the defaults' (float64)."""
    u = torch.randn(2, 9, 16, dtype=f64)
    outs = []
    for align, conv in ((1, "conv1d"), (64, "conv1d"), (1, "shift"), (16, "shift")):
        torch.manual_seed(0)
        m = make_mixer(d_conv=d_conv)
        m.in_proj_align, m.conv_impl = align, conv
        x = u.clone().requires_grad_(True)
        y = m(x)
        y.square().sum().backward()
        outs.append((y.detach(), x.grad, [p.grad for p in m.parameters()]))
    assert m.in_proj.weight.shape[0] % 16  # the width is not aligned: the padding is exercised
    for y, gx, gp in outs[1:]:
        torch.testing.assert_close(y, outs[0][0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gx, outs[0][1], rtol=1e-12, atol=1e-12)
        for a, b in zip(gp, outs[0][2]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_parallel_matches_hand_written_forward():
    # The whole forward written out once from the documented equations (conv by shifts, scan by ssd_naive).
    m = make_mixer(chunk_size=3)
    u = torch.randn(2, 9, 16, dtype=f64)
    zxbcdt = u @ m.in_proj.weight.T
    z, xBC, dt = zxbcdt.split([32, 32 + 2 * 2 * 8, 8], dim=-1)
    w = m.conv1d.weight[:, 0]                                          # (conv_dim, d_conv)
    conv = sum(F.pad(xBC, (0, 0, 3 - k, 0))[:, :9] * w[:, k] for k in range(4)) + m.conv1d.bias
    xBC = conv * torch.sigmoid(conv)
    x, B, C = xBC.split([32, 16, 16], dim=-1)
    x = x.reshape(2, 9, 8, 4)
    dt = F.softplus(dt + m.dt_bias)
    y, _ = ssd_naive(x, dt, -torch.exp(m.A_log), B.reshape(2, 9, 2, 8), C.reshape(2, 9, 2, 8))
    y = (y + m.D[:, None] * x).reshape(2, 9, 32)
    out = m.norm(y, z) @ m.out_proj.weight.T
    torch.testing.assert_close(m(u), out, rtol=1e-10, atol=1e-10)


def test_mamba_ssm_parameter_layout():
    d_model, d_state, headdim, ngroups, d_conv = 32, 16, 8, 2, 4
    m = Mamba2Mixer(d_model, None, d_state=d_state, d_conv=d_conv, headdim=headdim, ngroups=ngroups)
    d_inner = 2 * d_model
    nheads = d_inner // headdim
    conv_dim = d_inner + 2 * ngroups * d_state
    expect = {
        "in_proj.weight": (2 * d_inner + 2 * ngroups * d_state + nheads, d_model),
        "conv1d.weight": (conv_dim, 1, d_conv), "conv1d.bias": (conv_dim,),
        "dt_bias": (nheads,), "A_log": (nheads,), "D": (nheads,),
        "norm.weight": (d_inner,), "out_proj.weight": (d_model, d_inner),
    }
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == expect
    for name in ("dt_bias", "A_log", "D"):
        assert getattr(m, name)._no_weight_decay is True


def test_init_ranges():
    m = Mamba2Mixer(64, 4, headdim=8, dt_min=0.01, dt_max=0.05, A_init_range=(2, 3))
    dt = F.softplus(m.dt_bias.detach().double())
    assert (dt >= 0.01 - 1e-6).all() and (dt <= 0.05 + 1e-6).all() and dt.std() > 0
    A = torch.exp(m.A_log.detach())
    assert (A >= 2 - 1e-6).all() and (A <= 3 + 1e-6).all()
    assert torch.equal(m.D.detach(), torch.ones(16)) and torch.equal(m.norm.weight.detach(), torch.ones(128))
    floored = Mamba2Mixer(64, 4, headdim=8, dt_min=1e-6, dt_max=2e-6, dt_init_floor=1e-3)
    torch.testing.assert_close(F.softplus(floored.dt_bias.detach()), torch.full((16,), 1e-3))


def test_gradients_reach_every_parameter():
    m = make_mixer()
    u = torch.randn(2, 9, 16, dtype=f64, requires_grad=True)
    m(u).pow(2).sum().backward()
    for name, p in list(m.named_parameters()) + [("input", u)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_accounting():
    m = make_mixer()  # nheads 8, headdim 4, d_state 8, ngroups 2, conv_dim 64, d_conv 4, chunk 4
    assert m.state_per_token() == 0
    assert m.state_fixed() == 64 * 3 + 8 * 4 * 8
    cache = m.init_cache(3, 5)
    assert sum(s.numel() for s in cache.states.values()) == 3 * m.state_fixed() and not cache.buffers
    HP, GN, HPN = 32, 16, 256
    assert m.flops_per_token(1000) == (4 + 1) * (GN + HP) + 4 * HPN + 2 * HPN / 4
    assert m.flops_per_token(2) == (2 + 1) * (GN + HP) + 4 * HPN + 2 * HPN / 2


def test_cache_keeps_ssm_state_in_float32():
    m = make_mixer().to(torch.bfloat16)
    cache = m.init_cache(1, 4, dtype=torch.bfloat16)
    assert cache.states["ssm"].dtype == torch.float32 and cache.states["conv"].dtype == torch.bfloat16
    y = m(torch.randn(1, 4, 16, dtype=torch.bfloat16), cache)
    assert y.dtype == torch.bfloat16 and cache.pos == 4


@pytest.mark.parametrize("kw, match", [
    (dict(headdim=5), "divisible by headdim"),
    (dict(ngroups=3), "divisible by ngroups"),
    (dict(d_state=0), "d_state"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(d_conv=0), "d_conv"),
    (dict(expand=0), "expand"),
    (dict(backend="cuda"), "backend"),
    (dict(dt_min=0.2, dt_max=0.1), "dt_min"),
    (dict(A_init_range=(0, 4)), "A_init_range"),
])
def test_bad_arguments_raise(kw, match):
    args = dict(d_model=16, n_heads=4, headdim=4, d_state=8)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        Mamba2Mixer(**args)


def test_backends_on_cpu():
    m = make_mixer(backend="auto")
    m(torch.randn(1, 3, 16, dtype=f64))
    assert m.backend_used() == "torch"
    m = make_mixer(backend="mamba_ssm")
    with pytest.raises(RuntimeError, match="mamba_ssm"):
        m(torch.randn(1, 3, 16, dtype=f64))


def hide_real_mamba_ssm(monkeypatch):
    """Take an already imported mamba_ssm (and its stand-in) out of sys.modules; monkeypatch puts it back."""
    for name in [n for n in sys.modules if n.split(".")[0] in ("mamba_ssm", "selective_scan_cuda")]:
        monkeypatch.delitem(sys.modules, name)


def test_import_helper_registers_stand_in(tmp_path, monkeypatch):
    # A fake mamba_ssm whose package __init__ imports a missing compiled module, as mamba-ssm 2.3.2 does.
    pkg = tmp_path / "mamba_ssm"
    (pkg / "ops" / "triton").mkdir(parents=True)
    (pkg / "__init__.py").write_text("import selective_scan_cuda\n")
    (pkg / "ops" / "__init__.py").write_text("")
    (pkg / "ops" / "triton" / "__init__.py").write_text("")
    # ... and the forward/backward functions its autograd Functions call, with mamba-ssm 2.3's signatures and
    # return tuples (the adapters pick their items by position)
    (pkg / "ops" / "triton" / "ssd_combined.py").write_text(
        "def mamba_chunk_scan_combined(): return 'scan'\n"
        "def _mamba_chunk_scan_combined_fwd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None,\n"
        "        initial_states=None, seq_idx=None, cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, 1e9)):\n"
        "    assert dt_softplus and z is None\n"
        "    return ('out', 'out_x', 'dt_out', 'dA_cumsum', 'states', 'final_states')\n"
        "def _mamba_chunk_scan_combined_bwd(dout, x, dt, A, B, C, out, chunk_size, D=None, z=None,\n"
        "        dt_bias=None, initial_states=None, dfinal_states=None, seq_idx=None, dt_softplus=False,\n"
        "        dt_limit=(0.0, 1e9), dx=None, ddt=None, dB=None, dC=None, dz=None, recompute_output=False):\n"
        "    assert dt_softplus and z is None and out == 'y' and dfinal_states == 'df'\n"
        "    return ('dx', 'ddt', 'dA', 'dB', 'dC', 'dD', 'dz', 'ddt_bias', 'dinitial_states')\n")
    (pkg / "ops" / "triton" / "layernorm_gated.py").write_text(
        "def rmsnorm_fn(): return 'norm'\n"
        "def _layer_norm_fwd(x, weight, bias, eps, z=None, out=None, group_size=None, norm_before_gate=True,\n"
        "        is_rms_norm=False):\n"
        "    assert is_rms_norm and not norm_before_gate and bias is None\n"
        "    return 'y', None, 'rstd'\n"
        "def _layer_norm_bwd(dy, x, weight, bias, eps, mean, rstd, z=None, group_size=None,\n"
        "        norm_before_gate=True, is_rms_norm=False, recompute_output=False, dz=None, out=None):\n"
        "    assert is_rms_norm and not norm_before_gate and rstd == 'rstd' and mean is None\n"
        "    return 'dx', 'dw', 'db', 'dz'\n")
    hide_real_mamba_ssm(monkeypatch)
    before = set(sys.modules)
    monkeypatch.syspath_prepend(str(tmp_path))
    mamba_ssm_import.import_mamba_ssm.cache_clear()
    mamba_ssm_import.import_mamba_ssm_kernels.cache_clear()
    try:
        scan, norm = mamba_ssm_import.import_mamba_ssm()
        assert (scan(), norm()) == ("scan", "norm")
        assert isinstance(sys.modules["selective_scan_cuda"], type(sys))
        scan_fwd, scan_bwd, norm_fwd, norm_bwd = mamba_ssm_import.import_mamba_ssm_kernels()
        assert scan_fwd(*"x dt A B C".split(), 64, "D", "dt_bias", None) == ("out", "final_states")
        assert scan_bwd("dy", "df", *"x dt A B C y".split(), 64, "D", "dt_bias", None) == \
            ("dx", "ddt", "dA", "dB", "dC", "dD", "ddt_bias", "dinitial_states")
        assert norm_fwd("y", "w", "z", 1e-5, 8) == ("y", "rstd")
        assert norm_bwd("dout", "y", "w", "z", 1e-5, 8, "rstd") == ("dx", "dw", "dz")
    finally:
        for name in set(sys.modules) - before:
            del sys.modules[name]
        mamba_ssm_import.import_mamba_ssm.cache_clear()
        mamba_ssm_import.import_mamba_ssm_kernels.cache_clear()


def test_import_helper_never_raises(tmp_path, monkeypatch):
    # A broken package: the helper returns None, says why, and leaves no stand-in behind.
    pkg = tmp_path / "mamba_ssm"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import selective_scan_cuda\nraise OSError('broken build')\n")
    hide_real_mamba_ssm(monkeypatch)
    before = set(sys.modules)
    monkeypatch.syspath_prepend(str(tmp_path))
    mamba_ssm_import.import_mamba_ssm.cache_clear()
    try:
        assert mamba_ssm_import.import_mamba_ssm() is None
        assert "broken build" in mamba_ssm_import.last_error
        assert "selective_scan_cuda" not in sys.modules or "selective_scan_cuda" in before
    finally:
        for name in set(sys.modules) - before:
            del sys.modules[name]
        mamba_ssm_import.import_mamba_ssm.cache_clear()
