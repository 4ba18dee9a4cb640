"""torch.profiler summary of one training step per family: the top kernels by device time (CPU ops by CPU
time on a CPU run), after warm-up steps so no compilation or autotuning is in the window."""

from __future__ import annotations

import torch

from sessa_bench.bench.block_profile import profiled
from sessa_bench.bench.training import build, make_step, sync
from sessa_bench.budget import load_budget, load_family, solve


def profile_training(device, families, budget_name: str, vocab: int, seq_len: int, batch: int,
                     top: int = 15, warmup: int = 2, log=print) -> dict[str, str]:
    """family -> the profiler's table of the `top` entries (eager model)."""
    budget = load_budget(budget_name)
    cuda = device.type == "cuda"
    out = {}
    for fam in families:
        model, opt, idx = build(solve(load_family(fam), budget, vocab), device, batch, seq_len, None)
        step = make_step(model, opt, idx, device)
        for _ in range(warmup):
            step()
        sync(device)
        out[fam] = profiled(step, device, top)[1]
        log(f"  profile {fam}: done")
        del model, opt, idx, step
        if cuda:
            torch.cuda.empty_cache()
    return out
