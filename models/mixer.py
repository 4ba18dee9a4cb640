"""The interface every sequence mixer implements, so blocks, decoding and budgets treat them alike.

A mixer maps (B, T, D) -> (B, T, D) causally. To add a new one, subclass Mixer, implement `parallel`,
`init_cache` and `step` (and optionally a faster `prefill` and a fixed-shape `step_static`), and point a model config at the class.
Declare the decode cache it keeps (`state_per_token`, `state_fixed`) so parameter tables can report it; a
mixer that declares neither is reported as "not declared", never as 0. Raise `WidthError` from the
constructor for a width (d_model, n_heads) the mixer cannot take: the budget solver then tries the next
width, whereas any other error is a config error and stops the run with its own message.
"""

from __future__ import annotations

import torch
from torch import nn

from .cache import LayerCache


class WidthError(ValueError):
    """This mixer cannot take this d_model / n_heads combination (the budget solver tries another width)."""


class Mixer(nn.Module):
    def forward(self, x: torch.Tensor, cache: LayerCache | None = None,
                pos: torch.Tensor | None = None) -> torch.Tensor:
        if pos is not None:
            return self.step_static(x, cache, pos)
        if cache is None:
            return self.parallel(x)
        if cache.pos == 0 and x.shape[1] > 1:
            return self.prefill(x, cache)
        return torch.cat([self.step(x[:, t:t + 1], cache) for t in range(x.shape[1])], dim=1)

    def parallel(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def init_cache(self, batch_size: int, max_len: int, device=None, dtype=None) -> LayerCache:
        raise NotImplementedError

    def step(self, x: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        """Consume one token x: (B, 1, D), update the cache, return (B, 1, D)."""
        raise NotImplementedError

    def step_static(self, x: torch.Tensor, cache: LayerCache, pos: torch.Tensor) -> torch.Tensor:
        """Fixed-shape decode step: consume x: (B, 1, D) at the position held by pos ((1,) int64, on x's
        device), write the cache there with index ops, return (B, 1, D). No host sync, no allocation that
        depends on pos, and cache.pos is left alone, so the step can be captured in a CUDA graph.
        Mixers without one decode through `step` (models/generate.py falls back)."""
        raise NotImplementedError

    def prefill(self, x: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        """Run a prompt into an empty cache. Default: token by token (exact, slow); mixers override."""
        return torch.cat([self.step(x[:, t:t + 1], cache) for t in range(x.shape[1])], dim=1)

    # --- accounting used by the budget solver and benchmarks -------------------------------------
    def flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs per token that are not parameter matmuls (e.g. attention scores), averaged
        over a causal sequence of length seq_len."""
        return 0.0

    def state_per_token(self) -> int:
        """Decode-cache elements that grow with each token of context."""
        return 0

    def state_fixed(self) -> int:
        """Decode-cache elements that do not grow with context (e.g. an SSM state)."""
        return 0

    @classmethod
    def declares_state(cls) -> bool:
        """Whether the class says what its decode cache holds (overrides state_per_token or state_fixed):
        the defaults above are 0 for the part a mixer does not have, not a measurement."""
        return cls.state_per_token is not Mixer.state_per_token or cls.state_fixed is not Mixer.state_fixed

    def backend_used(self) -> str | None:
        """Name of the implementation that ran last (recorded in run summaries)."""
        return getattr(self, "_backend_used", None)
