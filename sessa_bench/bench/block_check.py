"""Every timed Sessa block checked against the reference solve on the bench's own shapes: a kernel variant that
is fast and wrong shows it in its row (`err`), before its speed can make it a default."""

from __future__ import annotations

import torch

from sessa_bench.bench.timing import free_memory, is_oom
from sessa_bench.models.block import GatedBlock

REFERENCE = "sessa/dense"  # the dense solve: the float64 reference of the kernel tests, here in float32 on a GPU


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|: the kernel tests' measure (the largest entry, not the mean)."""
    return ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1e-30)).item()


def output_and_grad(block: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's output on x and the gradient of x under the output gradient `grad`."""
    x = x.detach().requires_grad_(True)
    y = block(x)
    y.backward(grad)
    return y.detach(), x.grad


def sessa_errors(impls: dict, d_model: int, batch: int, T: int, dtype, device, log=print) -> dict:
    """name -> the largest relative error of each Sessa block's output and input gradient (the feedback solve's
    adjoints reach the input through q_b, k_b and gamma) against the same block with the dense solve in float32
    (float64 on a CPU): same weights (drawn once in `dtype`), input and output gradient. The dense solve's own
    row in `dtype` is the floor that rounding sets. "OOM" or "failed" where the check could not run; {} without
    the reference or a Sessa block among impls."""
    names = [n for n in impls if n.startswith("sessa/")]
    if REFERENCE not in impls or not names:
        return {}
    ref_dtype = torch.float64 if device.type == "cpu" else torch.float32
    gen = torch.Generator().manual_seed(T)
    x = torch.randn(batch, T, d_model, generator=gen).to(device=device, dtype=dtype)
    grad = torch.randn(batch, T, d_model, generator=gen).to(device=device, dtype=dtype)
    weights = GatedBlock(d_model, impls[REFERENCE]()).to(device=device, dtype=dtype).state_dict()
    errors = {}
    try:
        ref = GatedBlock(d_model, impls[REFERENCE]()).to(device=device, dtype=ref_dtype)
        ref.load_state_dict(weights)  # the same (rounded) weights, exactly, in the wider type
        want = output_and_grad(ref, x.to(ref_dtype), grad.to(ref_dtype))
        del ref
    except Exception as e:  # the reference alone out of memory: no row can be checked at this T
        free_memory()
        log(f"  check T={T}: the reference failed: {type(e).__name__}: {str(e)[:200]}")
        return {n: "OOM" if is_oom(e) else "failed" for n in names}
    for name in names:
        try:
            block = GatedBlock(d_model, impls[name]()).to(device=device, dtype=dtype)
            block.load_state_dict(weights)
            errors[name] = max(relative_error(a, b) for a, b in zip(output_and_grad(block, x, grad), want))
        except Exception as e:  # a check that cannot run is recorded; the timing goes on
            errors[name] = "OOM" if is_oom(e) else "failed"
            log(f"  check {name} T={T}: {type(e).__name__}: {str(e)[:200]}")
        finally:
            free_memory()
    return errors
