"""Where a greedy decode step goes: torch.profiler over a few eager steps of the static-cache decoder
(models/generate.py, the kernels a CUDA graph of the step replays) at one context and batch (the profile
preset's `decode`), after warm-up steps. Issue 13 asks for batch 16 at 8x batch 1's tokens/s; Sessa's batch-16
step (eager `sdpa+matmul`, lease 18) moved its 8.25 GiB of cache in 5.84 ms, ~1.5 TB/s of the H200's ~4.8:
this says which kernels hold the rest. The kernels' summed time gives the cache's effective read rate."""

from __future__ import annotations

import torch

from sessa_bench.bench.block_profile import profiled, step_ms
from sessa_bench.bench.decoding import cache_bytes, decode_model
from sessa_bench.bench.training import sync
from sessa_bench.models.generate import StaticDecoder


def profile_decoding(device, dtype, families, budget_name: str, vocab: int, context: int, batch: int, read: str,
                     steps: int = 4, warmup: int = 2, top: int = 15, log=print) -> dict[str, tuple[float, float, str]]:
    """family -> (ms of kernels (CPU ops on a CPU) per step, the cache's bytes read per step, the profiler's
    table of the `top` entries by own time)."""
    cuda = device.type == "cuda"
    out = {}
    for fam in families:
        model = decode_model(fam, budget_name, vocab, device, dtype)
        per_tok, fixed = cache_bytes(model, dtype)
        read_bytes = (per_tok * context + fixed) * batch
        dec = StaticDecoder(model, batch, context + warmup + steps + 1, cuda_graph=False, read=read)
        dec.tok.random_(0, vocab)
        dec.pos.fill_(context)
        for _ in range(warmup):
            dec.advance()
        sync(device)
        events, table = profiled(lambda: [dec.advance() for _ in range(steps)], device, top)
        ms = step_ms(events, cuda) / steps
        out[fam] = (ms, read_bytes, table)
        log(f"  decode profile {fam}: {ms:.3f} ms of {'kernels' if cuda else 'CPU ops'} per step")
        del dec, model, events
        if cuda:
            torch.cuda.empty_cache()
    return out


def section(profiles: dict[str, tuple[float, float, str]], q: dict, cuda: bool) -> str:
    what = "kernel (device)" if cuda else "CPU op"
    head = (f"### Where a decode step goes (budget `{q['budget_name']}`, context {q['context']}, batch {q['batch']}, "
            f"read `{q['read']}`, eager, torch.profiler)\n\n{q.get('steps', 4)} steps after "
            f"{q.get('warmup', 2)} warm-up steps; per step the sum of every {what} time, and the cache read "
            f"in that time (the bytes of every layer's cache at this context and batch over the summed time: the "
            f"rate the step would reach if nothing but the kernels ran), then the top entries by own time.\n\n"
            f"| family | {what} ms per step | cache GiB | cache GB/s over that time |\n|---|---|---|---|\n"
            + "".join(f"| {fam} | {ms:.3f} | {b / 2**30:.2f} | {b / 1e6 / ms if ms else float('nan'):,.0f} |\n"
                      for fam, (ms, b, _) in profiles.items()))
    return head + "\n" + "\n".join(f"#### {fam}\n\n```\n{table}\n```\n" for fam, (_, _, table) in profiles.items())
