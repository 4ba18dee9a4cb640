"""Decoding: tokens/s of greedy steps after a context of given length through the static-cache path of
models/generate.py (the step replayed from a CUDA graph on GPU), and the cache bytes each token of context
costs. The step's work does not depend on the cache contents, so the context is set by position, not by a
long prefill. Each variant is a way to run the step (`read`: models/masked_read.py; `compile`: the step
through torch.compile first; `cache_multiple`: what the caches' length is rounded up to, models/generate.py's
CACHE_MULTIPLE when not given), timed side by side; a family without per-token caches (Mamba2) reads nothing,
so it runs once per distinct `compile`."""

from __future__ import annotations

import time

import torch

from sessa_bench.bench.timing import free_memory, record_oom
from sessa_bench.budget import load_budget, load_family, solve
from sessa_bench.models.backbone import Backbone
from sessa_bench.models.generate import CACHE_MULTIPLE, StaticDecoder
from sessa_bench.models.sessa import SessaMixer


def bench_decoding(device, dtype, families, budget_name: str, vocab: int, contexts, batches,
                   steps: int = 16, variants=({"read": "reduce", "compile": False},), log=print,
                   on_row=None) -> list[dict]:
    """One row per (family, variant, context, batch); on_row(rows) after each (the caller writes them)."""
    cuda = device.type == "cuda"
    rows = []
    for fam in families:
        model = decode_model(fam, budget_name, vocab, device, dtype)
        per_tok, fixed = cache_bytes(model, dtype)
        todo = family_variants(model, variants, per_tok > 0)
        for var in todo:
            for ctx in contexts:
                for B in batches:
                    rows.append(_time_one(model, fam, var, ctx, B, steps, vocab, cuda, per_tok, fixed, log))
                    if on_row:
                        on_row(rows)
        del model
        free_memory()
    return rows


def decode_model(family: str, budget_name: str, vocab: int, device, dtype) -> Backbone:
    """The family's model at the budget, seeded, in eval mode on device in dtype."""
    torch.manual_seed(0)
    return Backbone(solve(load_family(family), load_budget(budget_name), vocab)).to(device=device,
                                                                                   dtype=dtype).eval()


def cache_bytes(model, dtype) -> tuple[int, int]:
    """(bytes of decode cache per token of context, fixed bytes per sequence) of every layer together."""
    elt = torch.finfo(dtype).bits // 8
    return (sum(m.state_per_token() for m in model.mixers) * elt, sum(m.state_fixed() for m in model.mixers) * elt)


def family_variants(model, variants, reads: bool) -> list[dict]:
    """The variants that differ for this model, each with its `cache_multiple`: one per distinct `compile` when
    it reads no cache (the caches' length then changes nothing); a read "A+B" (attention A, Sessa's feedback B)
    is plain A where no mixer reads feedback caches; duplicates dropped."""
    if not reads:
        return [{"read": "-", "compile": c, "cache_multiple": CACHE_MULTIPLE}
                for c in dict.fromkeys(bool(v["compile"]) for v in variants)]
    feedback = any(isinstance(m, SessaMixer) and m.feedback for m in model.mixers)
    seen = {((v["read"] if feedback else v["read"].split("+")[0]), bool(v["compile"]),
             v.get("cache_multiple", CACHE_MULTIPLE)): None for v in variants}  # StaticDecoder checks it
    return [{"read": r, "compile": c, "cache_multiple": m} for r, c, m in seen]


def seconds_per_step(dec: StaticDecoder, context: int, steps: int) -> float:
    """Wall seconds per greedy step over `steps` steps of `dec` from position `context`, the device synced
    before and after."""
    cuda = dec.device.type == "cuda"
    dec.pos.fill_(context)
    if cuda:
        torch.cuda.synchronize(dec.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        dec.advance()
    if cuda:
        torch.cuda.synchronize(dec.device)
    return (time.perf_counter() - t0) / steps


def with_batch_ratio(rows: list[dict]) -> list[dict]:
    """The rows with `x_batch1`: tokens/s over the batch-1 row of the same family, read, compile, cache
    multiple and context (issue 13 asks batch 16 for 8x batch 1); absent where that row is missing or either
    failed."""
    def key(r):
        return r["family"], r["read"], r["compile"], r.get("cache_multiple"), r["context"]
    one = {key(r): r["tokens_per_s"] for r in rows if r["batch"] == 1}
    out = []
    for r in rows:
        base, tps = one.get(key(r)), r["tokens_per_s"]
        ok = all(isinstance(v, (int, float)) and v > 0 for v in (base, tps))
        out.append({**r, "x_batch1": tps / base} if ok else dict(r))
    return out


def _time_one(model, fam, var, ctx, B, steps, vocab, cuda, per_tok, fixed, log) -> dict:
    """One timed row; a failure other than running out of memory is the row's `error` (tokens_per_s "error"):
    a variant that does not run, a compile that fails, must not end the part."""
    row = {"family": fam, "read": var["read"], "compile": bool(var["compile"]),
           "cache_multiple": var["cache_multiple"], "context": ctx, "batch": B,
           "cache_bytes_per_token": per_tok, "cache_fixed_bytes_per_seq": fixed,
           "path": "static+cuda_graph" if cuda else "static"}
    try:
        _measure(row, model, var, ctx, B, steps, vocab, cuda, per_tok, fixed)
    except Exception as e:  # noqa: BLE001 - recorded in the row and the log
        row.update(tokens_per_s="error", ms_per_step="error", error=f"{type(e).__name__}: {e}"[:300])
        free_memory()
    log(f"  decode {fam:12s} read={row['read']:6s} compile={row['compile']!s:5s} "
        f"cache_multiple={row['cache_multiple']!s:<3} ctx={ctx:6d} B={B:3d} "
        f"{row['tokens_per_s']} tok/s" + (f"  ERROR {row['error']}" if row.get("error") else ""))
    return row


def _measure(row, model, var, ctx, B, steps, vocab, cuda, per_tok, fixed) -> None:
    if var["compile"]:
        # Each compiled decoder is a recompile of the one `decode_step` code object, and Dynamo stops at its
        # recompile_limit (8) per code object and process: lease 18's Mamba2 rows, after Sessa's eight compiled
        # ones, failed with FailOnRecompileLimitHit. Every compiled row starts from a clean Dynamo cache (its
        # compilation is not timed).
        torch._dynamo.reset()
    with record_oom(row, "tokens_per_s", "ms_per_step"):
        dec = StaticDecoder(model, B, ctx + steps + 1, cuda_graph=cuda, compile=bool(var["compile"]),
                            read=var["read"] if var["read"] != "-" else "reduce",
                            cache_multiple=var["cache_multiple"])
        row["cache_len"] = dec.cache_len
        dec.tok.random_(0, vocab)
        seconds_per_step(dec, ctx, steps)  # one untimed pass first (allocator, lazy inits)
        dt = seconds_per_step(dec, ctx, steps)
        row["tokens_per_s"] = B / dt
        row["ms_per_step"] = 1e3 * dt
        row["cache_gib"] = (per_tok * ctx + fixed) * B / 2**30
        del dec
