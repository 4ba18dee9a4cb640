"""Decoding: tokens/s of greedy steps after a context of given length through the static-cache path of
models/generate.py (the step replayed from a CUDA graph on GPU), and the cache bytes each token of context
costs. The step's work does not depend on the cache contents, so the context is set by position, not by a
long prefill."""

from __future__ import annotations

import time

import torch

from sessa_bench.bench.timing import free_memory, record_oom
from sessa_bench.budget import load_budget, load_family, solve
from sessa_bench.models.backbone import Backbone
from sessa_bench.models.generate import StaticDecoder


def bench_decoding(device, dtype, families, budget_name: str, vocab: int, contexts, batches,
                   steps: int = 16, log=print) -> list[dict]:
    budget = load_budget(budget_name)
    cuda = device.type == "cuda"
    rows = []
    for fam in families:
        torch.manual_seed(0)
        model = Backbone(solve(load_family(fam), budget, vocab)).to(device=device, dtype=dtype).eval()
        elt = torch.finfo(dtype).bits // 8
        per_tok = sum(m.state_per_token() for m in model.mixers) * elt
        fixed = sum(m.state_fixed() for m in model.mixers) * elt
        for ctx in contexts:
            for B in batches:
                row = {"family": fam, "context": ctx, "batch": B, "cache_bytes_per_token": per_tok,
                       "cache_fixed_bytes_per_seq": fixed, "path": "static+cuda_graph" if cuda else "static"}
                with record_oom(row, "tokens_per_s", "ms_per_step"):
                    dec = StaticDecoder(model, B, ctx + steps + 1, cuda_graph=cuda)
                    dec.tok.random_(0, vocab)
                    for timed in (False, True):  # one untimed pass first (allocator, lazy inits)
                        dec.pos.fill_(ctx)
                        if cuda:
                            torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        for _ in range(steps):
                            dec.advance()
                        if cuda:
                            torch.cuda.synchronize()
                    dt = time.perf_counter() - t0
                    row["tokens_per_s"] = B * steps / dt
                    row["ms_per_step"] = 1e3 * dt / steps
                    row["cache_gib"] = (per_tok * ctx + fixed) * B / 2**30
                    del dec
                rows.append(row)
                log(f"  decode {fam:12s} ctx={ctx:6d} B={B:3d} {row['tokens_per_s']} tok/s")
        del model
        free_memory()
    return rows
