"""Decoding: tokens/s of greedy steps after a context of given length, and the cache bytes each
token of context costs. Caches are filled by position (their content does not change the work), so
long contexts do not need a long prefill."""

from __future__ import annotations

import time

import torch

from sessa_bench.bench.timing import free_memory, record_oom
from sessa_bench.budget import load_budget, load_family, solve
from sessa_bench.models.backbone import Backbone


def bench_decoding(device, dtype, families, budget_name: str, vocab: int, contexts, batches,
                   steps: int = 16, log=print) -> list[dict]:
    budget = load_budget(budget_name)
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
                       "cache_fixed_bytes_per_seq": fixed}
                with record_oom(row, "tokens_per_s", "cache_gib"):
                    caches = model.init_cache(B, ctx + steps + 2, device=device, dtype=dtype)
                    tok = torch.randint(0, vocab, (B, 1), device=device)

                    def run():
                        for c in caches:
                            c.pos = ctx
                        for _ in range(steps):
                            model(tok, caches)

                    with torch.no_grad():
                        run()  # warm-up
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        run()
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                    row["tokens_per_s"] = B * steps / (time.perf_counter() - t0)
                    row["cache_gib"] = (per_tok * ctx + fixed) * B / 2**30
                    del caches
                rows.append(row)
                log(f"  decode {fam:12s} ctx={ctx:6d} B={B:3d} {row['tokens_per_s']} tok/s")
        del model
        free_memory()
    return rows
