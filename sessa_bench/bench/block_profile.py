"""Where one block's forward+backward goes: torch.profiler over a single step of a few block implementations
at one T (the preset's `block_profile`), after warm-up steps so no Triton compilation or autotuning is in the
window. Issue 14 asks where Sessa's extra milliseconds over the attention block go; the block timings say
how many there are, this says which kernels hold them."""

from __future__ import annotations

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from sessa_bench.bench.blocks import block_step, implementations
from sessa_bench.bench.training import sync


def step_ms(events, cuda: bool) -> float:
    """The summed own time of a profiled step in ms, as the profiler's table footer sums it: on a GPU the
    kernels' (device events only: an op's own device time repeats its kernels'), on a CPU the ops' CPU time."""
    if not cuda:
        return sum(e.self_cpu_time_total for e in events) / 1000
    return sum(device_us(e) for e in events
               if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)) / 1000


def device_us(e) -> float:
    """A profiler event's own device time in us (the attribute's name moved from cuda to device across torch
    versions)."""
    us = getattr(e, "self_device_time_total", None)
    return e.self_cuda_time_total if us is None else us


def profiled(run, device, top: int):
    """`run()` under torch.profiler (its kernels too on CUDA), synchronised before the profile ends: (the
    events, the profiler's table of the `top` entries by own device time on a GPU, own CPU time on a CPU)."""
    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        run()
        sync(device)
    events = prof.key_averages()
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    return events, events.table(sort_by=sort, row_limit=top, max_name_column_width=70)


def profile_blocks(device, dtype, d_model: int, n_heads: int, tokens: int, mamba: dict, T: int,
                   impls: list[str], top: int = 12, warmup: int = 2, log=print) -> dict[str, tuple[float, str]]:
    """impl -> (the step's summed own time of every op or kernel in ms, the profiler's table of the `top`
    entries by own time), for each of `impls` available here."""
    cuda = device.type == "cuda"
    factories = implementations(device, d_model, n_heads, mamba)
    batch = max(1, tokens // T)
    out = {}
    for name in impls:
        if name not in factories:
            log(f"  block profile: {name} is not available here")
            continue
        try:
            step = block_step(factories[name], d_model, batch, T, dtype, device, backward=True)
            for _ in range(warmup):
                step()
            sync(device)
            events, table = profiled(step, device, top)
            total = step_ms(events, cuda)
        except Exception as e:  # one block that cannot run leaves the others' profiles (and the parts after)
            log(f"  block profile {name}: failed: {type(e).__name__}: {str(e)[:200]}")
            continue
        finally:
            step = events = None
            if cuda:
                torch.cuda.empty_cache()
        out[name] = (total, table)
        log(f"  block profile {name:20s} T={T}: {total:.2f} ms of {'kernels' if cuda else 'CPU ops'}")
    return out


def section(profiles: dict[str, tuple[float, str]], T: int, batch: int, cuda: bool) -> str:
    what = "kernel (device)" if cuda else "CPU op"
    head = (f"### Where a block's step goes (T={T}, batch {batch}, forward+backward, torch.profiler)\n\n"
            f"One step of each block after 2 warm-up steps; the sum of every {what} time of the step, then the "
            f"top entries by their own time.\n\n| impl | {what} ms per step |\n|---|---|\n"
            + "".join(f"| {name} | {total:.2f} |\n" for name, (total, _) in profiles.items()))
    return head + "\n" + "\n".join(f"#### {name}\n\n```\n{table}\n```\n" for name, (_, table) in profiles.items())
