"""SessaMixer against hand-written references: the feedback recurrence as an explicit loop, the whole mixer
as a per-token loop, decode/prefill vs parallel, causality, the contraction bound, the closed-form impulse
response under uniform routing and its power-law tail, and the parameter count."""

import math

import pytest
import torch

from sessa_bench.models import kernels
from sessa_bench.models.attention import CausalAttention
from sessa_bench.models.block import GatedBlock
from sessa_bench.models.kernels.feedback_dense import solve_routing
from sessa_bench.models.sessa import SessaMixer

DT = torch.float64


def make(D=8, H=2, Hkv=None, seed=0, **kw):
    torch.manual_seed(seed)
    m = SessaMixer(D, H, Hkv, backend="math", **kw).to(DT)
    with torch.no_grad():  # move gamma off its init so gamma varies in sign and size
        m.gamma_bias.fill_(0.3)
        m.gamma_ctx.weight.mul_(3.0)
    return m


def feedback_loop(f, q_b, k_b, gamma):
    """s[0] = f[0]; s[t] = f[t] + gamma[t] * sum_{j<t} softmax_j(q_b[t].k_b[j] / sqrt(D)) s[j]."""
    B, T, D = f.shape
    s = torch.zeros_like(f)
    for b in range(B):
        for t in range(T):
            s[b, t] = f[b, t]
            if t == 0:
                continue
            logits = [float(q_b[b, t] @ k_b[b, j]) / math.sqrt(D) for j in range(t)]
            mx = max(logits)
            w = [math.exp(v - mx) for v in logits]
            for j in range(t):
                s[b, t] += gamma[b, t] * (w[j] / sum(w)) * s[b, j]
    return s


def rope_ref(x, t, inv_freq):
    """x: (d,) at position t; rotate pairs (2i, 2i+1) by t * inv_freq[i]."""
    out = x.clone()
    for i in range(x.shape[0] // 2):
        c, s = math.cos(t * float(inv_freq[i])), math.sin(t * float(inv_freq[i]))
        out[2 * i] = x[2 * i] * c - x[2 * i + 1] * s
        out[2 * i + 1] = x[2 * i] * s + x[2 * i + 1] * c
    return out


@torch.no_grad()
def mixer_ref(m: SessaMixer, x):
    """The whole mixer token by token from its weights: RoPE attention per head, out_proj, feedback loop."""
    B, T, D = x.shape
    H, Hkv, d = m.n_heads, m.n_kv_heads, m.head_dim
    inv_freq = [10000.0 ** (-2 * i / d) for i in range(d // 2)]
    lin = lambda layer, v: v @ layer.weight.T + (layer.bias if layer.bias is not None else 0)
    q = lin(m.q_proj, x).view(B, T, H, d)
    k = lin(m.k_proj, x).view(B, T, Hkv, d)
    v = lin(m.v_proj, x).view(B, T, Hkv, d)
    o = torch.zeros(B, T, H, d, dtype=x.dtype)
    for b in range(B):
        for h in range(H):
            g = h // (H // Hkv)  # query head h reads kv head h // group
            for t in range(T):
                qt = rope_ref(q[b, t, h], t, inv_freq)
                ks = [rope_ref(k[b, j, g], j, inv_freq) for j in range(t + 1)]
                sc = torch.stack([qt @ kj for kj in ks]) / math.sqrt(d)
                p = torch.exp(sc - sc.max())
                o[b, t, h] = (p / p.sum()) @ v[b, : t + 1, g]
    f = o.reshape(B, T, D)
    if H > 1:
        f = f @ m.out_proj.weight.T
    qb, kb = lin(m.proj_fb, x).chunk(2, -1)
    gamma = m.gamma_max * torch.tanh(m.gamma_bias + x @ m.gamma_ctx.weight[0])
    return feedback_loop(f, qb, kb, gamma) if m.feedback else f


def test_dense_solve_matches_recurrence_loop():
    torch.manual_seed(0)
    B, T, D = 2, 9, 6
    f, q_b, k_b = (torch.randn(B, T, D, dtype=DT) for _ in range(3))
    gamma = torch.empty(B, T, dtype=DT).uniform_(-0.99, 0.99)
    ref = feedback_loop(f, q_b, k_b, gamma)
    for impl in ("dense", "auto"):
        torch.testing.assert_close(kernels.feedback(f, q_b, k_b, gamma, impl=impl), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("H,Hkv,feedback", [(2, None, True), (4, 2, True), (1, None, True), (2, None, False)])
def test_parallel_matches_token_loop(H, Hkv, feedback):
    m = make(8, H, Hkv, feedback=feedback)
    x = torch.randn(2, 6, 8, dtype=DT)
    torch.testing.assert_close(m(x), mixer_ref(m, x), rtol=1e-10, atol=1e-10)


def test_gamma_is_gamma_max_tanh():
    m = make(gamma_max=0.9)
    x = torch.randn(1, 4, 8, dtype=DT)
    w, b = m.gamma_ctx.weight[0].detach(), float(m.gamma_bias.detach())
    want = torch.tensor([[0.9 * math.tanh(b + float(x[0, t] @ w)) for t in range(4)]], dtype=DT)
    torch.testing.assert_close(m.gamma(x), want, rtol=1e-13, atol=1e-13)


def test_gamma_of_a_bfloat16_model_is_float32_to_the_bit():
    """A bf16 model (as decoding runs) gets float32 gains: the bf16 product and bias, each read exactly in float32,
    summed in float32, as gamma_max * tanh(bias.float() + ctx.float()). A sum left in bf16 fails this."""
    m = make(gamma_max=0.9).to(torch.bfloat16)
    with torch.no_grad():
        m.gamma_bias.fill_(0.3)  # not a bf16-exact sum with the products below
    x = torch.randn(2, 5, 8).to(torch.bfloat16)
    ctx = m.gamma_ctx(x).squeeze(-1)
    want = 0.9 * torch.tanh(m.gamma_bias.float() + ctx.float())
    got = m.gamma(x)
    assert got.dtype == torch.float32 and torch.equal(got, want)


@pytest.mark.parametrize("H,Hkv,feedback", [(2, None, True), (4, 1, True), (2, None, False)])
def test_decode_and_prefill_match_parallel(H, Hkv, feedback):
    m = make(8, H, Hkv, feedback=feedback)
    x = torch.randn(2, 7, 8, dtype=DT)
    with torch.no_grad():
        full = m(x)
        cache = m.init_cache(2, 7, dtype=DT)
        steps = torch.cat([m(x[:, t:t + 1], cache) for t in range(7)], dim=1)
        assert cache.pos == 7
        torch.testing.assert_close(steps, full, rtol=1e-12, atol=1e-12)
        cache = m.init_cache(2, 9, dtype=DT)
        pre = m(x[:, :4], cache)              # prefill (empty cache, several tokens)
        rest = m(x[:, 4:], cache)             # then token by token
        torch.testing.assert_close(torch.cat([pre, rest], 1), full, rtol=1e-12, atol=1e-12)
        if feedback:  # the cached past outputs are the parallel s
            torch.testing.assert_close(cache.upto("s", 7), full, rtol=1e-12, atol=1e-12)


def test_prefill_into_used_cache_raises():
    m = make()
    cache = m.init_cache(1, 8, dtype=DT)
    m(torch.randn(1, 1, 8, dtype=DT), cache)
    with pytest.raises(ValueError, match="empty cache"):
        m.prefill(torch.randn(1, 3, 8, dtype=DT), cache)


def test_causality():
    m = make()
    x = torch.randn(1, 8, 8, dtype=DT)
    y = m(x)
    x2 = x.clone()
    x2[0, 5] += 1.0
    y2 = m(x2)
    torch.testing.assert_close(y2[:, :5], y[:, :5], rtol=0, atol=0)
    assert (y2[:, 5:] - y[:, 5:]).abs().amax(-1).min() > 1e-6  # every later output sees the change


@pytest.mark.parametrize("g", [0, 1, -0.5, 1.5, 0.0, 1.0, float("nan"), "x"])
def test_bad_gamma_max(g):
    with pytest.raises(ValueError, match="gamma_max"):
        SessaMixer(8, 2, gamma_max=g)


def test_bad_shapes_and_names():
    with pytest.raises(ValueError, match="divisible"):
        SessaMixer(10, 3)
    with pytest.raises(ValueError, match="even"):
        SessaMixer(6, 2)  # head dim 3
    with pytest.raises(ValueError, match="impl"):
        SessaMixer(8, 2, impl="nope")
    with pytest.raises(ValueError, match="backend"):
        SessaMixer(8, 2, backend="nope")


def test_contraction_bound():
    gmax = 0.9
    m = make(8, 2, gamma_max=gmax, seed=3)
    with torch.no_grad():
        m.gamma_bias.fill_(4.0)  # gamma close to gamma_max everywhere: the bound is nearly reached
    x = torch.randn(3, 40, 8, dtype=DT)
    f = CausalAttention.parallel(m, x)
    s = m(x)
    bound = f.abs().amax(1) / (1 - gmax)        # per (batch, channel), max over time
    assert (s.abs().amax(1) <= bound * (1 + 1e-12)).all()
    # Tightness: constant f = 1 with gamma ~ gmax drives s towards 1 / (1 - gmax).
    T = 200
    ones = torch.ones(1, T, 1, dtype=DT)
    s1 = kernels.feedback(ones, torch.zeros_like(ones), torch.zeros_like(ones), torch.full((1, T), gmax, dtype=DT))
    assert s1.max() <= 1 / (1 - gmax) and s1[0, -1, 0] > 0.5 / (1 - gmax)


def _impulse_closed_form(tau, l, g):
    """s[tau + l] for f = e_tau, alpha[t, j] = 1/t (j < t), constant gamma g."""
    G = math.lgamma
    return g * math.exp(G(tau + 1) - G(tau + 1 + g) + G(tau + l + g) - G(tau + l + 1))


def test_impulse_response_uniform_routing():
    T, tau, g = 64, 5, 0.7
    t = torch.arange(T, dtype=DT)
    alpha = torch.where(t[None, :] < t[:, None], 1.0 / t[:, None].clamp(min=1), 0.0)[None]  # (1, T, T)
    f = torch.zeros(1, T, 1, dtype=DT)
    f[0, tau] = 1.0
    gamma = torch.full((1, T), g, dtype=DT)
    s = solve_routing(alpha, gamma, f)[0, :, 0]
    assert (s[:tau] == 0).all() and s[tau] == 1.0
    want = torch.tensor([_impulse_closed_form(tau, l, g) for l in range(1, T - tau)], dtype=DT)
    torch.testing.assert_close(s[tau + 1:], want, rtol=1e-10, atol=0)
    # q_b = k_b = 0 gives equal logits, i.e. the same uniform routing through the mixer's solve path.
    z = torch.zeros(1, T, 3, dtype=DT)
    s3 = kernels.feedback(f.expand(1, T, 3).contiguous(), z, z, gamma)
    torch.testing.assert_close(s3[0, tau + 1:, 2], want, rtol=1e-10, atol=0)


def test_power_law_tail():
    T, tau, g = 2048, 0, 0.5
    t = torch.arange(T, dtype=DT)
    alpha = torch.where(t[None, :] < t[:, None], 1.0 / t[:, None].clamp(min=1), 0.0)[None]
    f = torch.zeros(1, T, 1, dtype=DT)
    f[0, tau] = 1.0
    s = solve_routing(alpha, torch.full((1, T), g, dtype=DT), f)[0, :, 0]
    slope = lambda l1, l2: math.log(s[tau + l2] / s[tau + l1]) / math.log(l2 / l1)
    assert abs(slope(1000, 2000) + (1 - g)) < 2e-3
    assert abs(slope(1000, 2000) + (1 - g)) < abs(slope(10, 20) + (1 - g))  # approaches it from afar


@pytest.mark.parametrize("D,H", [(8, 2), (12, 3), (16, 4)])
def test_parameter_count(D, H):
    for fb in (True, False):
        block = GatedBlock(D, SessaMixer(D, H, feedback=fb))
        assert sum(p.numel() for p in block.parameters()) == 9 * D * D + 11 * D + 1


def test_no_feedback_is_the_forward_branch():
    m = make(8, 2, feedback=False)
    attn = CausalAttention(8, 2, backend="math").to(DT)
    missing, _ = attn.load_state_dict(m.state_dict(), strict=False)
    assert not missing
    x = torch.randn(2, 5, 8, dtype=DT)
    torch.testing.assert_close(m(x), attn(x), rtol=0, atol=0)


def test_accounting():
    D, H, Hkv, L = 16, 4, 2, 9
    m = SessaMixer(D, H, Hkv)
    cache = m.init_cache(1, 3)
    per_tok = sum(b[0, 0].numel() for b in cache.buffers.values())
    assert m.state_per_token() == per_tok == 2 * Hkv * (D // H) + 2 * D
    # forward attention 4 D (L+1)/2, feedback logits + weighted sum 4 D (L-1)/2, gamma * ctx + f: 2 D.
    assert m.flops_per_token(L) == 4 * D * 5 + 4 * D * 4 + 2 * D
    nofb = SessaMixer(D, H, Hkv, feedback=False)
    assert nofb.state_per_token() == 2 * Hkv * (D // H) and nofb.flops_per_token(L) == 4 * D * 5


def test_backend_recorded():
    m = make()
    m(torch.randn(1, 3, 8, dtype=DT))
    assert m.backend_used() == "math+dense"  # auto resolves to dense for a short CPU sequence


def test_the_solve_gets_the_two_level_block_by_default(monkeypatch):
    """The mixer hands its feedback solve R = kernels.DEFAULT_BLOCK_ROWS (two-level above R rows, the single
    level below: the bench's fastest Triton setting) unless built with feedback_block_rows=None."""
    seen = []
    real = kernels.feedback

    def spy(*args, block_rows=None, **kw):
        seen.append(block_rows)
        return real(*args, block_rows=block_rows, **kw)

    monkeypatch.setattr(kernels, "feedback", spy)
    x = torch.randn(1, 6, 16, dtype=torch.float64)
    for rows, want in (({}, kernels.DEFAULT_BLOCK_ROWS), ({"feedback_block_rows": None}, None),
                       ({"feedback_block_rows": 128}, 128)):
        SessaMixer(16, 2, **rows).double()(x)
        assert seen[-1] == want
    assert kernels.DEFAULT_BLOCK_ROWS == 1024


def test_a_runs_backends_name_the_triton_solves_strip_settings(monkeypatch):
    """`backends` in a run's summary tells the Triton solve's strip settings apart (the default changed in
    lease 23; runs before it recorded plain `triton`, the chunk's tile): the solve stubbed, as on a GPU."""
    monkeypatch.setattr(kernels, "feedback", lambda f, *a, **kw: f)
    x = torch.randn(1, 6, 16, dtype=torch.float64)
    wave = {"feedback_dense_blocks": False}  # the wavefronts, the default until lease 33
    for kw, want in (({}, "math+triton-t128-dense"),  # blocks inverted whole: no wavefront reads the strips (no d)
                     ({"feedback_block_rows": None}, "math+triton-t128d"),  # no blocks to invert: wavefronts
                     ({"feedback_chunk": 32}, "math+triton-t128-c32-dense"),
                     (wave, "math+triton-t128d"),
                     ({"feedback_strip_tile": None, "feedback_strip_diag": False, **wave}, "math+triton"),
                     ({"feedback_strip_tile": 64, **wave}, "math+triton-t64d"),
                     ({"feedback_strip_diag": False, **wave}, "math+triton-t128"),
                     ({"feedback_chunk": 32, **wave}, "math+triton-t128d-c32"),
                     ({"feedback_strip_diag": False, "feedback_dense_blocks": True}, "math+triton-t128-dense")):
        m = SessaMixer(16, 2, backend="math", impl="triton", **kw).double()
        m(x)
        assert m.backend_used() == want, kw
    assert (kernels.DEFAULT_STRIP_TILE, kernels.DEFAULT_STRIP_DIAG, kernels.DEFAULT_DENSE_BLOCKS) == (128, True, True)


def test_the_mixer_passes_its_chunk_to_the_solve_and_checks_it(monkeypatch):
    """feedback_chunk reaches kernels.feedback (64 unless asked); a chunk the kernels lack, or a block of rows
    that is not a multiple of it, is refused when the mixer is built, naming the field."""
    seen = []
    monkeypatch.setattr(kernels, "feedback", lambda f, *a, chunk=None, **kw: seen.append(chunk) or f)
    x = torch.randn(1, 6, 16, dtype=torch.float64)
    for kw, want in (({}, 64), ({"feedback_chunk": 16}, 16), ({"feedback_chunk": 32}, 32)):
        SessaMixer(16, 2, impl="triton", **kw).double()(x)
        assert seen[-1] == want
    for kw, match in (({"feedback_chunk": 48}, "chunk=48"), ({"feedback_chunk": True}, "chunk=True"),
                      ({"feedback_chunk": 128}, "chunk=128"),  # tried and removed (kernels/NOTES.md)
                      ({"feedback_chunk": 32, "feedback_block_rows": 48}, "block_rows=48"),
                      ({"feedback_dense_blocks": True, "feedback_block_rows": None}, "dense_blocks=True needs")):
        with pytest.raises(ValueError, match=match):
            SessaMixer(16, 2, **kw)
