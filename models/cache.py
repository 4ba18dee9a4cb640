"""Decode state of one mixer: per-token buffers that grow with the context, plus fixed-size states.

Attention keeps post-RoPE keys and values, Sessa also its feedback keys and past outputs, Mamba2 only a
fixed conv window and SSM state. Buffers are preallocated to `max_len` so a decode step never copies the
whole context.

Two ways to decode: the eager `step` keeps the position on the host (`pos`, a Python int; reads only the
first `pos` entries), the static `step_static` takes it as a (1,) int64 device tensor, writes with index
ops and reads the whole preallocated buffer under a mask, so every step has the same shapes and can be
replayed from a CUDA graph (models/generate.py).
"""

from __future__ import annotations

import torch


class LayerCache:
    def __init__(self, batch_size: int, max_len: int, per_token: dict[str, tuple[int, ...]],
                 fixed: dict[str, tuple[int, ...]] | None = None, device=None, dtype=None):
        self.max_len = max_len
        # how step_static reads the buffers (models/masked_read.py): attention's, Sessa's feedback's; set by
        # StaticDecoder
        self.read = self.feedback_read = "reduce"
        self.pos = 0  # number of tokens already absorbed
        self.buffers = {k: torch.zeros(batch_size, max_len, *shape, device=device, dtype=dtype)
                        for k, shape in per_token.items()}
        self.states = {k: torch.zeros(batch_size, *shape, device=device, dtype=dtype)
                       for k, shape in (fixed or {}).items()}

    def write(self, **tensors: torch.Tensor) -> None:
        """Store tensors of shape (B, T, ...) at positions pos .. pos+T-1 (call advance() afterwards)."""
        for name, t in tensors.items():
            end = self.pos + t.shape[1]
            if end > self.max_len:
                raise ValueError(f"cache overflow: {end} tokens > max_len={self.max_len}")
            self.buffers[name][:, self.pos:end] = t

    def write_at(self, pos: torch.Tensor, **tensors: torch.Tensor) -> None:
        """Store tensors of shape (B, 1, ...) at the position held by `pos`, a (1,) int64 device tensor:
        an index op, so a decode step neither syncs with the host nor changes shape (CUDA-graph safe).
        Does not touch the host-side counter `self.pos`."""
        for name, t in tensors.items():
            self.buffers[name].index_copy_(1, pos, t.to(self.buffers[name].dtype))

    def reset(self) -> None:
        """Empty the cache in place (buffers keep their addresses, as a captured CUDA graph needs)."""
        self.pos = 0
        for t in (*self.buffers.values(), *self.states.values()):
            t.zero_()

    def upto(self, name: str, end: int) -> torch.Tensor:
        """The first `end` positions of a per-token buffer."""
        return self.buffers[name][:, :end]

    def advance(self, n: int) -> None:
        self.pos += n

    def nbytes(self) -> int:
        """Bytes held for the tokens seen so far (per-token buffers up to pos, plus fixed states)."""
        per_tok = sum(b[:, :self.pos].numel() * b.element_size() for b in self.buffers.values())
        return per_tok + sum(s.numel() * s.element_size() for s in self.states.values())
