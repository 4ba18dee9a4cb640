"""The bench's own floor for an attention block: causal multi-head attention in a few lines around
F.scaled_dot_product_attention, with a RoPE table built once per (T, device, dtype) in the activations' dtype.

`make bench` times Sessa against our attention block (models/attention.py) and against this one, inside the
same GatedBlock, so an unusually slow attention block of ours can never flatter Sessa (issue 14). Nothing
here is shared with models/attention.py on purpose: the reference must not inherit that block's costs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MinimalAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, rope_base: float = 10000.0):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.inv_freq = 1.0 / rope_base ** (torch.arange(0, self.head_dim, 2).double() / self.head_dim)
        self.tables: dict = {}

    def rope_table(self, T: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (T, device, dtype)
        if key not in self.tables:  # angles in float64, then rounded once to the activations' dtype
            angles = torch.outer(torch.arange(T, dtype=torch.float64), self.inv_freq)
            self.tables[key] = (angles.cos().to(device, dtype), angles.sin().to(device, dtype))
        return self.tables[key]

    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        cos, sin = self.rope_table(T, x.device, q.dtype)

        def rope(t):  # rotate-half on the two halves of each head
            a, b = t.chunk(2, dim=-1)
            return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)

        y = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(B, T, D))
