"""Backbone, blocks and decoding for every family, on CPU in float64."""

import pytest
import torch

from sessa_bench.models.backbone import Backbone
from sessa_bench.models.config import ModelConfig

FAMILIES = {
    "sessa": ("sessa", {"gamma_max": 0.9}),
    "transformer": ("attention", {"backend": "math"}),
    "mamba2": ("mamba2", {"headdim": 8, "d_state": 8, "chunk_size": 4}),
    "sessa_nofb": ("sessa", {"feedback": False}),
}


def make(family, block="gated", head="lm", **kw):
    mixer, mk = FAMILIES[family]
    cfg = ModelConfig(vocab_size=17, d_model=16, n_layers=2, n_heads=2, mixer=mixer, mixer_kwargs=mk,
                      block=block, head=head, n_classes=5 if head == "cls" else 0, **kw)
    return Backbone(cfg).double().eval()


@pytest.mark.parametrize("block", ["gated", "prenorm_mlp"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_causal(family, block):
    model = make(family, block)
    idx = torch.randint(0, 17, (2, 12))
    ref = model(idx)
    t = 7
    idx2 = idx.clone()
    idx2[:, t] = (idx2[:, t] + 1) % 17
    out = model(idx2)
    assert torch.allclose(out[:, :t], ref[:, :t], atol=1e-12)
    assert not torch.allclose(out[:, t], ref[:, t])  # the perturbation is visible where it should be


@pytest.mark.parametrize("block", ["gated", "prenorm_mlp"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_decode_matches_parallel(family, block):
    model = make(family, block)
    idx = torch.randint(0, 17, (2, 11))
    ref = model(idx)
    # token by token from an empty cache
    caches = model.init_cache(2, 11)
    steps = torch.cat([model(idx[:, t:t + 1], caches) for t in range(11)], dim=1)
    assert torch.allclose(steps, ref, atol=1e-10)
    # prompt prefill, then steps
    caches = model.init_cache(2, 11)
    mixed = torch.cat([model(idx[:, :6], caches)] + [model(idx[:, t:t + 1], caches) for t in range(6, 11)], 1)
    assert torch.allclose(mixed, ref, atol=1e-10)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_generate_is_greedy_argmax(family):
    model = make(family)
    prompt = torch.randint(0, 17, (2, 5))
    out = model.generate(prompt, max_new_tokens=6)
    # reference: re-run the full parallel forward for every new token
    seq = prompt
    for _ in range(6):
        seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)


def test_class_head_reads_last_real_position():
    model = make("transformer", head="cls")
    idx = torch.randint(0, 17, (2, 9))
    lengths = torch.tensor([9, 5])
    logits = model(idx, lengths=lengths)
    assert logits.shape == (2, 5)
    # padding after position 5 must not change the second row
    assert torch.allclose(logits[1], model(idx[1:, :5])[0], atol=1e-12)


def test_tied_head_and_param_names():
    model = make("sessa", tie_embeddings=True)
    assert model.head.weight is model.embed.weight
    names = set(dict(model.named_parameters()))
    assert {"blocks.0.ln.weight", "blocks.0.W_in.weight", "blocks.0.W_out.bias",
            "blocks.0.mixer.proj_fb.weight", "blocks.0.mixer.gamma_bias"} <= names


def test_bad_config_errors():
    with pytest.raises(ValueError, match="model.mixer"):
        Backbone(ModelConfig(vocab_size=10, mixer="no_such_mixer"))
    with pytest.raises(ValueError, match="block"):
        Backbone(ModelConfig(vocab_size=10, mixer="attention", block="resnet"))
    with pytest.raises(ValueError, match="model.d_model"):
        ModelConfig(vocab_size=10, d_model=0)
    with pytest.raises(ValueError, match="model.head"):
        ModelConfig(vocab_size=10, head="seq2seq")
    with pytest.raises(ValueError, match="n_heads"):
        Backbone(ModelConfig(vocab_size=10, d_model=30, n_heads=4, mixer="attention"))


def test_dotted_path_mixer():
    cfg = ModelConfig(vocab_size=10, d_model=8, n_heads=2, mixer="sessa_bench.models.attention.CausalAttention")
    assert Backbone(cfg)(torch.randint(0, 10, (1, 4))).shape == (1, 4, 10)


def test_embedding_init_follows_model_embed_std():
    """model.embed_std sets the embedding's N(0, std) init: 1 by default (0.02 stops recall), with an untied LM
    head; the committed runs before 2026-11-30 used 0.02 and a tied head, which stay reachable."""
    torch.manual_seed(0)
    small = Backbone(ModelConfig(vocab_size=512, d_model=64, n_layers=1, mixer="attention", embed_std=0.02,
                                 tie_embeddings=True))
    big = Backbone(ModelConfig(vocab_size=512, d_model=64, n_layers=1, mixer="attention"))
    assert small.head.weight is small.embed.weight and big.head.weight is not big.embed.weight
    assert abs(small.embed.weight.std().item() - 0.02) < 0.002 and abs(big.embed.weight.std().item() - 1.0) < 0.05
    with pytest.raises(ValueError, match=r"^model.embed_std must be a positive number, got 0$"):
        ModelConfig(vocab_size=8, embed_std=0)
