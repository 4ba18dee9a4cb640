"""The two residual blocks every family can use around its mixer.

GatedBlock is the paper's "Sessa layer", shared by all three families by default:
    h = LayerNorm(x);  [a, g] = W_in h;  y = x + W_out(Mixer(GELU(a)) * g)
The gate g has no activation; there is no MLP and no second norm. Parameter names follow the official
Sessa layer (ln, W_in, W_out, mixer) so weights convert one to one.

PreNormMLPBlock is the usual GPT / Mamba block (norm -> mixer -> residual -> norm -> MLP -> residual),
offered for standard baselines with `block=prenorm_mlp`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .split_linear import split_linear

BLOCKS = ("gated", "prenorm_mlp")


def _mix(mixer, h, cache, pos):
    # pos (a device tensor) only on the static decode path, so mixers written as forward(x, cache) still work.
    return mixer(h, cache) if pos is None else mixer(h, cache, pos)


class GatedBlock(nn.Module):
    def __init__(self, d_model: int, mixer: nn.Module):
        super().__init__()
        self.ln = nn.LayerNorm(d_model)
        self.W_in = nn.Linear(d_model, 2 * d_model)
        self.W_out = nn.Linear(d_model, d_model)
        self.mixer = mixer

    def forward(self, x, cache=None, pos=None):
        a, g = split_linear(self.W_in, self.ln(x))  # contiguous halves: GELU and the gate run vectorised
        return x + self.W_out(_mix(self.mixer, F.gelu(a), cache, pos) * g)


class PreNormMLPBlock(nn.Module):
    def __init__(self, d_model: int, mixer: nn.Module, mlp_ratio: int = 4):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.mixer = mixer
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(),
                                 nn.Linear(mlp_ratio * d_model, d_model))

    def forward(self, x, cache=None, pos=None):
        x = x + _mix(self.mixer, self.ln1(x), cache, pos)
        return x + self.mlp(self.ln2(x))


def make_block(kind: str, d_model: int, mixer: nn.Module, mlp_ratio: int = 4) -> nn.Module:
    if kind == "gated":
        return GatedBlock(d_model, mixer)
    if kind == "prenorm_mlp":
        return PreNormMLPBlock(d_model, mixer, mlp_ratio)
    raise ValueError(f"block={kind!r} is not one of {BLOCKS}")
