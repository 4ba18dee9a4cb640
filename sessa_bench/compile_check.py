"""A compiled model must compute what the eager one computes, on the machine it trains on.

Before the first optimizer step of a compiled run (trainer.compile=true), the loss and the gradients of the
first training batch are computed twice, eagerly (under `torch.compiler.set_stance("force_eager")`) and
through the compiled graphs, under the run's own autocast, and compared. A mismatch stops the run with one
line: the CPU tests compare compiled and eager models, but the GPU compiles other kernels, and on the H200
a compiled Transformer at Table 1's shapes trained to a constant prediction (val/acc 0.05 after 4000 steps)
while the same run eager learned (results/bench/h200-run9-session.log). The comparison is written to the
run's summary.json (`compile_check`), so every compiled result carries its evidence.

Under autocast a third pass, eager in float32, measures what bf16 itself does to this model on this batch
(`grad_noise`, `loss_noise`): a compiled graph may differ from eager bf16 by up to NOISE_FACTOR times that
(two bf16 roundings, each that far from float32), or by the fixed tolerances, whichever is larger. A deep
model's bf16 noise can pass the fixed tolerance (Mamba2's 25 layers: compiled against eager 0.127 on the
H200); the Transformer's wrong graph was 3.8 to 57 (results/bench/nvidia-h200-compile-diagnosis.md).

A last pass repeats eager (`grad_repeat`): how far eager is from itself on the same batch, i.e. what the
nondeterministic kernels (flash attention's backward accumulates dq with atomics) do. Sessa's graphed step at
T = 2048 differed from eager by 1.2-1.6e-3 (leases 17 and 18; 1e-7 at T = 600, and on CPU Sessa's gradient is
no more sensitive at 2048 than at 600: results/bench/grad-sensitivity-cpu.md): this says whether eager alone
differs that much or only the graphed step does.
"""

from __future__ import annotations

import contextlib

import torch

# bf16 autocast: eager and compiled kernels round differently (Table 1's Transformer, 2 of its layers, on CPU:
# loss 4e-4 relative, gradients 7e-3); the H200's wrong graph was 4 % off in the loss. One threshold for every
# precision.
LOSS_RTOL = 0.01
GRAD_RTOL = 0.1
NOISE_FACTOR = 2.0


class CompileMismatch(RuntimeError):
    """The compiled model's loss or gradients differ from the eager model's beyond tolerance."""


def compare(module: torch.nn.Module, batch: dict, loss_fn, eager=None) -> dict:
    """Loss and gradients of `batch` through `module(batch)` (the training step's own forward) run eagerly and
    as compiled (wherever torch.compile was applied in it: whole or per block): the two losses,
    ||g_c - g_e|| / ||g_e|| over all parameters, and the cosine of the two gradients; under autocast also the
    same distance of eager bf16 to eager float32 (`grad_noise`, `loss_noise`; None without autocast). Leaves
    .grad untouched (torch.autograd.grad). eager: a context manager factory that makes the module run eagerly
    (default `torch.compiler.set_stance("force_eager")`; CUDA graphs pass their own, cuda_graphs.py)."""
    params = [p for p in module.parameters() if p.requires_grad]
    device = batch["input_ids"].device.type
    eager = eager or (lambda: torch.compiler.set_stance("force_eager"))

    def fp32():  # eager, autocast off
        stack = contextlib.ExitStack()
        stack.enter_context(eager())
        stack.enter_context(torch.autocast(device, enabled=False))
        return stack
    passes = [("compiled", contextlib.nullcontext), ("eager", eager)]
    if torch.is_autocast_enabled(device):
        passes.append(("fp32", fp32))
    passes.append(("eager_again", eager))
    # The fast pass first: CUDA graphs capture at their first call, and a capture fails while an earlier
    # graph of the same parameters is alive (its gradient accumulators sit on another stream; on the H200 the
    # eager pass's loss, still referenced, broke every capture: results/bench/h200x2-run2-session.log).
    losses, grads = {}, {}
    for name, context in passes:
        with context():
            loss = loss_fn(module(batch), batch["labels"])
        g = torch.autograd.grad(loss, params, allow_unused=True)
        grads[name] = torch.cat([(torch.zeros_like(p) if gi is None else gi).double().flatten()  # exact sums
                                 for p, gi in zip(params, g)])
        losses[name] = float(loss.detach())
    e, c = grads["eager"], grads["compiled"]

    def rel(a, b):
        return float((a - b).norm() / b.norm().clamp_min(1e-30))
    return {"loss_eager": losses["eager"], "loss_compiled": losses["compiled"], "grad_rel_diff": rel(c, e),
            "grad_cosine": float(torch.nn.functional.cosine_similarity(c, e, dim=0)),
            "loss_noise": abs(losses["eager"] - losses["fp32"]) if "fp32" in grads else None,
            "grad_noise": rel(e, grads["fp32"]) if "fp32" in grads else None,
            "grad_repeat": rel(grads["eager_again"], e)}


def check(result: dict, setting: str = "compile") -> dict:
    """result (from compare) if within tolerance, else CompileMismatch naming the numbers and the way out
    (`<setting>=false`)."""
    le, lc = result["loss_eager"], result["loss_compiled"]
    loss_tol, grad_tol = tolerances(result)
    if not (abs(lc - le) <= loss_tol and result["grad_rel_diff"] <= grad_tol):
        raise CompileMismatch(
            f"{setting}=true: the {'compiled' if setting == 'compile' else 'graphed'} model disagrees with the "
            f"eager one on the first batch (loss {lc:.5g} "
            f"against {le:.5g}, gradient relative difference {result['grad_rel_diff']:.3g}, allowed "
            f"{loss_tol:.3g} and {grad_tol:.3g}); train with {setting}=false")
    return result


def tolerances(result: dict) -> tuple[float, float]:
    """(loss, gradient) tolerance of a comparison: the fixed ones, or NOISE_FACTOR x bf16's own noise on this
    batch where that is larger."""
    loss_tol = LOSS_RTOL * max(1.0, abs(result["loss_eager"]))
    grad_tol = GRAD_RTOL
    if result.get("grad_noise") is not None:
        loss_tol = max(loss_tol, NOISE_FACTOR * result["loss_noise"])
        grad_tol = max(grad_tol, NOISE_FACTOR * result["grad_noise"])
    return loss_tol, grad_tol
