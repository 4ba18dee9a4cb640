"""Timing and peak-memory measurement that is honest on both CPU and CUDA."""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from typing import Callable

import torch


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def measure(fn: Callable[[], object], device: torch.device, warmup: int = 2, reps: int = 5) -> dict:
    """Median wall time (ms) of fn() over reps after warmup, and the peak memory it allocated (GiB)
    above what was allocated before it started. Raises on OOM (the caller records it)."""
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if cuda else float("nan")
    return {"ms": statistics.median(times), "peak_gib": peak}


def free_memory():
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def record_oom(row: dict, *fields: str):
    """Run the body; if it runs out of device memory, mark `fields` of row as "OOM" and carry on (any
    other error propagates). Frees cached memory either way so the next measurement starts clean."""
    try:
        yield
    except Exception as e:
        if not is_oom(e):
            raise
        row.update({f: "OOM" for f in fields})
    finally:
        free_memory()
