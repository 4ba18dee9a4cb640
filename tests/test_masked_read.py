"""models/masked_read.py: both reads of a static decode step against a plain softmax attention over the
unmasked positions, in float64, with grouped-query heads and a single wide head (Sessa's feedback read)."""

import math
import re

import pytest
import torch

from sessa_bench.models.generate import StaticDecoder
from sessa_bench.models.masked_read import READS, masked_read


def reference(q, K, V, mask):
    B, H, d = q.shape
    G = H // K.shape[2]
    out = torch.empty_like(q)
    for b in range(B):
        for h in range(H):
            k, v = K[b, mask, h // G], V[b, mask, h // G]  # kv head of query head h: h // G
            w = torch.softmax(k @ q[b, h] / math.sqrt(d), 0)
            out[b, h] = w @ v
    return out


@pytest.mark.parametrize("impl", [r for r in READS if r != "triton"])  # triton: test_split_read.py
@pytest.mark.parametrize("H,Hkv,d", [(4, 4, 5), (6, 2, 3), (1, 1, 24), (3, 1, 4)])
def test_read_equals_softmax_attention_over_the_mask(impl, H, Hkv, d):
    torch.manual_seed(0)
    B, L = 3, 11
    q = torch.randn(B, H, d, dtype=torch.float64)
    K, V = (torch.randn(B, L, Hkv, d, dtype=torch.float64) for _ in range(2))
    mask = torch.tensor([1, 1, 0, 1, 1, 1, 0, 0, 1, 0, 0], dtype=torch.bool)
    torch.testing.assert_close(masked_read(q, K, V, mask, impl), reference(q, K, V, mask), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("H,Hkv", [(1, 1), (4, 2), (3, 3)])  # Sessa's feedback head; grouped; one kv head each
def test_matmul_read_of_half_caches_keeps_float32_logits(H, Hkv):
    """bfloat16 caches: the matmul read against the reference on the same (rounded) values in float64, within
    bfloat16's rounding of the output and of the weights (0.2 % here), not of the logits (rounded to bfloat16,
    logits up to ~13 move the output by ~4 % of its largest entry: checked when this test was written)."""
    torch.manual_seed(1)
    B, L, d = 2, 64, 32
    q = (4 * torch.randn(B, H, d)).bfloat16()
    K, V = (torch.randn(B, L, Hkv, d).bfloat16() for _ in range(2))
    mask = torch.ones(L, dtype=torch.bool)
    want = reference(q.double(), K.double(), V.double(), mask)
    got = masked_read(q, K, V, mask, "matmul")
    assert got.dtype == torch.bfloat16
    assert float((got.double() - want).abs().max()) <= 2e-2 * float(want.abs().max())


def test_bad_read_is_one_clear_error():
    q = torch.zeros(1, 1, 2)
    with pytest.raises(ValueError, match=r"decode read='flash' is not one of \('reduce', 'sdpa', 'triton', 'matmul'\)"):
        masked_read(q, q[:, None], q[:, None], torch.ones(1, dtype=torch.bool), "flash")
    from sessa_bench.models.backbone import Backbone
    from sessa_bench.models.config import ModelConfig
    model = Backbone(ModelConfig(vocab_size=5, d_model=8, n_layers=1, n_heads=2, mixer="attention"))
    for bad in ("flash", "sdpa+flash", "matmul+flash", "sdpa+matmul+reduce"):
        with pytest.raises(ValueError, match=rf"decode read='{re.escape(bad)}' must be 'auto', one of "
                                             r"\('reduce', 'sdpa', 'triton', 'matmul'\) \(every cache\), or 'A\+B'"):
            StaticDecoder(model, 1, 4, read=bad)
    for good in ("matmul", "matmul+sdpa"):  # the matmul read of attention's caches (block-diagonal queries)
        assert StaticDecoder(model, 1, 4, read=good).read == good


def test_composite_read_sets_attention_and_feedback_reads():
    from sessa_bench.models.backbone import Backbone
    from sessa_bench.models.config import ModelConfig
    sessa = Backbone(ModelConfig(vocab_size=5, d_model=8, n_layers=2, n_heads=2, mixer="sessa"))
    for read, want in (("sdpa+matmul", ("sdpa", "matmul")), ("reduce", ("reduce", "reduce"))):
        dec = StaticDecoder(sessa, 2, 4, read=read)
        assert dec.read == read and all((c.read, c.feedback_read) == want for c in dec.caches)


def test_auto_read_is_the_one_measured_faster_at_the_batch_size():
    from sessa_bench.models.generate import resolve_read
    # Sessa, eager or compiled, with or without Triton: attention by sdpa, the feedback head by the matmul read
    for compile in (False, True):
        for triton in (False, True):
            assert {resolve_read("auto", b, compile=compile, triton=triton) for b in (1, 2, 16)} == {"sdpa+matmul"}
    # the Transformer's: sdpa eager at every batch, compiled reduce above it
    assert [resolve_read("auto", b, "attention", triton=True) for b in (1, 16)] == ["sdpa", "sdpa"]
    assert [resolve_read("auto", b, "attention", compile=True) for b in (1, 16)] == ["sdpa", "sdpa"]
    assert [resolve_read("auto", b, "my_mixer") for b in (1, 16)] == ["sdpa+matmul"] * 2  # no entry: Sessa's
    assert resolve_read("sdpa", 1) == "sdpa" and resolve_read("reduce", 16) == "reduce"
    from sessa_bench.models.backbone import Backbone
    from sessa_bench.models.config import ModelConfig
    model = Backbone(ModelConfig(vocab_size=5, d_model=8, n_layers=1, n_heads=2, mixer="attention"))
    assert StaticDecoder(model, 1, 4).read == "sdpa" and StaticDecoder(model, 16, 4).read == "sdpa"
    sessa = Backbone(ModelConfig(vocab_size=5, d_model=8, n_layers=1, n_heads=2, mixer="sessa"))
    assert StaticDecoder(sessa, 1, 4).read == "sdpa+matmul"  # no Triton needed: the same on the CPU
