"""torch.profiler summary of one training step per family: the top kernels by device time (CPU ops by CPU
time on a CPU run), after warm-up steps so no compilation or autotuning is in the window."""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

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
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts) as prof:
            step()
            sync(device)
        sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        out[fam] = prof.key_averages().table(sort_by=sort, row_limit=top, max_name_column_width=70)
        log(f"  profile {fam}: done")
        del model, opt, idx, step, prof
        if cuda:
            torch.cuda.empty_cache()
    return out
