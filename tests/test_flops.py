"""The FLOP count (sessa_bench/flops.py) against PyTorch's own matmul FLOP counter."""

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sessa_bench.budget import describe
from sessa_bench.flops import forward_flops_per_token, mfu, train_flops_per_token
from sessa_bench.models.backbone import Backbone
from sessa_bench.models.config import ModelConfig


@pytest.mark.parametrize("tie", [False, True])
def test_transformer_count_matches_the_matmul_counter(tie):
    D, V, T, L = 16, 17, 10, 2
    model = Backbone(ModelConfig(vocab_size=V, d_model=D, n_layers=L, n_heads=2, mixer="attention",
                                 mixer_kwargs={"backend": "math"}, tie_embeddings=tie))
    with FlopCounterMode(display=False) as counter:
        model(torch.randint(0, V, (1, T)))
    measured = counter.get_total_flops() / T
    # The counter sees the full T x T score and value matmuls (4 D T per token and layer) and no
    # bias, norm or elementwise work; our count has the causal half 2 D (T + 1) and 2 FLOPs per parameter.
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear) and m is not model.head)
    embeddings = model.embed.weight.numel() + (0 if tie else model.head.weight.numel())  # the head is counted apart
    others = sum(p.numel() for p in model.parameters()) - embeddings - linear
    ours = forward_flops_per_token(model, T)
    assert ours == pytest.approx(measured - L * 4 * D * T + L * 2 * D * (T + 1) + 2 * others)
    assert train_flops_per_token(model, T) == 3 * ours


def test_budget_table_uses_the_same_count():
    cfg = ModelConfig(vocab_size=17, d_model=16, n_layers=2, n_heads=2, mixer="sessa")
    assert describe(cfg, 64)["train_flops_per_token"] == train_flops_per_token(Backbone(cfg), 64)


def test_mfu_and_bad_length(monkeypatch):
    assert math.isnan(mfu(1e5, 1e9, torch.device("cpu")))  # the bench tables' convention
    assert mfu(1e5, 1e9, torch.device("cpu"), 2, unknown=None) is None  # summary.json's
    import sessa_bench.flops
    monkeypatch.setattr(sessa_bench.flops, "peak_flops", lambda device: 1e12)  # as if the device had a known peak
    assert mfu(3e5, 7e9, torch.device("cpu"), world_size=2) == 3e5 * 7e9 / (1e12 * 2)  # tokens/s over 2 devices
    assert mfu(3e5, 7e9, torch.device("cpu")) == 3e5 * 7e9 / 1e12
    with pytest.raises(ValueError, match="seq_len"):
        forward_flops_per_token(Backbone(ModelConfig(vocab_size=5)), 0)
