"""torch.profiler over a few steps of the real training loop (`sessa-bench train`, run as harness_loop.py runs
it) at a bare-step shape: the top ops by host time and by device time, and the share of the profiled wall time
the GPU was busy. Where the loop trails the bare step (issue 13 asks for >= 0.9x), this says whether it waits
on the host (Python, Lightning's hooks, launches, syncs: low busy share, host ops on top) or does more device
work than the bare step (a busy GPU, extra kernels on top)."""

from __future__ import annotations

import time
from unittest import mock

import torch
from torch.profiler import ProfilerActivity, profile

from sessa_bench.bench.block_profile import step_ms
from sessa_bench.bench.harness_loop import run_loop, window
from sessa_bench.bench.training import sync


def profile_harness(device, family: str, shape: dict, steps: int = 3, warmup: int = 3, top: int = 15) -> dict:
    """Profile `steps` training steps of the harness loop (eager) after a first window of max(steps, warmup, 2)
    steps, and before the window's end (where the Throughput callback syncs). Returns the host table (by self
    CPU time), the device table (by self CUDA time; None on CPU), the wall ms per profiled step and the share
    of that wall time the device ran kernels (None on CPU)."""
    from sessa_bench.lit_module import LitSequenceModel  # Lightning: imported when profiled

    cuda = device.type == "cuda"
    w = window(steps, warmup)
    n = max(1, min(steps, w - 1))  # profiled steps: w .. w + n - 1, inside the second throughput window
    prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []))
    clock = {}

    def start(self, batch, batch_idx):
        if self.global_step == w:
            sync(device)
            clock["t0"] = time.perf_counter()
            prof.start()

    def end(self, outputs, batch, batch_idx):
        if self.global_step == w + n and "t0" in clock and "wall" not in clock:
            sync(device)
            prof.stop()
            clock["wall"] = time.perf_counter() - clock["t0"]

    with mock.patch.object(LitSequenceModel, "on_train_batch_start", start), \
            mock.patch.object(LitSequenceModel, "on_train_batch_end", end):
        run_loop(family, shape, "eager", device, steps, warmup)
    if "wall" not in clock:
        raise RuntimeError(f"the profiled steps {w}..{w + n - 1} were not reached")
    events = prof.key_averages()
    return {
        "steps": n,
        "ms_per_step": 1e3 * clock["wall"] / n,
        # kernels only: summing every event's own device time counted each kernel again under its op and the
        # optimizer's annotation (lease 17 printed 103 % busy for a loop whose kernels ran 28 % of the time)
        "device_busy": busy_share(events, clock["wall"]) if cuda else None,
        "host": events.table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=70),
        "device": events.table(sort_by="self_cuda_time_total", row_limit=top, max_name_column_width=70)
        if cuda else None,
    }


def busy_share(events, wall_s: float) -> float:
    """The share of `wall_s` seconds the GPU ran kernels, from profiled events."""
    return step_ms(events, cuda=True) / (1e3 * wall_s)


def harness_section(device, families, shape: dict, log=print, **kw) -> str:
    """The bench's markdown for the harness profiles of `families` at `shape`; a family that fails gets its
    error line, and the others are still profiled."""
    out = [f"### The training loop (`sessa-bench train`, eager; budget `{shape['budget_name']}`, T="
           f"{shape['seq_len']}, batch {shape['batch']})\n\nA few steps after the first window, under "
           f"torch.profiler: wall ms per step, the share of it the device ran kernels, then the top ops by "
           f"self host time and by self device time.\n"]
    for fam in families:
        try:
            r = profile_harness(device, fam, shape, **kw)
        except Exception as e:  # noqa: BLE001 - one family's failure must not end the bench
            out.append(f"#### {fam}\n\nerror: {type(e).__name__}: {e}"[:500] + "\n")
            continue
        busy = "" if r["device_busy"] is None else f", device busy {100 * r['device_busy']:.0f} % of it"
        out.append(f"#### {fam}\n\n{r['ms_per_step']:.1f} ms per step over {r['steps']} steps{busy}.\n\n"
                   f"By host time:\n\n```\n{r['host']}\n```\n"
                   + (f"\nBy device time:\n\n```\n{r['device']}\n```\n" if r["device"] else ""))
        log(f"  profile harness {fam}: {r['ms_per_step']:.1f} ms/step{busy}")
    return "\n".join(out)
