"""Weights to and from the official Sessa code (LibratioAI/sessa v1.0.0), one layer at a time.

The official SessaLayer and our GatedBlock(SessaMixer) share parameter names (ln, W_in, W_out,
mixer.{q,k,v}_proj, mixer.proj_fb, mixer.out_proj, mixer.gamma_bias, mixer.gamma_ctx), so conversion is
mostly validation. The differences are buffers: the official mixer stores `rope_inv_freq` (only with
use_forward_rope=True) and, when built with max_len, two boolean causal masks; ours computes both. The
hyper-parameters that no weight records (n_heads, n_kv_heads, gamma_max, use_forward_rope, ln_eps) must be
passed in as the official layer was built.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .block import GatedBlock
from .rope import rope_inv_freq
from .sessa import SessaMixer

# Buffers the official mixer registers when built with max_len: triu(ones, 1) and triu(ones, 0).
_MASKS = {"mixer.causal_mask_f_full": 1, "mixer.causal_mask_fb_full": 0}


def official_shapes(d_model: int, n_heads: int, n_kv_heads: int | None = None,
                    use_forward_rope: bool = True) -> dict[str, tuple[int, ...]]:
    """Names and shapes of one official SessaLayer's state_dict (without the optional mask buffers)."""
    D, d = d_model, d_model // n_heads
    kv = (n_kv_heads or n_heads) * d
    shapes = {
        "ln.weight": (D,), "ln.bias": (D,),
        "W_in.weight": (2 * D, D), "W_in.bias": (2 * D,),
        "mixer.q_proj.weight": (D, D), "mixer.q_proj.bias": (D,),
        "mixer.k_proj.weight": (kv, D), "mixer.k_proj.bias": (kv,),
        "mixer.v_proj.weight": (kv, D), "mixer.v_proj.bias": (kv,),
        "mixer.proj_fb.weight": (2 * D, D), "mixer.proj_fb.bias": (2 * D,),
        "mixer.gamma_bias": (), "mixer.gamma_ctx.weight": (1, D),
        "W_out.weight": (D, D), "W_out.bias": (D,),
    }
    if n_heads > 1:
        shapes["mixer.out_proj.weight"] = (D, D)
    if use_forward_rope:
        shapes["mixer.rope_inv_freq"] = (d // 2,)
    return shapes


def _check_masks(sd: Mapping[str, torch.Tensor]) -> None:
    for name, diagonal in _MASKS.items():
        if name not in sd:
            continue
        m = sd[name]
        if m.dim() != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"state_dict[{name!r}] must be a square mask, got shape {tuple(m.shape)}")
        want = torch.ones(m.shape, dtype=torch.bool).triu(diagonal)
        if not torch.equal(m.bool().cpu(), want):
            raise ValueError(f"state_dict[{name!r}] is not the causal mask triu(ones, {diagonal}) "
                             "the official mixer registers")


def official_sessa_layer(state_dict: Mapping[str, torch.Tensor], n_heads: int, n_kv_heads: int | None = None,
                         gamma_max: float = 0.999, use_forward_rope: bool = True, ln_eps: float = 1e-5,
                         **mixer_kwargs) -> GatedBlock:
    """Our GatedBlock(SessaMixer) computing what the official SessaLayer with this state_dict computes.

    mixer_kwargs (backend, impl) pass to SessaMixer. The block takes the dtype and device of W_in.weight.
    """
    if "ln.weight" not in state_dict:
        raise ValueError("state_dict has no 'ln.weight': not one official SessaLayer's state_dict "
                         f"(keys start with {sorted(state_dict)[:5]})")
    D = state_dict["ln.weight"].shape[0]
    mixer = SessaMixer(D, n_heads, n_kv_heads, gamma_max=gamma_max, use_rope=use_forward_rope, **mixer_kwargs)
    expected = official_shapes(D, n_heads, n_kv_heads, use_forward_rope)

    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected) - set(_MASKS))
    if missing or unexpected:
        raise ValueError(f"official Sessa state_dict (d_model={D}, n_heads={n_heads}, n_kv_heads={n_kv_heads}, "
                         f"use_forward_rope={use_forward_rope}) does not match: missing keys {missing}, "
                         f"unexpected keys {unexpected}")
    wrong = [f"{k}: {tuple(state_dict[k].shape)} != expected {shape}"
             for k, shape in expected.items() if tuple(state_dict[k].shape) != shape]
    if wrong:
        raise ValueError(f"official Sessa state_dict (d_model={D}, n_heads={n_heads}, n_kv_heads={n_kv_heads}) "
                         f"has wrong shapes: {'; '.join(wrong)}")
    _check_masks(state_dict)

    ref = state_dict["W_in.weight"]
    block = GatedBlock(D, mixer).to(device=ref.device, dtype=ref.dtype)
    block.ln.eps = ln_eps
    params = {k: v for k, v in state_dict.items() if k != "mixer.rope_inv_freq" and k not in _MASKS}
    block.load_state_dict(params, strict=True)

    if use_forward_rope:
        stored = state_dict["mixer.rope_inv_freq"].detach().to("cpu", torch.float64)
        ours = rope_inv_freq(D // n_heads)
        # The official buffer is computed in float32 (exponent rounding: ~1e-6 relative), maybe cast since.
        tol = max(1e-5, 4 * torch.finfo(state_dict["mixer.rope_inv_freq"].dtype).eps)
        if not torch.allclose(stored, ours, rtol=tol, atol=0.0):
            raise ValueError(f"state_dict['mixer.rope_inv_freq'] differs from 10000^(-2i/d) for head dim "
                             f"d={D // n_heads}: check n_heads={n_heads}")
        mixer._inv_freq = stored  # the official values to the last bit, so angles match exactly
    return block


def to_official_sessa_layer(block: nn.Module, max_len: int | None = None) -> dict[str, torch.Tensor]:
    """State_dict that the official SessaLayer (same D, n_heads, n_kv_heads, use_forward_rope) loads.
    Pass max_len when the official layer is built with max_len: it then also expects its mask buffers."""
    mixer = getattr(block, "mixer", None)
    if not isinstance(block, GatedBlock) or not isinstance(mixer, SessaMixer):
        raise ValueError(f"block must be GatedBlock(d_model, SessaMixer(...)), got {type(block).__name__} "
                         f"with mixer {type(mixer).__name__}")
    if not mixer.feedback:
        raise ValueError("SessaMixer(feedback=False) has no official equivalent (the official layer always "
                         "runs the feedback solve)")
    sd = {k: v.detach().clone() for k, v in block.state_dict().items()}
    if mixer.use_rope:
        if not torch.allclose(mixer._inv_freq.double(), rope_inv_freq(mixer.head_dim), rtol=1e-5, atol=0.0):
            raise ValueError("the official code hard-codes rope base 10000; this mixer uses another rope_base")
        sd["mixer.rope_inv_freq"] = mixer._inv_freq.to(device=block.W_in.weight.device,
                                                       dtype=block.W_in.weight.dtype)
    if max_len is not None:
        ones = torch.ones(max_len, max_len, dtype=torch.bool, device=block.W_in.weight.device)
        sd.update({name: ones.triu(diagonal) for name, diagonal in _MASKS.items()})
    return sd
