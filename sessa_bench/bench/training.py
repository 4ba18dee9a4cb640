"""Training throughput: tokens/s and MFU per family, eager and torch.compile'd side by side, at given
(budget, vocab, sequence length, batch) shapes; the first steps (compilation, Triton autotuning) are timed
apart as `first_steps_s`."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from sessa_bench.bench.timing import record_oom
from sessa_bench.budget import load_budget, load_family, solve
from sessa_bench.flops import mfu, train_flops_per_token
from sessa_bench.models.backbone import Backbone


def graph_breaks() -> int:
    from torch._dynamo.utils import counters
    return sum(counters["graph_break"].values())


def make_step(model, opt, idx, device):
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step():
        with amp:
            logits = model(idx[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), idx[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def build(cfg, device, batch: int, seq_len: int, compile_backend: str | None):
    """Model (compiled in place when compile_backend is given), fused AdamW on CUDA, a random batch."""
    torch.manual_seed(0)
    model = Backbone(cfg).to(device)
    if compile_backend:
        model.compile(backend=compile_backend)  # not fullgraph: breaks are counted and reported instead
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    idx = torch.randint(0, cfg.vocab_size, (batch, seq_len + 1), device=device)
    return model, opt, idx


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_training(device, families, shapes: list[dict], compile_backends=(None, "inductor"), warmup: int = 3,
                   steps: int = 8, log=print, on_row=None) -> list[dict]:
    """One row per (shape, family, compile backend); shapes: dicts of budget_name, vocab, seq_len, batch.
    on_row(rows) is called after each row (the caller writes what is measured so far)."""
    rows = []
    for shape in shapes:
        budget = load_budget(shape["budget_name"])
        T, batch = shape["seq_len"], shape["batch"]
        for fam in families:
            cfg = solve(load_family(fam), budget, shape["vocab"])
            for backend in compile_backends:
                row = {"family": fam, "budget": budget.name, "seq_len": T, "batch": batch, "layers": cfg.n_layers,
                       "d_model": cfg.d_model, "compile_backend": backend or "none"}
                with record_oom(row, "tokens_per_s", "mfu"):
                    if backend:
                        torch._dynamo.reset()
                        from torch._dynamo.utils import counters
                        counters.clear()
                    model, opt, idx = build(cfg, device, batch, T, backend)
                    step = make_step(model, opt, idx, device)
                    flops = train_flops_per_token(model, T)
                    t0 = time.perf_counter()
                    for _ in range(warmup):
                        step()
                    sync(device)
                    t1 = time.perf_counter()
                    for _ in range(steps):
                        step()
                    sync(device)
                    tps = batch * T * steps / (time.perf_counter() - t1)
                    row.update(params=sum(p.numel() for p in model.parameters()), tokens_per_s=tps,
                               train_flops_per_token=flops, mfu=mfu(tps, flops, device), first_steps_s=t1 - t0,
                               graph_breaks=graph_breaks() if backend else 0,
                               backends=",".join(sorted({str(m.backend_used()) for m in model.mixers})))
                    del model, opt, idx, step
                rows.append(row)
                log(f"  train {fam:12s} {budget.name} T={T} B={batch} {row['compile_backend']:9s} "
                    f"{row['tokens_per_s']} tok/s  MFU {row['mfu']}  breaks {row.get('graph_breaks')}")
                if on_row:
                    on_row(rows)
    return rows


def side_by_side(rows: list[dict]) -> list[dict]:
    """Eager and compiled rows of one (shape, family) merged into one line."""
    merged = {}
    for r in rows:
        key = (r["budget"], r["seq_len"], r["batch"], r["family"])
        m = merged.setdefault(key, {k: r.get(k) for k in ("family", "budget", "seq_len", "batch", "params",
                                                          "layers", "d_model", "backends")})
        tag = "eager" if r["compile_backend"] == "none" else "compiled"
        m[f"{tag}_tok_s"], m[f"{tag}_mfu"] = r.get("tokens_per_s"), r.get("mfu")
        if tag == "compiled":
            m["graph_breaks"], m["compile_s"] = r.get("graph_breaks"), r.get("first_steps_s")
        m["params"] = m["params"] or r.get("params")
    for m in merged.values():
        e, c = m.get("eager_tok_s"), m.get("compiled_tok_s")
        m["speedup"] = c / e if isinstance(e, float) and isinstance(c, float) else None
    return list(merged.values())
