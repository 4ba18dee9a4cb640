"""A compiled model must compute what the eager one computes, on the machine it trains on.

Before the first optimizer step of a compiled run (trainer.compile=true), the loss and the gradients of the
first training batch are computed twice, eagerly (under `torch.compiler.set_stance("force_eager")`) and
through the compiled graphs, under the run's own autocast, and compared. A mismatch stops the run with one
line: the CPU tests compare compiled and eager models, but the GPU compiles other kernels, and on the H200
a compiled Transformer at Table 1's shapes trained to a constant prediction (val/acc 0.05 after 4000 steps)
while the same run eager learned (results/bench/h200-run9-session.log). The comparison is written to the
run's summary.json (`compile_check`), so every compiled result carries its evidence.
"""

from __future__ import annotations

import contextlib

import torch

# bf16 autocast: eager and compiled kernels round differently (Table 1's Transformer, 2 of its layers, on CPU:
# loss 4e-4 relative, gradients 7e-3); the H200's wrong graph was 4 % off in the loss. One threshold for every
# precision.
LOSS_RTOL = 0.01
GRAD_RTOL = 0.1


class CompileMismatch(RuntimeError):
    """The compiled model's loss or gradients differ from the eager model's beyond tolerance."""


def compare(module: torch.nn.Module, batch: dict, loss_fn, eager=None) -> dict:
    """Loss and gradients of `batch` through `module(batch)` (the training step's own forward) run eagerly and
    as compiled (wherever torch.compile was applied in it: whole or per block): the two losses,
    ||g_c - g_e|| / ||g_e|| over all parameters, and the cosine of the two gradients. Leaves .grad untouched
    (torch.autograd.grad). eager: a context manager factory that makes the module run eagerly (default
    `torch.compiler.set_stance("force_eager")`; CUDA graphs pass their own, sessa_bench/cuda_graphs.py)."""
    params = [p for p in module.parameters() if p.requires_grad]
    losses, grads = {}, {}
    eager = eager or (lambda: torch.compiler.set_stance("force_eager"))
    # The fast pass first: CUDA graphs capture at their first call, and a capture fails while an earlier
    # graph of the same parameters is alive (its gradient accumulators sit on another stream; on the H200 the
    # eager pass's loss, still referenced, broke every capture: results/bench/h200x2-run2-session.log).
    for name, context in (("compiled", contextlib.nullcontext), ("eager", eager)):
        with context():
            loss = loss_fn(module(batch), batch["labels"])
        g = torch.autograd.grad(loss, params, allow_unused=True)
        grads[name] = torch.cat([(torch.zeros_like(p) if gi is None else gi).double().flatten()  # exact sums
                                 for p, gi in zip(params, g)])
        losses[name] = float(loss.detach())
    e, c = grads["eager"], grads["compiled"]
    return {"loss_eager": losses["eager"], "loss_compiled": losses["compiled"],
            "grad_rel_diff": float((c - e).norm() / e.norm().clamp_min(1e-30)),
            "grad_cosine": float(torch.nn.functional.cosine_similarity(c, e, dim=0))}


def check(result: dict, setting: str = "compile") -> dict:
    """result (from compare) if within tolerance, else CompileMismatch naming the numbers and the way out
    (`<setting>=false`)."""
    le, lc = result["loss_eager"], result["loss_compiled"]
    loss_ok = abs(lc - le) <= LOSS_RTOL * max(1.0, abs(le))
    grad_ok = result["grad_rel_diff"] <= GRAD_RTOL
    if not (loss_ok and grad_ok):
        raise CompileMismatch(
            f"{setting}=true: the {'compiled' if setting == 'compile' else 'graphed'} model disagrees with the "
            f"eager one on the first batch (loss {lc:.5g} "
            f"against {le:.5g}, gradient relative difference {result['grad_rel_diff']:.3g}, allowed "
            f"{LOSS_RTOL:g} and {GRAD_RTOL:g}); train with {setting}=false")
    return result
