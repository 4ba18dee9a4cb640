"""Where a greedy decode step goes: torch.profiler over a few steps of the static-cache decoder
(models/generate.py) at one context and batch (the profile preset's `decode`), after warm-up steps, eager and,
on a GPU, replayed from the CUDA graph the decode bench times, and that graph of the step through torch.compile
(`compiled`: lease 29 timed Sessa's compiled step at batch 16 1.1 ms slower than the eager graph, at batch 1
0.7 ms faster); beside them each step's wall time, unprofiled.
Issue 13 asks for batch 16 at 8x batch 1's tokens/s. Lease 19's first profile (eager only) summed Sessa's
batch-16 kernels to 10.05 ms per step where lease 18's graphed step took 5.84 ms of wall time: the wall columns
say which of the profiled times is the step's (a profiler that inflates kernel times, or an eager step slower
than its graph), so the rate over that time is read against the right one."""

from __future__ import annotations

import torch

from sessa_bench.bench.block_profile import profiled, step_ms
from sessa_bench.bench.decoding import cache_bytes, decode_model, seconds_per_step
from sessa_bench.bench.training import sync
from sessa_bench.models.generate import StaticDecoder

MODES = ("eager", "graph", "compiled")  # the last two on CUDA only
GPU_MODES = " (graph: the CUDA graph the decode bench replays; compiled: the same of the step through torch.compile)"


def _profile(dec: StaticDecoder, vocab: int, context: int, steps: int, warmup: int, device, top: int):
    """(kernel (CPU op) ms per step, the wall ms per step, the profiler's table) of one decoder."""
    cuda = device.type == "cuda"
    dec.tok.random_(0, vocab)
    dec.pos.fill_(context)
    for _ in range(warmup):
        dec.advance()
    wall = 1e3 * seconds_per_step(dec, context, steps)
    dec.pos.fill_(context)
    sync(device)
    events, table = profiled(lambda: [dec.advance() for _ in range(steps)], device, top)
    return step_ms(events, cuda) / steps, wall, table


def profile_decoding(device, dtype, families, budget_name: str, vocab: int, context: int, batch: int, read: str,
                     steps: int = 8, warmup: int = 4, top: int = 15, log=print) -> dict[str, dict]:
    """family -> {"bytes": the cache's bytes read per step, "eager" / "graph" / "compiled": (kernel (CPU op) ms
    per step under the profiler, unprofiled wall ms per step, the profiler's table of the `top` entries by own
    time)}; "graph" and "compiled" on CUDA only."""
    cuda = device.type == "cuda"
    out = {}
    for fam in families:
        model = decode_model(fam, budget_name, vocab, device, dtype)
        per_tok, fixed = cache_bytes(model, dtype)
        out[fam] = {"bytes": (per_tok * context + fixed) * batch}
        for mode in MODES if cuda else MODES[:1]:
            dec = StaticDecoder(model, batch, context + max(warmup, steps) + 1, cuda_graph=mode != "eager",
                                compile=mode == "compiled", read=read)
            out[fam][mode] = _profile(dec, vocab, context, steps, warmup, device, top)
            ms, wall, _ = out[fam][mode]
            log(f"  decode profile {fam} {mode}: {ms:.3f} ms of {'kernels' if cuda else 'CPU ops'} per step, "
                f"{wall:.3f} ms wall")
            del dec
            if cuda:
                torch.cuda.empty_cache()
        del model
    return out


def section(profiles: dict[str, dict], q: dict, cuda: bool) -> str:
    what = "kernel (device)" if cuda else "CPU op"
    modes = MODES if cuda else MODES[:1]

    def cells(p):
        return " | ".join(f"{p[m][0]:.3f} | {p[m][1]:.3f} | {p['bytes'] / 1e6 / p[m][1]:,.0f}" for m in modes)
    head = (f"### Where a decode step goes (budget `{q['budget_name']}`, context {q['context']}, batch {q['batch']}, "
            f"read `{q['read']}`, torch.profiler)\n\n{q.get('steps', 8)} steps after {q.get('warmup', 4)} warm-up "
            f"steps, {', '.join(modes)}{GPU_MODES if cuda else ''}: per step "
            f"the sum of every {what} time under the profiler, the step's wall time without it, and the cache's "
            f"read rate over that wall time (the bytes of every layer's cache at this context and batch); then "
            f"the top entries by own time.\n\n"
            f"| family | cache GiB | " + " | ".join(f"{m}: {what} ms per step | {m}: wall ms per step | {m}: cache "
                                                  f"GB/s over the wall" for m in modes)
            + " |\n|---|---|" + "---|" * (3 * len(modes)) + "\n"
            + "".join(f"| {fam} | {p['bytes'] / 2**30:.2f} | {cells(p)} |\n" for fam, p in profiles.items()))
    return head + "\n" + "\n".join(f"#### {fam}, {m}\n\n```\n{p[m][2]}\n```\n" for fam, p in profiles.items()
                                   for m in modes)
