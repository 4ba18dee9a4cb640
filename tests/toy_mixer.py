"""A fourth mixer living outside the package: the causal running mean of a linear projection.
Used to show that a new baseline needs only a class and one YAML file."""

import torch
from torch import nn

from sessa_bench.models.cache import LayerCache
from sessa_bench.models.mixer import Mixer


class RunningMeanMixer(Mixer):
    def __init__(self, d_model: int, n_heads: int, scale: float = 1.0):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)
        self.scale = scale

    def parallel(self, x):
        csum = self.proj(x).cumsum(1)
        return self.scale * csum / torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)[:, None]

    def init_cache(self, batch_size, max_len, device=None, dtype=None):
        return LayerCache(batch_size, max_len, {}, {"sum": (self.proj.out_features,)}, device, dtype)

    def step(self, x, cache):
        cache.states["sum"] += self.proj(x[:, 0])
        cache.advance(1)
        return (self.scale * cache.states["sum"] / cache.pos)[:, None]
