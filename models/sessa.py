"""Sessa's mixer: causal attention (the forward branch) feeding a recurrent attention over past outputs.

    f = out_proj(causal MHA with RoPE)(a)                       forward branch = CausalAttention
    alpha[t, j] = softmax_{j<t}(q_b[t] . k_b[j] / sqrt(D))       feedback routing, strict past, no RoPE
    gamma[t] = gamma_max * tanh(gamma_bias + <a[t], w_gamma>)    per-token feedback gain in (-1, 1)
    s[t] = f[t] + gamma[t] * sum_{j<t} alpha[t, j] s[j]          i.e. (I - diag(gamma) alpha) s = f

Exactly the official LibratioAI/sessa v1.0.0 layer (docs/design.md, section 3), parameter names included, so
models/convert.py maps official weights one to one. The parallel path hands the solve to
models.kernels.feedback (dense reference or faster impls); decoding keeps k, v (post-RoPE), k_b and s
per token and applies the recurrence directly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import kernels
from .attention import CausalAttention
from .cache import LayerCache
from .masked_read import masked_read
from .per_position import once_per_position
from .split_linear import split_linear


class SessaMixer(CausalAttention):
    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None = None, gamma_max: float = 0.999,
                 backend: str = "auto", impl: str = "auto", feedback: bool = True,
                 rope_base: float = 10000.0, use_rope: bool = True,
                 feedback_block_rows: int | None = kernels.DEFAULT_BLOCK_ROWS,
                 feedback_strip_tile: int | None = kernels.DEFAULT_STRIP_TILE,
                 feedback_strip_diag: bool = kernels.DEFAULT_STRIP_DIAG,
                 feedback_chunk: int = kernels.DEFAULT_CHUNK, feedback_dense_blocks: bool | None = None):
        # feedback_block_rows: R for the two-level Triton solve (kernels/NOTES.md; R >= T is one block: the single
        # level with wavefronts), None for the single-level wavefront at every T; feedback_strip_tile: the tile of
        # its strip kernels (None: the chunk); feedback_strip_diag: its wavefronts read their alpha tiles from the
        # strips; feedback_chunk: the rows a wavefront step solves; feedback_dense_blocks: no wavefront, each block
        # of feedback_block_rows inverted whole (kernels/NOTES.md), None: kernels.DEFAULT_DENSE_BLOCKS where there
        # are blocks (with feedback_block_rows None, wavefronts). Speed knobs of impl='triton' only (the others
        # ignore them).
        if feedback_dense_blocks is None:
            feedback_dense_blocks = kernels.DEFAULT_DENSE_BLOCKS and feedback_block_rows is not None
        try:
            ok = 0.0 < float(gamma_max) < 1.0
        except (TypeError, ValueError):
            ok = False
        if not ok:  # |gamma| < 1 keeps the feedback contractive: |s| <= max|f| / (1 - gamma_max)
            raise ValueError(f"sessa gamma_max={gamma_max!r} must lie strictly between 0 and 1")
        if impl not in kernels.IMPLS:
            raise ValueError(f"sessa impl={impl!r} is not one of {kernels.IMPLS}")
        kernels.check_strip_tile(feedback_strip_tile)
        kernels.check_chunk(feedback_chunk)
        kernels.check_block_rows(feedback_block_rows, feedback_chunk, feedback_dense_blocks)
        super().__init__(d_model, n_heads, n_kv_heads, backend, rope_base, use_rope)
        self.gamma_max, self.impl, self.feedback = float(gamma_max), impl, bool(feedback)
        self.feedback_block_rows, self.feedback_strip_tile = feedback_block_rows, feedback_strip_tile
        self.feedback_strip_diag, self.feedback_chunk = bool(feedback_strip_diag), feedback_chunk
        self.feedback_dense_blocks = bool(feedback_dense_blocks)
        self._triton_ok = impl in ("auto", "triton") and kernels.triton_available()  # probed once, here
        # Feedback parameters exist even with feedback=False, so the ablation changes nothing else.
        self.proj_fb = nn.Linear(d_model, 2 * d_model)          # [q_b | k_b], one full-width head
        self.gamma_ctx = nn.Linear(d_model, 1, bias=False)
        self.gamma_bias = nn.Parameter(torch.tensor(1.0))

    def gamma(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) feedback gains, in at least float32."""
        return self.gamma_max * self.gain_tanh(x)

    def gain_tanh(self, x: torch.Tensor) -> torch.Tensor:
        """tanh(gamma_bias + <x, w_gamma>) in at least float32 (gamma / gamma_max). The bias is read in its dtype
        by the add itself, which promotes to the float32 product (exact, as a cast of it first would be)."""
        acc = torch.promote_types(x.dtype, torch.float32)
        return torch.tanh(self.gamma_ctx(x).squeeze(-1).to(acc) + self.gamma_bias)

    def feedback_qk(self, x: torch.Tensor):
        return split_linear(self.proj_fb, x)  # q_b, k_b each contiguous: the Triton solve reads their rows

    # --- Mixer interface ---------------------------------------------------------------------------
    def parallel(self, x):
        f = super().parallel(x)
        if not self.feedback:
            return f
        q_b, k_b = self.feedback_qk(x)
        self._impl_used = kernels.resolve_impl(self.impl, f, self._triton_ok)
        return self._solve(f, q_b, k_b, x, self._impl_used)

    def _solve(self, f, q_b, k_b, x, impl: str):
        """s = (I - diag(gamma) alpha)^{-1} f with the mixer's solve settings (the forward and prefill share them)."""
        return kernels.feedback(f, q_b, k_b, self.gamma(x), impl=impl, triton_ok=self._triton_ok,
                                block_rows=self.feedback_block_rows, strip_tile=self.feedback_strip_tile,
                                strip_diag=self.feedback_strip_diag, chunk=self.feedback_chunk,
                                dense_blocks=self.feedback_dense_blocks)

    def init_cache(self, batch_size, max_len, device=None, dtype=None):
        if not self.feedback:
            return super().init_cache(batch_size, max_len, device=device, dtype=dtype)
        kv, D = (self.n_kv_heads, self.head_dim), (self.d_model,)
        return LayerCache(batch_size, max_len, {"k": kv, "v": kv, "k_b": D, "s": D}, device=device, dtype=dtype)

    def prefill(self, x, cache):
        if cache.pos:
            raise ValueError(f"prefill needs an empty cache, this one already holds {cache.pos} tokens")
        if not self.feedback:
            return super().prefill(x, cache)
        q, k, v = self.qkv(x)
        f = self.merge(self.attend(q, k, v))
        q_b, k_b = self.feedback_qk(x)
        s = self._solve(f, q_b, k_b, x, self.impl)
        cache.write(k=k, v=v, k_b=k_b, s=s)
        cache.advance(x.shape[1])
        return s

    def step(self, x, cache):
        if not self.feedback:
            return super().step(x, cache)
        t = cache.pos
        f = self.merge(self.step_attend(x, cache))  # (B, 1, D); k, v of token t are now cached
        q_b, k_b = self.feedback_qk(x)
        s = f
        if t > 0:  # token 0 has no past: s[0] = f[0]
            acc = torch.promote_types(f.dtype, torch.float32)
            logits = torch.einsum("bd,bsd->bs", q_b[:, 0].to(acc), cache.upto("k_b", t).to(acc))
            alpha = (logits / math.sqrt(self.d_model)).softmax(-1)
            ctx = torch.einsum("bs,bsd->bd", alpha, cache.upto("s", t).to(acc))
            s = torch.addcmul(f, self.gamma(x)[..., None], ctx[:, None]).to(f.dtype)  # as step_static
        cache.write(k_b=k_b, s=s)
        cache.advance(1)
        return s

    def step_static(self, x, cache, pos):
        """step() at the position held by the device tensor pos, over the whole preallocated cache.
        The routing over past outputs is one masked read of a single D-wide head (models/masked_read.py); at
        pos = 0 there is no past and s = f."""
        if not self.feedback:
            return super().step_static(x, cache, pos)
        f = self.merge(self.step_attend_static(x, cache, pos))      # (B, 1, D)
        q_b, k_b = self.feedback_qk(x)
        # k_b is written before the read (the mask hides position pos, and at pos = 0 the context is multiplied
        # by 0), s after it: with both writes after the read, torch.compile kept one of them out of place, a
        # copy of the whole buffer every step (models/cache.py, write_at)
        cache.write_at(pos, k_b=k_b)
        Kb, S = cache.buffers["k_b"], cache.buffers["s"]          # (B, L, D)
        L = Kb.shape[1]

        def visible():  # column 0 stays visible at pos = 0 so no row is empty (no NaN); its context is x 0
            j = torch.arange(L, device=Kb.device)
            return (j < pos) | (j == 0)
        past = once_per_position(pos, ("past", L, Kb.device), visible)  # once for all layers of the step
        ctx = masked_read(q_b[:, 0, None].to(Kb.dtype), Kb[:, :, None], S[:, :, None], past,
                          cache.feedback_read)  # (B, 1, D): one head, D wide
        acc = torch.promote_types(f.dtype, torch.float32)
        # gamma_max from position 1 on, 0 at pos = 0, once for all layers of the step: the gain is then one
        # product, gamma_max tanh(.) as gamma() has it (times 1), or 0
        scale = once_per_position(pos, ("gain", acc, self.gamma_max), lambda: (pos > 0).to(acc) * self.gamma_max)
        g = self.gain_tanh(x)[..., None] * scale                 # (B, 1, 1)
        # f + g ctx in float32 (g is), rounded once to f's dtype: two kernels of the eager step where the
        # casts of f and ctx, the product and the sum were five (22 layers: 66 launches a step)
        s = torch.addcmul(f, g, ctx).to(f.dtype)
        cache.write_at(pos, s=s)
        return s

    # --- accounting --------------------------------------------------------------------------------
    def flops_per_token(self, seq_len):
        fwd = super().flops_per_token(seq_len)
        if not self.feedback:
            return fwd
        # Token t routes over its t strict-past outputs, (seq_len - 1) / 2 on average: q_b.k_b logits
        # (2D each) and the weighted sum of past s (2D each). That weighted sum *is* the triangular
        # solve (T(T-1)/2 multiply-adds per channel), so it is counted once; + 2D for f + gamma * ctx.
        past = (seq_len - 1) / 2
        return fwd + 4.0 * self.d_model * past + 2.0 * self.d_model

    def state_per_token(self):
        # k, v of the forward branch plus k_b and s of the feedback branch.
        return super().state_per_token() + (2 * self.d_model if self.feedback else 0)

    def backend_used(self):
        attn = super().backend_used()
        impl = getattr(self, "_impl_used", self.impl)
        if impl == "triton":
            impl = kernels.triton_label(self.feedback_strip_tile, self.feedback_strip_diag, self.feedback_chunk,
                                        self.feedback_dense_blocks)
        return attn if not self.feedback or attn is None else f"{attn}+{impl}"
