"""torch.compile without graph breaks: the custom-op wrappers of the Triton feedback solve and of mamba_ssm's
kernels (checked on CPU with PyTorch stand-ins for the kernels), and the whole model of every family compiled
with fullgraph=True against eager (forward and backward), in place so checkpoint keys do not change."""

import importlib

import pytest
import torch
import torch.nn.functional as F

from sessa_bench.models import mamba_ssm_ops
from sessa_bench.models.backbone import Backbone
from sessa_bench.models.config import ModelConfig
from sessa_bench.models.kernels import block_len, feedback_triton_op
from sessa_bench.models.kernels.feedback_dense import feedback_dense
from sessa_bench.models.ssd import ssd_chunked

fc = importlib.import_module("sessa_bench.models.kernels.feedback_chunked")  # the module, not the function


# --- the Triton feedback op, with the chunked PyTorch solve standing in for the kernels --------------------
def _fwd_standin(f, q_b, k_b, gamma, chunk, block_d, num_warps, block_rows=None, strip_tile=None, strip_diag=False,
                 dense_blocks=False, need_h=True):
    s, h, lse = fc._forward(f.float(), q_b.float(), k_b.float(), gamma.float(), chunk)
    B, T, _ = f.shape
    W = torch.zeros(B, -(-T // chunk), chunk, chunk)  # the stand-in needs neither W nor the blocks' W_R
    WR = q_b.new_zeros((B, T, block_len(T, chunk, block_rows)) if dense_blocks and need_h else (0,))
    return s.to(f.dtype), lse, W, h if need_h else h.new_empty(0), WR


def _bwd_standin(ds, q_b, k_b, gamma, lse, W, s, h, WR, chunk, block_d, num_warps, block_rows=None, strip_tile=None,
                 strip_diag=False, dense_blocks=False):
    u, dq, dk, dg = fc._backward(ds.float(), q_b.float(), k_b.float(), gamma.float(), lse, s.float(), h, chunk)
    return tuple(x.to(t.dtype) for x, t in zip((u, dq, dk, dg), (s, q_b, k_b, gamma)))


@pytest.fixture
def feedback_standin(monkeypatch):
    monkeypatch.setattr(feedback_triton_op, "kernels", lambda: (_fwd_standin, _bwd_standin))


def feedback_inputs(B=2, T=37, D=8):
    f, q, k = (torch.randn(B, T, D, requires_grad=True) for _ in range(3))
    g = (0.9 * torch.rand(B, T)).requires_grad_()
    return f, q, k, g


def test_feedback_op_matches_dense_and_compiles(feedback_standin):
    inputs = feedback_inputs()
    ds = torch.randn(2, 37, 8)
    ref = feedback_dense(*inputs)
    ref_grads = torch.autograd.grad(ref, inputs, ds)
    fn = torch.compile(lambda *x: feedback_triton_op.feedback_op(*x, chunk=16), fullgraph=True, backend="aot_eager")
    for run in (lambda *x: feedback_triton_op.feedback_op(*x, chunk=16), fn):
        out = run(*inputs)
        grads = torch.autograd.grad(out, inputs, ds)
        assert torch.allclose(out, ref, atol=1e-5)
        for g, r in zip(grads, ref_grads):
            assert torch.allclose(g, r, atol=1e-4)


def test_feedback_op_opcheck(feedback_standin):
    f, q, k, g = feedback_inputs(T=20)
    torch.library.opcheck(feedback_triton_op.feedback_fwd, (f, q, k, g, 16, None, None))
    # the dense blocks' W_R: a fifth output of the fake's shape
    torch.library.opcheck(feedback_triton_op.feedback_fwd, (f, q, k, g, 16, None, None, 16, None, False, True))


def test_feedback_op_hands_every_setting_to_both_kernels(monkeypatch):
    """The forward's settings (chunk .. dense_blocks) reach the backward kernels unchanged, in order; the
    forward is asked for h (need_h) when a backward can follow, and not under no_grad; the dense blocks' W_R
    the forward returned is the one the backward reads."""
    seen, made = [], []

    def fwd(*args):
        seen.append(("fwd", args[4:]))
        out = _fwd_standin(*args)
        made.append(out[-1])
        return out

    def bwd(*args):
        seen.append(("bwd", args[9:]))
        assert args[8].data_ptr() == made[-1].data_ptr()
        return _bwd_standin(*args)

    monkeypatch.setattr(feedback_triton_op, "kernels", lambda: (fwd, bwd))
    inputs = feedback_inputs(T=20)
    out = feedback_triton_op.feedback_op(*inputs, chunk=16, block_rows=32, strip_tile=32, strip_diag=True)
    out.sum().backward()
    settings = (16, None, None, 32, 32, True, False)
    assert seen == [("fwd", settings + (True,)), ("bwd", settings)]
    seen.clear()
    with torch.no_grad():
        feedback_triton_op.feedback_op(*inputs, chunk=16)
    assert seen == [("fwd", (16, None, None, None, None, False, False, False))]
    seen.clear()
    feedback_triton_op.feedback_op(*inputs, chunk=16, block_rows=16, dense_blocks=True).sum().backward()
    dense = (16, None, None, 16, None, False, True)
    assert seen == [("fwd", dense + (True,)), ("bwd", dense)]
    assert made[-1].shape == (2, 20, 16)


def test_feedback_op_rejects_bad_chunk():
    with pytest.raises(ValueError, match="chunk=48"):
        feedback_triton_op.feedback_op(*feedback_inputs(), chunk=48)


# --- the mamba_ssm ops, with our PyTorch scan and norm standing in for mamba_ssm's kernels ------------------
def _scan_standin(x, dt, A, B, C, chunk_size, D=None, dt_bias=None, initial_states=None, dt_softplus=False,
                  return_final_states=False):
    y, final = ssd_chunked(x, F.softplus(dt + dt_bias), A, B, C, chunk_size, initial_state=initial_states)
    y = y + D[:, None] * x
    return (y, final) if return_final_states else y


def _norm_standin(y, weight, bias, z=None, eps=1e-5, group_size=None, norm_before_gate=False):
    h = (y * F.silu(z)).unflatten(-1, (-1, group_size))
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).flatten(-2) * weight


# The four functions the ops run (mamba_ssm_import.import_mamba_ssm_kernels' signatures), from the stand-ins;
# the backward ones by torch.func.vjp, which works inside an op body (plain autograd does not run there).
def _scan_fwd(x, dt, A, B, C, chunk_size, D, dt_bias, initial_states):
    return _scan_standin(x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, initial_states=initial_states,
                         return_final_states=True)


def _scan_bwd(dy, dfinal, x, dt, A, B, C, y, chunk_size, D, dt_bias, initial_states):
    init = () if initial_states is None else (initial_states,)
    (_, final), vjp = torch.func.vjp(
        lambda x, dt, A, B, C, D, dt_bias, *i: _scan_fwd(x, dt, A, B, C, chunk_size, D, dt_bias, *(i or (None,))),
        x, dt, A, B, C, D, dt_bias, *init)
    grads = vjp((dy, torch.zeros_like(final) if dfinal is None else dfinal))
    return (*grads[:7], grads[7] if init else None)


def _norm_fwd(y, weight, z, eps, group_size):
    h = (y * F.silu(z)).unflatten(-1, (-1, group_size))
    rstd = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (h * rstd).flatten(-2) * weight, rstd


def _norm_bwd(dout, y, weight, z, eps, group_size, rstd):
    _, vjp = torch.func.vjp(lambda y, w, z: _norm_fwd(y, w, z, eps, group_size)[0], y, weight, z)
    return vjp(dout)


@pytest.fixture
def mamba_standin(monkeypatch):
    monkeypatch.setattr(mamba_ssm_ops, "kernels", lambda: (_scan_fwd, _scan_bwd, _norm_fwd, _norm_bwd))


def mamba_inputs(b=2, l=11, h=4, p=3, g=2, n=5):
    x = torch.randn(b, l, h, p)
    dt = torch.randn(b, l, h)
    A = -(torch.rand(h) + 0.5)
    B, C = torch.randn(b, l, g, n), torch.randn(b, l, g, n)
    D, dt_bias = torch.randn(h), torch.randn(h)
    return [t.requires_grad_() for t in (x, dt, A, B, C, D, dt_bias)]


@pytest.mark.parametrize("want_state", [False, True])
def test_mamba_scan_op_gradients_and_compile(mamba_standin, want_state):
    x, dt, A, B, C, D, dt_bias = ins = mamba_inputs()
    init = torch.randn(2, 4, 3, 5, requires_grad=True)
    wrt = ins + [init]

    def direct():
        y, final = _scan_standin(x, dt, A, B, C, 4, D=D, dt_bias=dt_bias, initial_states=init,
                                 return_final_states=True)
        return y, final

    def via_op(op=mamba_ssm_ops.mamba_scan):
        return op(x, dt, A, B, C, 4, D, dt_bias, init, want_state)

    y_ref, f_ref = direct()
    loss_ref = y_ref.square().sum() + (f_ref.sum() if want_state else 0)
    g_ref = torch.autograd.grad(loss_ref, wrt)
    for fn in (via_op, torch.compile(via_op, fullgraph=True, backend="aot_eager")):
        y, final = fn()
        assert torch.allclose(y, y_ref, atol=1e-5)
        assert final.shape == ((2, 4, 3, 5) if want_state else (0,))
        loss = y.square().sum() + (final.sum() if want_state else 0)
        for g, r in zip(torch.autograd.grad(loss, wrt), g_ref):
            assert torch.allclose(g, r, atol=1e-4)


def test_mamba_norm_op_gradients_and_compile(mamba_standin):
    y, z = torch.randn(2, 5, 12, requires_grad=True), torch.randn(2, 5, 12, requires_grad=True)
    w = torch.randn(12, requires_grad=True)
    ref = _norm_standin(y, w, None, z=z, eps=1e-5, group_size=6)
    g_ref = torch.autograd.grad(ref.sin().sum(), (y, w, z))
    op = lambda: mamba_ssm_ops.mamba_gated_rmsnorm(y, w, z, 1e-5, 6)  # noqa: E731
    for fn in (op, torch.compile(op, fullgraph=True, backend="aot_eager")):
        out = fn()
        assert torch.allclose(out, ref, atol=1e-6)
        for g, r in zip(torch.autograd.grad(out.sin().sum(), (y, w, z)), g_ref):
            assert torch.allclose(g, r, atol=1e-5)


def test_mamba_ops_opcheck(mamba_standin):
    x, dt, A, B, C, D, dt_bias = mamba_inputs()
    torch.library.opcheck(mamba_ssm_ops.mamba_scan, (x, dt, A, B, C, 4, D, dt_bias, None, True))
    # one chunk (l <= chunk_size): the stand-in's y comes out head-major, not in the fake's strides; the op
    # must return what its fake promises, or compiled code fails its stride check (the `small` Mamba2 did)
    x, dt, A, B, C, D, dt_bias = mamba_inputs(l=7)
    torch.library.opcheck(mamba_ssm_ops.mamba_scan, (x, dt, A, B, C, 8, D, dt_bias, None, True))
    y, z, w = torch.randn(2, 5, 12), torch.randn(2, 5, 12), torch.randn(12)
    torch.library.opcheck(mamba_ssm_ops.mamba_gated_rmsnorm, (y.requires_grad_(), w, z, 1e-5, 6))


# --- the whole model, every family: compiled with fullgraph=True (a graph break raises) == eager --------------
MODELS = {
    "sessa": ("sessa", {"impl": "chunked", "backend": "sdpa", "gamma_max": 0.9}),
    "sessa_dense": ("sessa", {"impl": "dense", "backend": "math", "gamma_max": 0.9}),
    "transformer": ("attention", {"backend": "sdpa"}),
    "mamba2": ("mamba2", {"backend": "torch", "headdim": 8, "d_state": 8, "chunk_size": 8}),
}


def tiny(family):
    mixer, mk = MODELS[family]
    torch.manual_seed(0)
    return Backbone(ModelConfig(vocab_size=32, d_model=32, n_layers=1, n_heads=2, mixer=mixer, mixer_kwargs=mk))


# Compiler backends, chosen to keep this file fast on a 2-core machine with a cold cache: "aot_eager" traces
# forward and backward (AOTAutograd) without code generation; inductor (the real one, ~20-80 s per family cold
# here) runs for the Transformer; Mamba2's SSD einsums hit an aot_eager stride replay error in PyTorch itself
# (inductor compiles them), so it is checked with Dynamo alone ("eager": graph breaks, not code generation).
@pytest.mark.parametrize("family,backend", [("sessa", "aot_eager"), ("sessa_dense", "aot_eager"),
                                            ("transformer", "inductor"), ("mamba2", "eager")])
def test_compiled_model_matches_eager(family, backend):
    eager, compiled = tiny(family), tiny(family)
    compiled.compile(fullgraph=True, backend=backend)  # in place: the keys stay the same
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert_same_training_step(eager, compiled, torch.randint(0, 32, (2, 20)))


def assert_same_training_step(eager, compiled, idx):
    """The same output and every parameter's gradient, within float32 tolerance."""
    outs, grads = [], []
    for m in (eager, compiled):
        out = m(idx)
        out.square().mean().backward()
        outs.append(out)
        grads.append({n: p.grad for n, p in m.named_parameters()})
    assert torch.allclose(outs[1], outs[0], atol=1e-5, rtol=1e-4)
    for n, g in grads[0].items():
        assert torch.allclose(grads[1][n], g, atol=1e-5, rtol=1e-4), n


def test_lit_module_compiles_in_place():
    from sessa_bench.lit_module import LitSequenceModel

    cfg = dict(vocab_size=32, d_model=16, n_layers=1, n_heads=2, mixer="attention", mixer_kwargs={"backend": "math"})
    optim = dict(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, warmup_steps=1, min_lr_ratio=0.1)
    plain, lit = LitSequenceModel(cfg, optim, 10), LitSequenceModel(cfg, optim, 10, compile=True)
    lit.configure_model()
    assert all(b._compiled_call_impl is not None for b in lit.model.blocks)
    assert all(b._compiled_call_impl is None for b in plain.model.blocks)
    assert list(lit.state_dict()) == list(plain.state_dict())
    with pytest.raises(ValueError, match="compile must be true or false"):
        LitSequenceModel(cfg, optim, 10, compile="yes")


@pytest.mark.parametrize("T", [6, 20])  # one chunk (chunk_size 8), and three
def test_compiled_mamba2_on_the_mamba_ssm_ops_matches_eager(mamba_standin, monkeypatch, T):
    """The path a compiled Mamba2 takes on the GPU: mamba_ssm's kernels behind the custom ops (stand-ins
    here), forward and backward through the ops' own backward functions, against the eager torch backend."""
    from sessa_bench.models import mamba2 as m2
    eager, compiled = tiny("mamba2"), tiny("mamba2")
    monkeypatch.setattr(m2, "resolve_backend",
                        lambda backend, x, ok=None: "mamba_ssm" if torch.compiler.is_compiling() else "torch")
    compiled.compile(fullgraph=True, backend="aot_eager")
    assert_same_training_step(eager, compiled, torch.randint(0, 32, (2, T)))
    assert compiled.mixers[0].backend_used() == "mamba_ssm" and eager.mixers[0].backend_used() == "torch"


_INTERPRETED_SESSA = """
import torch
from triton.runtime import interpreter
original = interpreter._patch_lang_tensor  # numpy >= 2.3 with Triton 3.6's interpreter, as in test_feedback_chunked
def patch(tensor, scope):
    original(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))
interpreter._patch_lang_tensor = patch
from sessa_bench.models.backbone import Backbone
from sessa_bench.models.config import ModelConfig
def model(impl):
    torch.manual_seed(0)
    return Backbone(ModelConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2, mixer="sessa",
                                mixer_kwargs={"impl": impl, "backend": "math", "gamma_max": 0.9}))
ref, tri = model("dense"), model("triton")
tri.compile(fullgraph=True, backend="aot_eager")
for T in (40, 56, 48):  # batches of varying length, as SymbolSoup's: the second makes T dynamic, the third reuses it
    idx = torch.randint(0, 32, (2, T))
    outs = []
    for m in (ref, tri):
        m.zero_grad()
        out = m(idx)
        out.square().mean().backward()
        outs.append((out, torch.cat([p.grad.flatten() for p in m.parameters()])))
    assert torch.allclose(outs[1][0], outs[0][0], atol=1e-4), (T, (outs[1][0] - outs[0][0]).abs().max())
    assert torch.allclose(outs[1][1], outs[0][1], atol=1e-4), (T, (outs[1][1] - outs[0][1]).abs().max())
assert tri.blocks[0].mixer.backend_used() == "math+triton-t128-dense"  # the default: blocks inverted whole
from torch._dynamo.utils import counters
assert counters["stats"]["unique_graphs"] == 2, counters["stats"]  # one static graph, then one dynamic in T
print("ok")
"""


def test_sessa_triton_path_compiles_fullgraph_with_interpreted_kernels():
    # The real Triton kernels, run by Triton's CPU interpreter, behind the custom ops, inside a model compiled
    # with fullgraph=True: the dispatch (impl='triton') and the ops trace without a break, and match dense, also
    # at sequence lengths that change between calls (the custom ops' fake kernels with a symbolic T).
    from triton_interpreter import run_code_interpreted
    run_code_interpreted(_INTERPRETED_SESSA, None)


@pytest.mark.parametrize("family,backend", [("transformer", "aot_eager"), ("sessa", "aot_eager"),
                                            ("mamba2", "eager")])  # backends: see above
def test_compiled_blocks_trace_once_whatever_the_depth_and_match_eager(family, backend):
    """Regional compilation (Backbone.compile_blocks, what compile=true does): one traced frame serves every
    block, so compile time does not grow with depth; forward and gradients equal the eager model's."""
    from torch._dynamo.testing import CompileCounterWithBackend
    mixer, mk = MODELS[family]
    frames = []
    for n_layers in (1, 3):
        torch._dynamo.reset()
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=32, d_model=16, n_layers=n_layers, n_heads=2, mixer=mixer, mixer_kwargs=mk)
        eager, compiled = Backbone(cfg), Backbone(cfg)
        compiled.load_state_dict(eager.state_dict())
        counter = CompileCounterWithBackend(backend)
        compiled.compile_blocks(backend=counter)
        assert_same_training_step(eager, compiled, torch.randint(0, 32, (2, 12)))
        frames.append(counter.frame_count)
    assert frames == [1, 1]
