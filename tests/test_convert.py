"""models/convert.py against the official SessaLayer's math computed by hand (LayerNorm, W_in split, erf
GELU, interleaved RoPE with the stored inv_freq, causal softmax, out_proj, feedback loop, gate, W_out,
residual), exact round trips of official state_dicts, and clear errors for mismatched ones."""

import math

import pytest
import torch

from sessa_bench.models.attention import CausalAttention
from sessa_bench.models.block import GatedBlock
from sessa_bench.models.convert import official_sessa_layer, to_official_sessa_layer
from sessa_bench.models.sessa import SessaMixer

DT = torch.float64


def official_state_dict(D=8, H=2, Hkv=None, rope=True, dtype=DT, seed=0, max_len=None):
    """Random weights under the official names and shapes (LibratioAI/sessa v1.0.0 SessaLayer)."""
    g = torch.Generator().manual_seed(seed)
    d, kv = D // H, (Hkv or H) * (D // H)
    r = lambda *shape: torch.randn(shape, generator=g, dtype=DT).mul(0.5).to(dtype)
    sd = {"ln.weight": 1 + r(D), "ln.bias": r(D), "W_in.weight": r(2 * D, D), "W_in.bias": r(2 * D),
          "mixer.q_proj.weight": r(D, D), "mixer.q_proj.bias": r(D),
          "mixer.k_proj.weight": r(kv, D), "mixer.k_proj.bias": r(kv),
          "mixer.v_proj.weight": r(kv, D), "mixer.v_proj.bias": r(kv),
          "mixer.proj_fb.weight": r(2 * D, D), "mixer.proj_fb.bias": r(2 * D),
          "mixer.gamma_bias": r(), "mixer.gamma_ctx.weight": r(1, D),
          "W_out.weight": r(D, D), "W_out.bias": r(D)}
    if H > 1:
        sd["mixer.out_proj.weight"] = r(D, D)
    if rope:  # the official buffer: float32 arithmetic, then cast with the model
        sd["mixer.rope_inv_freq"] = (10000.0 ** (-2 * torch.arange(d // 2, dtype=torch.float32) / d)).to(dtype)
    if max_len:
        ones = torch.ones(max_len, max_len, dtype=torch.bool)
        sd["mixer.causal_mask_f_full"], sd["mixer.causal_mask_fb_full"] = ones.triu(1), ones.triu(0)
    return sd


def official_forward_by_hand(sd, x, H, Hkv=None, rope=True, gamma_max=0.999, eps=1e-5):
    B, T, D = x.shape
    Hkv, d = Hkv or H, D // H
    W = lambda name, v: v @ sd[name + ".weight"].T + sd[name + ".bias"]
    y = torch.zeros_like(x)
    for b in range(B):
        # per token: LayerNorm, W_in split, exact GELU
        abar, gate = [], []
        for t in range(T):
            xt = x[b, t]
            mu = xt.mean()
            var = ((xt - mu) ** 2).mean()
            h = (xt - mu) / math.sqrt(var + eps) * sd["ln.weight"] + sd["ln.bias"]
            u = W("W_in", h)
            a = u[:D]
            abar.append(torch.tensor([0.5 * ai * (1 + math.erf(ai / math.sqrt(2))) for ai in a.tolist()], dtype=DT))
            gate.append(u[D:])

        def rot(v, t):
            if not rope:
                return v
            out = v.clone()
            for i in range(d // 2):
                ang = t * float(sd["mixer.rope_inv_freq"][i])
                out[2 * i] = v[2 * i] * math.cos(ang) - v[2 * i + 1] * math.sin(ang)
                out[2 * i + 1] = v[2 * i] * math.sin(ang) + v[2 * i + 1] * math.cos(ang)
            return out

        q = [W("mixer.q_proj", abar[t]).view(H, d) for t in range(T)]
        k = [W("mixer.k_proj", abar[t]).view(Hkv, d) for t in range(T)]
        v = [W("mixer.v_proj", abar[t]).view(Hkv, d) for t in range(T)]
        f = []
        for t in range(T):
            heads = []
            for hh in range(H):
                kvh = hh // (H // Hkv)
                sc = [float(rot(q[t][hh], t) @ rot(k[j][kvh], j)) / math.sqrt(d) for j in range(t + 1)]
                e = [math.exp(s - max(sc)) for s in sc]
                heads.append(sum(e[j] / sum(e) * v[j][kvh] for j in range(t + 1)))
            o = torch.cat(heads)
            f.append(sd["mixer.out_proj.weight"] @ o if H > 1 else o)
        # feedback: s[t] = f[t] + gamma[t] sum_{j<t} softmax_j(q_b[t].k_b[j]/sqrt(D)) s[j]
        s = []
        for t in range(T):
            fb = W("mixer.proj_fb", abar[t])
            qb = fb[:D]
            gam = gamma_max * math.tanh(float(sd["mixer.gamma_bias"]) + float(sd["mixer.gamma_ctx.weight"][0] @ abar[t]))
            st = f[t].clone()
            if t:
                sc = [float(qb @ W("mixer.proj_fb", abar[j])[D:]) / math.sqrt(D) for j in range(t)]
                e = [math.exp(c - max(sc)) for c in sc]
                st = st + gam * sum(e[j] / sum(e) * s[j] for j in range(t))
            s.append(st)
        for t in range(T):
            y[b, t] = x[b, t] + W("W_out", s[t] * gate[t])
    return y


CASES = [dict(H=2), dict(H=1), dict(H=2, rope=False), dict(H=2, Hkv=1), dict(H=4, Hkv=2, eps=1e-3)]


@pytest.mark.parametrize("case", CASES)
def test_converted_block_matches_official_math(case):
    H, Hkv, rope, eps = case["H"], case.get("Hkv"), case.get("rope", True), case.get("eps", 1e-5)
    sd = official_state_dict(8, H, Hkv, rope)
    assert ("mixer.out_proj.weight" in sd) == (H > 1)
    block = official_sessa_layer(sd, H, Hkv, gamma_max=0.95, use_forward_rope=rope, ln_eps=eps, backend="math")
    x = torch.randn(2, 5, 8, dtype=DT, generator=torch.Generator().manual_seed(1))
    want = official_forward_by_hand(sd, x, H, Hkv, rope, gamma_max=0.95, eps=eps)
    with torch.no_grad():
        torch.testing.assert_close(block(x), want, rtol=1e-12, atol=1e-12)
        # and the converted block decodes the same way
        cache = block.mixer.init_cache(2, 5, dtype=DT)
        steps = torch.cat([block(x[:, t:t + 1], cache) for t in range(5)], 1)
        torch.testing.assert_close(steps, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_round_trip_is_exact(case, dtype):
    H, Hkv, rope = case["H"], case.get("Hkv"), case.get("rope", True)
    sd = official_state_dict(8, H, Hkv, rope, dtype=dtype)
    block = official_sessa_layer(sd, H, Hkv, use_forward_rope=rope)
    assert block.W_in.weight.dtype == dtype
    back = to_official_sessa_layer(block)
    assert sorted(back) == sorted(sd)
    for k in sd:
        assert back[k].dtype == sd[k].dtype and torch.equal(back[k], sd[k]), k


def test_mask_buffers_are_accepted_and_emitted():
    sd = official_state_dict(8, 2, max_len=6)
    block = official_sessa_layer(sd, 2)
    back = to_official_sessa_layer(block, max_len=6)
    assert sorted(back) == sorted(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    bad = dict(sd, **{"mixer.causal_mask_fb_full": torch.ones(6, 6, dtype=torch.bool).triu(1)})
    with pytest.raises(ValueError, match="causal_mask_fb_full"):
        official_sessa_layer(bad, 2)


def test_native_block_exports_and_reloads():
    torch.manual_seed(0)
    block = GatedBlock(8, SessaMixer(8, 2, backend="math")).to(DT)
    sd = to_official_sessa_layer(block)
    assert sd["mixer.rope_inv_freq"].shape == (2,)
    again = official_sessa_layer(sd, 2, backend="math")
    x = torch.randn(1, 4, 8, dtype=DT)
    with torch.no_grad():
        torch.testing.assert_close(again(x), block(x), rtol=0, atol=0)


def test_missing_and_unexpected_keys():
    sd = official_state_dict(8, 2)
    del sd["mixer.proj_fb.bias"]
    sd["mixer.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys \['mixer.proj_fb.bias'\].*unexpected keys \['mixer.extra'\]"):
        official_sessa_layer(sd, 2)
    with pytest.raises(ValueError, match="out_proj"):  # H=1 has no out_proj
        official_sessa_layer(official_state_dict(8, 2), 1)
    with pytest.raises(ValueError, match="unexpected keys.*rope_inv_freq"):
        official_sessa_layer(official_state_dict(8, 2), 2, use_forward_rope=False)
    with pytest.raises(ValueError, match="missing keys.*rope_inv_freq"):
        official_sessa_layer(official_state_dict(8, 2, rope=False), 2)
    with pytest.raises(ValueError, match="ln.weight"):
        official_sessa_layer({"weight": torch.zeros(3)}, 1)


def test_wrong_shapes_and_buffers():
    with pytest.raises(ValueError, match="k_proj.weight"):  # GQA weights read as full MHA
        official_sessa_layer(official_state_dict(8, 4, 2), 4)
    sd = official_state_dict(8, 2)
    sd["mixer.rope_inv_freq"] = sd["mixer.rope_inv_freq"] * 1.01
    with pytest.raises(ValueError, match="rope_inv_freq"):
        official_sessa_layer(sd, 2)


def test_export_rejects_what_official_cannot_run():
    with pytest.raises(ValueError, match="feedback=False"):
        to_official_sessa_layer(GatedBlock(8, SessaMixer(8, 2, feedback=False)))
    with pytest.raises(ValueError, match="GatedBlock"):
        to_official_sessa_layer(GatedBlock(8, CausalAttention(8, 2)))
    with pytest.raises(ValueError, match="rope"):
        to_official_sessa_layer(GatedBlock(8, SessaMixer(8, 2, rope_base=500.0)))
