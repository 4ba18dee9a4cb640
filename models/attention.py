"""Causal multi-head softmax attention with RoPE: the Transformer family's mixer and Sessa's forward branch.

Backends (`backend=`): `math` (the einsum reference), `sdpa` (torch scaled_dot_product_attention, cuDNN >
FLASH > EFFICIENT > MATH on CUDA), `flash_attn` (the flash-attn package, CUDA and bf16/fp16 only) and
`auto` (the fastest one available for the tensors at hand). The backend that actually ran is recorded.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .cache import LayerCache
from .masked_read import masked_read
from .mixer import Mixer, WidthError
from .per_position import once_per_position
from .rope import angle_dtype, rope_cos_sin, rope_inv_freq, rotate, rotation
from .sdpa_order import sdpa_in_order

BACKENDS = ("auto", "math", "sdpa", "flash_attn")


@functools.cache  # a failed import is not cached by Python: look once, not on every forward
def _flash_attn_func():
    """flash-attn's causal kernel, if the package imports (FA2, else the FA4 CuTe build)."""
    try:
        from flash_attn import flash_attn_func
        return flash_attn_func
    except Exception:
        pass
    try:
        from flash_attn.cute import flash_attn_func
        return flash_attn_func
    except Exception:
        return None


def attention_math(q, k, v):
    """Reference causal attention. q: (B, T, H, d), k/v: (B, T, Hkv, d); softmax in >= float32."""
    H, Hkv, d = q.shape[2], k.shape[2], q.shape[-1]
    if Hkv != H:
        k, v = k.repeat_interleave(H // Hkv, dim=2), v.repeat_interleave(H // Hkv, dim=2)
    acc = torch.promote_types(q.dtype, torch.float32)
    s = torch.einsum("bthd,bshd->bhts", q.to(acc), k.to(acc)) / math.sqrt(d)
    T, S = q.shape[1], k.shape[1]
    mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    p = s.masked_fill(~mask, float("-inf")).softmax(-1)
    return torch.einsum("bhts,bshd->bthd", p, v.to(acc)).to(q.dtype)


def attention_sdpa(q, k, v):
    d = q.shape[-1]
    pad = -d % 8
    if pad:
        # The fused kernels (flash, cuDNN, memory-efficient) want a head dim that is a multiple of 8, and the
        # Transformer's widths give 66. Padding is exact: zero columns add nothing to q.k, v's zero columns
        # give zero outputs cut off below, and the scale is the true head dim's. Done here, not left to
        # whatever the kernel dispatch or torch.compile's lowering does with an odd head dim (a compiled
        # Transformer at head dim 66 trained to a constant prediction on the H200: compile_check.py).
        q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    gqa = k.shape[2] != q.shape[2]
    scale = 1.0 / math.sqrt(d)
    o = sdpa_in_order(("cudnn", "flash", "efficient", "math"), qt, kt, vt, is_causal=True, enable_gqa=gqa,
                      scale=scale)
    o = o.transpose(1, 2)
    return o[..., :d] if pad else o


def resolve_backend(backend: str, x: torch.Tensor, flash_available: bool | None = None) -> str:
    """The backend a call on x runs. flash_available: the flash-attn probe, taken once when the module is
    built, so that a forward only reads x's device and dtype (constants to torch.compile)."""
    if backend not in BACKENDS:
        raise ValueError(f"attention backend={backend!r} is not one of {BACKENDS}")
    if flash_available is None:
        flash_available = _flash_attn_func() is not None
    fa_ok = x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and flash_available
    if backend == "flash_attn" and not fa_ok:
        raise RuntimeError("attention backend='flash_attn' needs the flash-attn package, CUDA tensors and "
                           "bf16/fp16 activations; use backend='sdpa' or 'auto'")
    if backend == "auto":
        return "flash_attn" if fa_ok else "sdpa"
    return backend


class CausalAttention(Mixer):
    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None = None, backend: str = "auto",
                 rope_base: float = 10000.0, use_rope: bool = True):
        super().__init__()
        n_kv_heads = n_kv_heads or n_heads
        if n_heads < 1:
            raise ValueError(f"n_heads={n_heads} must be >= 1")
        if d_model % n_heads:
            raise WidthError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        if n_kv_heads < 1 or n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} must be divisible by n_kv_heads={n_kv_heads}")
        self.head_dim = d_model // n_heads
        if use_rope and self.head_dim % 2:
            raise WidthError(f"head dim d_model/n_heads = {self.head_dim} must be even (RoPE rotates pairs)")
        if backend not in BACKENDS:
            raise ValueError(f"attention backend={backend!r} is not one of {BACKENDS}")
        self.d_model, self.n_heads, self.n_kv_heads, self.backend = d_model, n_heads, n_kv_heads, backend
        # Availability probe once, at build time: a forward then dispatches on x's device and dtype only.
        self._flash_available = backend in ("auto", "flash_attn") and _flash_attn_func() is not None
        self.use_rope = use_rope  # False: no positional signal in the mixer (official use_forward_rope=False)
        kv_dim = n_kv_heads * self.head_dim
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, kv_dim)
        self.v_proj = nn.Linear(d_model, kv_dim)
        self.out_proj = nn.Linear(d_model, d_model, bias=False) if n_heads > 1 else nn.Identity()
        # Kept out of the state_dict and out of .to(dtype): RoPE angles must stay in float32.
        self._inv_freq = rope_inv_freq(self.head_dim, rope_base) if use_rope else None

    # --- pieces shared with Sessa ------------------------------------------------------------------
    def qkv(self, x: torch.Tensor, start: int = 0):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        if not self.use_rope:
            return q, k, v
        # One angle table for q and k; inv_freq is copied to the device once, not on every call.
        dev = self._rope_on.get(x.device)
        if dev is None:
            dev = self._rope_on[x.device] = self._inv_freq.to(x.device)
        dtype = angle_dtype(x)

        def angles():  # cos, sin and their complex multiplier, built once for q and k
            cos, sin = rope_cos_sin(dev, start, T, x.device, dtype)
            return cos, sin, rotation(cos, sin)
        # a static decode step: once for all layers (per_position.py)
        cos, sin, rot = once_per_position(start, ("rope", self._rope_key, T, x.device, dtype), angles) \
            if isinstance(start, torch.Tensor) else angles()
        return rotate(q, cos, sin, rot), rotate(k, cos, sin, rot), v

    @property
    def _inv_freq(self) -> torch.Tensor | None:
        return self._inv_freq_master

    @_inv_freq.setter
    def _inv_freq(self, value: torch.Tensor | None) -> None:
        # The converter installs the official buffer's values here: drop the per-device copies.
        self._inv_freq_master, self._rope_on = value, ({} if value is None else {value.device: value})
        # what identifies its angles among the layers of a decode step (the master copy is on the CPU; on the
        # meta device, where the budget solver builds models, there are no values and no decoding)
        self._rope_key = None if value is None or value.is_meta else tuple(value.tolist())

    def _apply(self, fn, recurse=True):
        # Moving the module copies inv_freq to the new device now, so a forward finds it without filling
        # the dict (a dict that changes between calls makes torch.compile recompile).
        out = super()._apply(fn, recurse)
        dev = self.q_proj.weight.device
        if self._inv_freq_master is not None and dev.type != "meta" and dev not in self._rope_on:
            self._rope_on[dev] = self._inv_freq_master.to(dev)
        return out

    def attend(self, q, k, v):
        backend = resolve_backend(self.backend, q, self._flash_available)
        self._backend_used = backend
        if backend == "flash_attn":
            o = _flash_attn_func()(q, k, v, causal=True)  # flash-attn 2 registers it as a torch custom op
            o = o[0] if isinstance(o, tuple) else o
        elif backend == "sdpa":
            o = attention_sdpa(q, k, v)
        else:
            o = attention_math(q, k, v)
        return o

    def merge(self, o: torch.Tensor) -> torch.Tensor:
        return self.out_proj(o.flatten(-2))

    # --- Mixer interface ---------------------------------------------------------------------------
    def parallel(self, x):
        return self.merge(self.attend(*self.qkv(x)))

    def init_cache(self, batch_size, max_len, device=None, dtype=None):
        kv = (self.n_kv_heads, self.head_dim)
        return LayerCache(batch_size, max_len, {"k": kv, "v": kv}, device=device, dtype=dtype)

    def prefill(self, x, cache):
        q, k, v = self.qkv(x)
        cache.write(k=k, v=v)
        cache.advance(x.shape[1])
        return self.merge(self.attend(q, k, v))

    def step_attend(self, x, cache):
        """Attention output (B, 1, H, d) for one new token; stores its k, v but does not advance."""
        q, k, v = self.qkv(x, start=cache.pos)
        cache.write(k=k, v=v)
        end = cache.pos + 1
        # One query attends to every cached key (no mask). SDPA reads the cache in its own dtype: an
        # upcast copy of a long cache would cost more memory than the cache itself.
        k, v = cache.upto("k", end), cache.upto("v", end)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           enable_gqa=k.shape[2] != q.shape[2])
        return o.transpose(1, 2)

    def step(self, x, cache):
        o = self.step_attend(x, cache)
        cache.advance(1)
        return self.merge(o)

    def step_attend_static(self, x, cache, pos):
        """step_attend at the position held by the device tensor pos, over the whole preallocated cache:
        keys at positions > pos are masked out, so the shapes never change (CUDA-graph safe)."""
        q, k, v = self.qkv(x, start=pos)
        cache.write_at(pos, k=k, v=v)
        K, V = cache.buffers["k"], cache.buffers["v"]
        seen = once_per_position(pos, ("seen", K.shape[1], K.device),
                                 lambda: torch.arange(K.shape[1], device=K.device) <= pos)  # (L,)
        return masked_read(q[:, 0], K, V, seen, cache.read)[:, None]  # (B, 1, H, hd)

    def step_static(self, x, cache, pos):
        return self.merge(self.step_attend_static(x, cache, pos))

    def flops_per_token(self, seq_len):
        # q.k and p.v over (seq_len + 1) / 2 keys on average, 2 FLOPs per multiply-add.
        return 4.0 * self.d_model * (seq_len + 1) / 2

    def state_per_token(self):
        return 2 * self.n_kv_heads * self.head_dim
