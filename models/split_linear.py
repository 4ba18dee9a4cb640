"""The two halves of a linear layer of 2n outputs, each as its own contiguous tensor.

`lin(x).chunk(2, -1)` gives two strided views of one (..., 2n) product. Sessa's q_b, k_b are such halves of
proj_fb, and the Triton feedback solve reads contiguous rows: it copied both, forward and again backward, and
the backward concatenated their gradients, ~0.15 ms of a T = 4096 block step on an H200 (lease 39,
scripts/profile_block_kernels.py). The gated block's GELU and gate read W_in's halves at stride 2n, unvectorised:
0.04 ms each there, forward (as the minimal block's, also halves of one product). Over a sequence each
half is its own product, on its half of the weight (the parameters stay one Linear, so checkpoints and official
weights are unchanged); a decoding step (one position) keeps the one product, whose (B, 1, 2n) halves are read
in place. The price, backward: a second bias-gradient sum (~0.03 ms at that shape, whatever its width) and a sum
of the two input gradients (scripts/profile_block_kernels.py --chunked times the layers without the split).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def split_linear(lin: nn.Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """lin(x).chunk(2, -1) for x (..., T, D), the halves contiguous where T > 1."""
    if x.dim() < 2 or x.shape[-2] == 1:
        return lin(x).chunk(2, dim=-1)
    n = lin.out_features // 2
    w, b = lin.weight, lin.bias
    return F.linear(x, w[:n], None if b is None else b[:n]), F.linear(x, w[n:], None if b is None else b[n:])
