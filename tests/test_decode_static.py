"""The static-cache decode path (step_static, Backbone.decode_step, models/generate.py) against the
parallel forward, in float64 on CPU; CUDA-graph replay on a GPU."""

import pytest
import torch

from sessa_bench.models.backbone import Backbone
from sessa_bench.models.config import ModelConfig
from sessa_bench.models.generate import StaticDecoder, cache_reads, greedy

FAMILIES = {
    "sessa": ("sessa", {"gamma_max": 0.9}),
    "sessa_gqa": ("sessa", {"gamma_max": 0.9, "n_kv_heads": 1}),
    "transformer": ("attention", {"backend": "math"}),
    "mamba2": ("mamba2", {"headdim": 8, "d_state": 8, "chunk_size": 4}),
    "sessa_nofb": ("sessa", {"feedback": False}),
}


def make(family, block="gated", dtype=torch.float64, device="cpu"):
    mixer, mk = FAMILIES[family]
    cfg = ModelConfig(vocab_size=17, d_model=16, n_layers=2, n_heads=2, mixer=mixer, mixer_kwargs=mk, block=block)
    return Backbone(cfg).to(device=device, dtype=dtype).eval()


@pytest.mark.parametrize("read", ["reduce", "sdpa", "sdpa+matmul", "matmul"])  # A+B: attention A, Sessa's feedback B
@pytest.mark.parametrize("block", ["gated", "prenorm_mlp"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_static_steps_match_parallel(family, block, read):
    model = make(family, block)
    idx = torch.randint(0, 17, (3, 9))
    ref = model(idx)
    # every token through the static step, from an empty cache longer than needed (masked tail)
    caches = model.init_cache(3, 12)
    for c in caches:
        c.read, c.feedback_read = cache_reads(read)
    pos = torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        steps = []
        for t in range(9):
            steps.append(model.decode_step(idx[:, t:t + 1], caches, pos))
            pos += 1
    assert torch.allclose(torch.stack(steps, 1), ref, atol=1e-10)
    assert all(c.pos == 0 for c in caches)  # the host counter is not touched by the static path
    # prefill with the parallel forward, then static steps
    caches = model.init_cache(3, 12)
    for c in caches:
        c.read, c.feedback_read = cache_reads(read)
    with torch.no_grad():
        first = model(idx[:, :4], caches)
        pos = torch.tensor([4])
        rest = []
        for t in range(4, 9):
            rest.append(model.decode_step(idx[:, t:t + 1], caches, pos))
            pos += 1
    assert torch.allclose(torch.cat([first, torch.stack(rest, 1)], 1), ref, atol=1e-10)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_greedy_is_the_argmax_of_the_parallel_forward(family):
    model = make(family)
    prompt = torch.randint(0, 17, (2, 5))
    out = greedy(model, prompt, 6)
    seq = prompt
    with torch.no_grad():
        for _ in range(6):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq)
    assert torch.equal(out, model.generate(prompt, 6))


def test_decoder_reset_and_errors():
    model = make("sessa")
    dec = StaticDecoder(model, 2, 8)
    dec.prefill(torch.randint(0, 17, (2, 5)))
    dec.advance()
    assert dec.pos.item() == 6 and dec.caches[0].buffers["s"][:, 5].abs().sum() > 0
    dec.reset()
    assert dec.pos.item() == 0 and all(t.abs().sum() == 0 for c in dec.caches for t in c.buffers.values())
    with pytest.raises(ValueError, match="max_len"):
        dec.prefill(torch.randint(0, 17, (2, 8)))
    with pytest.raises(ValueError, match="n_new"):
        greedy(model, torch.randint(0, 17, (2, 3)), 0)


def test_cache_length_is_rounded_up_and_changes_no_token():
    """The caches hold max_len rounded up to cache_multiple (aligned reads, models/generate.py); the positions
    past max_len are masked like any unwritten one, so the logits of every step are those of unpadded caches.
    A cache_multiple that is not a positive integer is refused by name."""
    model = make("sessa")
    prompt = torch.randint(0, 17, (2, 5))
    decs = {m: StaticDecoder(model, 2, 11, cache_multiple=m) for m in (1, 8, 64)}
    assert {m: d.cache_len for m, d in decs.items()} == {1: 11, 8: 16, 64: 64}
    assert all(c.buffers["s"].shape[1] == d.cache_len for d in decs.values() for c in d.caches)
    logits = {}
    for m, dec in decs.items():
        dec.prefill(prompt)
        steps = []
        for _ in range(5):
            steps.append(model.decode_step(dec.tok, dec.caches, dec.pos))
            dec.tok.copy_(steps[-1].argmax(-1, keepdim=True))
            dec.pos.add_(1)
        logits[m] = torch.stack(steps)
    assert torch.allclose(logits[8], logits[1], rtol=0, atol=1e-12)
    assert torch.allclose(logits[64], logits[1], rtol=0, atol=1e-12)
    for bad in (0, -64, 2.5, True):
        with pytest.raises(ValueError, match="cache_multiple must be a positive integer"):
            StaticDecoder(model, 2, 11, cache_multiple=bad)


def test_user_mixer_without_static_step_falls_back():
    cfg = ModelConfig(vocab_size=17, d_model=16, n_layers=1, n_heads=2, mixer="toy_mixer.RunningMeanMixer")
    model = Backbone(cfg).double().eval()
    assert not model.supports_static_decode
    prompt = torch.randint(0, 17, (2, 4))
    assert torch.equal(greedy(model, prompt, 3), model.generate(prompt, 3))


@pytest.mark.parametrize("family", ["sessa", "transformer"])
def test_a_decode_step_builds_its_angles_and_masks_once_for_all_layers(family):
    """models/per_position.py: the first layer of a static step builds the RoPE angles and the cache masks
    from pos, the others reuse them (one cos, one sin for 3 layers; each layer built its own before), and a
    new value of pos, changed in place as the decoder does, gets new ones: the steps still match the parallel
    forward. Without a version counter (inference mode) every layer builds its own, and the result is the same."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    mixer, mk = FAMILIES[family]
    cfg = ModelConfig(vocab_size=17, d_model=16, n_layers=3, n_heads=2, mixer=mixer, mixer_kwargs=mk)
    model = Backbone(cfg).double().eval()
    idx = torch.randint(0, 17, (2, 5))
    ref = model(idx)
    caches, pos, steps = model.init_cache(2, 8), torch.zeros(1, dtype=torch.long), []
    with torch.no_grad():
        for t in range(5):
            with Count() as c:
                steps.append(model.decode_step(idx[:, t:t + 1], caches, pos))
            assert (c.ops["cos"], c.ops["sin"], c.ops["complex"], c.ops["le"]) == (1, 1, 1, 1), c.ops
            assert c.ops["arange"] == (3 if family == "sessa" else 2), c.ops  # rope, seen (, past); was x3
            assert c.ops["gt"] == (1 if family == "sessa" else 0), c.ops  # Sessa's pos > 0
            pos += 1
    assert torch.allclose(torch.stack(steps, 1), ref, atol=1e-10)
    with torch.inference_mode():
        caches, pos, steps = model.init_cache(2, 8), torch.zeros(1, dtype=torch.long), []
        for t in range(5):
            with Count() as c:
                steps.append(model.decode_step(idx[:, t:t + 1], caches, pos))
            assert c.ops["cos"] == 3
            pos += 1
    assert torch.allclose(torch.stack(steps, 1), ref, atol=1e-10)


@pytest.mark.parametrize("family,read", [("sessa", None), ("transformer", None), ("mamba2", None),
                                         ("sessa", "matmul"), ("transformer", "matmul")])
def test_decode_step_traces_without_graph_breaks(family, read):
    # backend="eager": Dynamo alone, which is what finds graph breaks (fast; no code generation).
    model = make(family, dtype=torch.float32)
    caches, ref_caches = model.init_cache(2, 8), model.init_cache(2, 8)
    if read:  # None: the caches' default read
        for c in caches + ref_caches:
            c.read, c.feedback_read = cache_reads(read)
    step = torch.compile(model.decode_step, fullgraph=True, backend="eager")
    pos = torch.tensor([0])
    tok = torch.randint(0, 17, (2, 1))
    with torch.no_grad():
        for _ in range(3):
            out, ref = step(tok, caches, pos), model.decode_step(tok, ref_caches, pos)
            assert torch.allclose(out, ref, atol=1e-6)
            pos += 1


@pytest.mark.gpu
@pytest.mark.parametrize("family,read", [("sessa", "auto"), ("sessa", "triton"), ("transformer", "auto"),
                                         ("sessa", "matmul"), ("transformer", "matmul"), ("sessa", "triton+matmul"),
                                         ("sessa", "sdpa+reduce"),
                                         ("mamba2", "auto")])
def test_cuda_graph_greedy_matches_eager(family, read):
    model = make(family, dtype=torch.float32, device="cuda")
    prompt = torch.randint(0, 17, (4, 7), device="cuda")
    graph = greedy(model, prompt, 12, cuda_graph=True, read=read)
    eager = greedy(model, prompt, 12, cuda_graph=False, read=read)
    assert torch.equal(graph, eager)
    assert torch.equal(eager, model.generate(prompt, 12))


@pytest.mark.gpu
@pytest.mark.parametrize("H,Hkv,d", [(1, 1, 768), (12, 12, 64)])  # Sessa's feedback head; `base` attention
def test_matmul_read_of_bf16_caches_on_cuda(H, Hkv, d):
    """The matmul read at `base`'s real widths from bf16 caches (cuBLAS, float32 out; attention's heads through
    block-diagonal queries) against the reduce read (float32 logits and values) over a masked 4096-position
    cache."""
    from sessa_bench.models.masked_read import masked_read
    gen = torch.Generator(device="cuda").manual_seed(0)
    B, L = 4, 4096
    q = (torch.randn(B, H, d, generator=gen, device="cuda") / 4).bfloat16()
    K, V = (torch.randn(B, L, Hkv, d, generator=gen, device="cuda").bfloat16() for _ in range(2))
    mask = torch.arange(L, device="cuda") < 3000
    got, want = (masked_read(q, K, V, mask, r).float() for r in ("matmul", "reduce"))
    assert float((got - want).norm() / want.norm()) <= 1e-2


@pytest.mark.parametrize("read", ["sdpa+matmul", "reduce"])
def test_compiled_sessa_step_writes_its_caches_in_place(read):
    """Inductor's code for Sessa's static step allocates nothing the size of a cache buffer: each write is in
    place. With both feedback writes after the read, one buffer per layer was rebuilt out of place and copied
    back every step (lease 29: 2 x 49 us a layer at batch 16, a 4096 context; models/sessa.py step_static),
    which this catches as an allocation of the buffer's shape. And the compiled step still equals eager."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    model = make("sessa", dtype=torch.float32)
    caches, ref_caches = model.init_cache(2, 40), model.init_cache(2, 40)
    for c in caches + ref_caches:
        c.read, c.feedback_read = cache_reads(read)
    step = torch.compile(model.decode_step, fullgraph=True)
    tok, pos = torch.randint(0, 17, (2, 1)), torch.tensor([3])
    with torch.no_grad():
        out, code = run_and_get_code(step, tok, caches, pos)
        ref = model.decode_step(tok, ref_caches, pos)
    assert torch.allclose(out, ref, atol=1e-5)
    for c, r in zip(caches, ref_caches):
        assert all(torch.allclose(c.buffers[k], r.buffers[k], atol=1e-5) for k in c.buffers)
    src = "\n".join(code)
    assert "empty_strided" in src  # the allocations are where this looks
    shapes = {tuple(b.shape) for c in caches for b in c.buffers.values()}
    copies = [s for s in shapes if f"empty_strided_cpu({s}" in src]
    assert not copies, f"compiled step allocates buffers of the caches' shapes {copies}: a write out of place"
