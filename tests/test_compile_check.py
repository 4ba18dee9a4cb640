"""compile_check: a compiled run compares its first batch's loss and gradients with the eager model's and
stops with one line when they differ (a wrong compiled graph trained the H200's Transformer to a constant
prediction). Here the wrong graph is made on purpose: a Dynamo backend that scales the logits."""

import pytest
import torch

from sessa_bench import compile_check
from sessa_bench.lit_module import LitSequenceModel

CFG = dict(vocab_size=32, d_model=16, n_layers=1, n_heads=2, mixer="attention", mixer_kwargs={"backend": "math"},
           head="cls", n_classes=5)
OPTIM = dict(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, warmup_steps=1, min_lr_ratio=0.1)


def scaled_logits(gm, example_inputs):
    """A backend whose graph is wrong: every output of the traced forward times 1.5."""
    return lambda *args: tuple(o * 1.5 for o in gm(*args))


def batch():
    torch.manual_seed(1)
    return {"input_ids": torch.randint(1, 32, (3, 12)), "lengths": torch.tensor([12, 9, 7]),
            "labels": torch.tensor([0, 3, 4])}


def lit(backend):
    torch.manual_seed(0)
    m = LitSequenceModel(CFG, OPTIM, 10, compile=True)
    m.model.compile(backend=backend)
    m._compiled = True
    return m


def test_a_faithful_graph_passes_and_the_result_is_kept():
    m = lit("aot_eager")
    result = compile_check.check(compile_check.compare(m, batch(), m.loss))
    assert result["loss_compiled"] == pytest.approx(result["loss_eager"], rel=1e-6)
    assert result["grad_rel_diff"] < 1e-5 and result["grad_cosine"] > 0.99999
    assert all(p.grad is None for p in m.model.parameters())  # the check leaves the training step's grads alone
    assert result["grad_repeat"] == 0.0  # eager against itself: the CPU's kernels are deterministic


def test_eager_against_itself_measures_nondeterministic_kernels():
    """grad_repeat: a second eager pass on the same batch, against the first (flash attention's backward on a
    GPU is not deterministic); here eager adds fresh noise to the logits on every call."""
    m = lit("aot_eager")
    real = m.model.forward

    def noisy(*a, **k):
        out = real(*a, **k)
        return out + 1e-3 * torch.randn_like(out) if torch.compiler.is_compiling() is False else out
    m.model.forward = noisy
    assert compile_check.compare(m, batch(), m.loss)["grad_repeat"] > 1e-5


def test_a_wrong_graph_stops_the_run_with_one_line():
    m = lit(scaled_logits)
    result = compile_check.compare(m, batch(), m.loss)
    assert result["loss_compiled"] != pytest.approx(result["loss_eager"], rel=0.01)
    with pytest.raises(compile_check.CompileMismatch, match=r"disagrees with the eager one.*compile=false") as e:
        compile_check.check(result)
    assert "\n" not in str(e.value)


def test_tolerances_are_where_the_docstring_says():
    base = {"loss_eager": 3.0, "grad_rel_diff": 0.0, "grad_cosine": 1.0}
    compile_check.check({**base, "loss_compiled": 3.0 * (1 + 0.9 * compile_check.LOSS_RTOL)})
    with pytest.raises(compile_check.CompileMismatch):
        compile_check.check({**base, "loss_compiled": 3.0 * (1 + 1.1 * compile_check.LOSS_RTOL)})
    with pytest.raises(compile_check.CompileMismatch):
        compile_check.check({**base, "loss_compiled": 3.0, "grad_rel_diff": 1.1 * compile_check.GRAD_RTOL})


class _Trainer:
    world_size = 1
    progress_bar_callback = None
    optimizers = [torch.optim.SGD([torch.zeros(1)], lr=0.1)]


@pytest.mark.parametrize("backend, ok", [("aot_eager", True), (scaled_logits, False)])
def test_the_first_training_step_of_a_compiled_model_checks_once(monkeypatch, backend, ok):
    m = lit(backend)
    monkeypatch.setattr(LitSequenceModel, "trainer", _Trainer(), raising=False)
    monkeypatch.setattr(m, "log", lambda *a, **k: None)
    calls = []
    monkeypatch.setattr(compile_check, "compare", lambda *a: calls.append(1) or real_compare(*a))
    if not ok:
        with pytest.raises(compile_check.CompileMismatch):
            m.training_step(batch(), 0)
        return
    m.training_step(batch(), 0)
    m.training_step(batch(), 1)
    assert len(calls) == 1 and m.compile_check["grad_rel_diff"] < 1e-5


real_compare = compile_check.compare


def test_under_autocast_the_tolerance_grows_with_bf16s_own_noise_but_not_past_a_wrong_graph():
    """A third pass, eager in float32, measures bf16's noise on the batch: a compiled graph may differ from eager
    bf16 by twice that (Mamba2's 25 layers: 0.127 on the H200, over the fixed 0.1), never by a wrong graph's."""
    base = {"loss_eager": 3.0, "loss_compiled": 3.0, "grad_cosine": 1.0}
    assert compile_check.tolerances({**base, "grad_noise": None, "loss_noise": None}) == (0.03, 0.1)
    assert compile_check.tolerances({**base, "grad_noise": 0.08, "loss_noise": 0.05}) == (0.1, 0.16)
    compile_check.check({**base, "grad_rel_diff": 0.127, "grad_noise": 0.08, "loss_noise": 0.0})
    with pytest.raises(compile_check.CompileMismatch, match=r"allowed 0.03 and 0.1\)"):
        compile_check.check({**base, "grad_rel_diff": 0.127, "grad_noise": 0.01, "loss_noise": 0.0})
    m = lit("aot_eager")
    assert compile_check.compare(m, batch(), m.loss)["grad_noise"] is None  # float32: no third pass
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ok = compile_check.compare(m, batch(), m.loss)
        wrong = compile_check.compare(lit(scaled_logits), batch(), m.loss)
    assert 0 < ok["grad_noise"] < 0.1 and ok["loss_noise"] < 0.05
    compile_check.check(ok)
    with pytest.raises(compile_check.CompileMismatch):
        compile_check.check(wrong)
