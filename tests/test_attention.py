"""CausalAttention and RoPE against hand-written references: backends agree, math == an explicit softmax
loop, decode == parallel, causality, bad names raise, and RoPE's norm and relative-position properties."""

import math

import pytest
import torch

from sessa_bench.models.attention import CausalAttention, attention_math, attention_sdpa, resolve_backend
from sessa_bench.models.rope import apply_rope, rope_inv_freq

DT = torch.float64


def qkv(B=2, T=7, H=4, Hkv=4, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, h, d, generator=g, dtype=DT) for h in (H, Hkv, Hkv))


def attention_loop(q, k, v):
    """softmax(q k^T / sqrt(d) + causal mask) v, one (batch, head, query) at a time."""
    B, T, H, d = q.shape
    group = H // k.shape[2]
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                sc = [float(q[b, t, h] @ k[b, j, h // group]) / math.sqrt(d) for j in range(T)]
                sc = [s if j <= t else -math.inf for j, s in enumerate(sc)]
                e = [math.exp(s - max(sc)) for s in sc]
                out[b, t, h] = sum(e[j] / sum(e) * v[b, j, h // group] for j in range(T))
    return out


@pytest.mark.parametrize("H,Hkv", [(4, 4), (4, 2), (4, 1)])
def test_math_matches_loop_and_sdpa(H, Hkv):
    q, k, v = qkv(H=H, Hkv=Hkv)
    ref = attention_loop(q, k, v)
    torch.testing.assert_close(attention_math(q, k, v), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(attention_sdpa(q, k, v), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d", [6, 66, 64])  # padded to 8 and 72 inside attention_sdpa; 64 as it is
def test_sdpa_matches_math_forward_and_backward_at_any_head_dim(d):
    q, k, v = (t.requires_grad_() for t in qkv(B=2, T=9, H=4, Hkv=2, d=d))
    dy = torch.randn(2, 9, 4, d, dtype=DT)
    outs = []
    for fn in (attention_math, attention_sdpa):
        y = fn(q, k, v)
        outs.append((y, *torch.autograd.grad(y, (q, k, v), dy)))
    assert outs[1][0].shape == (2, 9, 4, d)
    for got, ref in zip(outs[1], outs[0]):
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("Hkv", [None, 2])
def test_module_backends_agree(Hkv):
    torch.manual_seed(0)
    m = CausalAttention(16, 4, Hkv, backend="math").to(DT)
    s = CausalAttention(16, 4, Hkv, backend="sdpa").to(DT)
    s.load_state_dict(m.state_dict())
    x = torch.randn(2, 9, 16, dtype=DT)
    torch.testing.assert_close(s(x), m(x), rtol=1e-12, atol=1e-12)
    assert m.backend_used() == "math" and s.backend_used() == "sdpa"
    a = CausalAttention(16, 4, Hkv, backend="auto").to(DT)
    a(x)
    assert a.backend_used() == "sdpa"  # CPU: flash-attn never applies


@pytest.mark.parametrize("H,Hkv,use_rope", [(4, None, True), (4, 2, True), (1, None, True), (4, None, False)])
def test_decode_and_prefill_match_parallel(H, Hkv, use_rope):
    torch.manual_seed(0)
    m = CausalAttention(16, H, Hkv, backend="math", use_rope=use_rope).to(DT)
    x = torch.randn(2, 8, 16, dtype=DT)
    with torch.no_grad():
        full = m(x)
        cache = m.init_cache(2, 8, dtype=DT)
        steps = torch.cat([m(x[:, t:t + 1], cache) for t in range(8)], 1)
        torch.testing.assert_close(steps, full, rtol=1e-12, atol=1e-12)
        cache = m.init_cache(2, 8, dtype=DT)
        out = torch.cat([m(x[:, :5], cache), m(x[:, 5:], cache)], 1)
        torch.testing.assert_close(out, full, rtol=1e-12, atol=1e-12)
    assert m.state_per_token() == sum(b[0, 0].numel() for b in cache.buffers.values())


def test_causality():
    torch.manual_seed(0)
    m = CausalAttention(16, 4, backend="math").to(DT)
    x = torch.randn(1, 8, 16, dtype=DT)
    x2 = x.clone()
    x2[0, 4] += 1.0
    y, y2 = m(x), m(x2)
    torch.testing.assert_close(y2[:, :4], y[:, :4], rtol=0, atol=0)
    assert (y2[:, 4:] - y[:, 4:]).abs().amax(-1).min() > 1e-6


def test_no_rope_is_order_blind():
    """Without RoPE the last output depends on the set of earlier tokens, not their order; with it, it does."""
    torch.manual_seed(0)
    x = torch.randn(1, 6, 8, dtype=DT)
    perm = torch.tensor([3, 0, 4, 1, 2, 5])
    for use_rope, same in ((False, True), (True, False)):
        torch.manual_seed(1)
        m = CausalAttention(8, 2, backend="math", use_rope=use_rope).to(DT)
        a, b = m(x)[0, -1], m(x[:, perm])[0, -1]
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12) == same
    CausalAttention(6, 2, use_rope=False)  # odd head dim is fine without RoPE


def test_bad_names_and_shapes():
    with pytest.raises(ValueError, match="backend"):
        CausalAttention(8, 2, backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("nope", torch.zeros(1))
    with pytest.raises(RuntimeError, match="flash_attn"):  # asked for explicitly, unavailable on CPU
        resolve_backend("flash_attn", torch.zeros(1))
    with pytest.raises(ValueError, match="divisible"):
        CausalAttention(10, 4)
    with pytest.raises(ValueError, match="n_kv_heads"):
        CausalAttention(8, 4, 3)
    with pytest.raises(ValueError, match="even"):
        CausalAttention(6, 2)
    with pytest.raises(ValueError, match="even"):
        rope_inv_freq(5)


def test_rope_matches_pair_rotation():
    x = torch.randn(2, 5, 3, 6, dtype=DT)
    inv = rope_inv_freq(6)
    torch.testing.assert_close(inv, torch.tensor([10000.0 ** (-2 * i / 6) for i in range(3)], dtype=DT))
    out = apply_rope(x, inv, start=7)
    want = x.clone()
    for t in range(5):
        for i in range(3):
            c, s = math.cos((7 + t) * float(inv[i])), math.sin((7 + t) * float(inv[i]))
            want[:, t, :, 2 * i] = x[:, t, :, 2 * i] * c - x[:, t, :, 2 * i + 1] * s
            want[:, t, :, 2 * i + 1] = x[:, t, :, 2 * i] * s + x[:, t, :, 2 * i + 1] * c
    torch.testing.assert_close(out, want, rtol=1e-13, atol=1e-13)


def test_rope_norm_and_relative_position():
    inv = rope_inv_freq(8)
    q, k = torch.randn(8, dtype=DT), torch.randn(8, dtype=DT)
    T = 40
    rq = apply_rope(q.expand(1, T, 1, 8), inv)[0, :, 0]  # q placed at every position 0..T-1
    rk = apply_rope(k.expand(1, T, 1, 8), inv)[0, :, 0]
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(T), rtol=1e-13, atol=0)
    dots = rq @ rk.T  # dots[t1, t2] = <rope(q, t1), rope(k, t2)>
    for delta in (-7, 0, 3, 20):
        diag = torch.diagonal(dots, offset=-delta)  # all t1 - t2 = delta
        torch.testing.assert_close(diag, diag[0].expand_as(diag), rtol=1e-11, atol=1e-11)
    assert not torch.allclose(dots[5, 0], dots[5, 2])  # and it does depend on the offset


def test_rope_angles_kept_in_float32_for_bf16():
    """Positions above 256 are not representable in bf16: angles must not be rounded to it."""
    inv = rope_inv_freq(8)
    x = torch.randn(1, 4, 1, 8)
    out = apply_rope(x.bfloat16(), inv, start=1001).float()
    ref = apply_rope(x.double(), inv, start=1001).float()
    assert (out - ref).norm() / ref.norm() < 1e-2


def test_new_inv_freq_replaces_the_per_device_copy():
    # qkv keeps a per-device copy of inv_freq; installing other frequencies (as the converter does
    # with an official checkpoint's buffer) must take effect even after a forward has run.
    torch.manual_seed(0)
    m = CausalAttention(8, 2, backend="math").double()
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    before = m(x)
    m._inv_freq = m._inv_freq * 0.5
    fresh = CausalAttention(8, 2, backend="math").double()
    fresh.load_state_dict(m.state_dict())
    fresh._inv_freq = m._inv_freq.clone()
    assert not torch.allclose(m(x), before)
    assert torch.allclose(m(x), fresh(x), atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_rope_complex_form_is_the_real_form(dtype):
    """rotate multiplies complex numbers eagerly and writes the real form out under torch.compile: both give
    the same values and gradients (float64: to rounding; bfloat16: the same rounding of an fp32 result)."""
    from sessa_bench.models.rope import angle_dtype, rope_cos_sin, rotate, rotate_real
    torch.manual_seed(0)
    x = torch.randn(2, 7, 3, 8, dtype=dtype, requires_grad=True)
    cos, sin = rope_cos_sin(rope_inv_freq(8), 1000, 7, x.device, angle_dtype(x))
    g = torch.randn_like(x)
    a, b = rotate(x, cos, sin), rotate_real(x, cos, sin)
    (da,), (db,) = torch.autograd.grad(a, x, g), torch.autograd.grad(b, x, g)
    tol = {torch.float64: 1e-14, torch.float32: 1e-6, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    torch.testing.assert_close(da, db, rtol=tol, atol=tol)
    compiled = torch.compile(rotate, backend="eager", fullgraph=True)  # traced: the real form, no complex ops
    torch.testing.assert_close(compiled(x, cos, sin), b, rtol=0, atol=0)
    from sessa_bench.models.rope import rotation  # its multiplier built once for q and k: the same values
    assert torch.equal(rotate(x, cos, sin, rotation(cos, sin)), a)
