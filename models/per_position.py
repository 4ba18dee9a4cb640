"""What every layer of one static decode step computes alike from the position tensor, computed once.

The static step (Backbone.decode_step) hands each layer the same (1,) int64 device tensor `pos`; from it every
attention layer built its RoPE angles and its cache mask again (arange, add, cast, multiply, cos, sin, arange,
compare: ~8 of the ~30 launches of a Transformer layer, counted on CPU, each replayed from the CUDA graph). The
first layer of a step now builds them and the rest reuse its tensors. The memo lives on `pos` itself, keyed by
its version counter, which every in-place change (the decoder's pos.add_(1), fill_, zero_) bumps: a new value
of pos never meets the old tensors. In a CUDA graph the first layer's kernels are captured and rerun at every
replay, and the other layers read their outputs. Compiled (Inductor fuses these ops anyway) and for inference
tensors (no version counter) each layer computes its own.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def once_per_position(pos: torch.Tensor, key: tuple, make: Callable[[], T]) -> T:
    """make() the first time this key is asked for at the current value of pos; its result after that."""
    if torch.compiler.is_compiling() or pos.is_inference():
        return make()
    version = pos._version
    memo = getattr(pos, "_per_position", None)
    if memo is None or memo[0] != version:
        memo = (version, {})
        pos._per_position = memo
    if key not in memo[1]:
        memo[1][key] = make()
    return memo[1][key]
