"""Training throughput: tokens/s and MFU per family, eager, torch.compile'd and (on CUDA, backend
`cuda_graphs`) with the blocks replayed in CUDA graphs (sessa_bench/cuda_graphs.py) side by side, at given
(budget, vocab, sequence length, batch) shapes; the first steps (compilation, Triton autotuning) are timed
apart as `first_steps_s`. The bare step is a hand-written forward/backward/AdamW step on a random batch;
with `harness`, the real training loop (sessa_bench/bench/harness_loop.py) is timed at the same shapes
beside it (rows with loop="harness")."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from sessa_bench.bench.harness_loop import harness_throughput
from sessa_bench.bench.timing import record_oom
from sessa_bench.budget import load_budget, load_family, solve
from sessa_bench.flops import mfu, train_flops_per_token
from sessa_bench.models.backbone import Backbone


def graph_break_reasons() -> dict[str, int]:
    """Dynamo's graph breaks since the counters were last cleared: reason -> count."""
    from torch._dynamo.utils import counters
    return dict(counters["graph_break"])


def graph_breaks() -> int:
    return sum(graph_break_reasons().values())


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


GRAPHS = "cuda_graphs"  # the pseudo compile backend of the graphed rows


def build(cfg, device, batch: int, seq_len: int, compile_backend: str | None):
    """Model (compiled in place when compile_backend is given; its blocks graphed for GRAPHS), fused AdamW on
    CUDA, a random batch."""
    torch.manual_seed(0)
    model = Backbone(cfg).to(device)
    if compile_backend == GRAPHS:
        from sessa_bench.cuda_graphs import GraphedBlocks
        GraphedBlocks(model.blocks)  # captured in the first warm-up step, as in training
    elif compile_backend:
        model.compile_blocks(backend=compile_backend)  # as training does; breaks are counted, not fatal
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    idx = torch.randint(0, cfg.vocab_size, (batch, seq_len + 1), device=device)
    return model, opt, idx


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def harness_variants(compile_backends) -> list[str]:
    """Execution modes of the harness loop (harness_loop.MODES): eager always; compiled only beside bare
    inductor rows, since `compile=true` in the harness is torch.compile's default backend (inductor); graphed
    beside bare graphed rows."""
    return ["eager", *(["compile"] if "inductor" in compile_backends else []),
            *([GRAPHS] if GRAPHS in compile_backends else [])]


def harness_row(device, fam: str, shape: dict, cfg, mode: str, steps: int, warmup: int,
                bare_params: int | None) -> dict:
    """One harness-loop row. A failure is recorded in the row (tokens_per_s "OOM" or "error", the message
    in `error`), so the other families are still measured."""
    row = {"family": fam, "budget": shape["budget_name"], "seq_len": shape["seq_len"], "batch": shape["batch"],
           "layers": cfg.n_layers, "d_model": cfg.d_model, "loop": "harness",
           "compile_backend": {"eager": "none", "compile": "inductor"}.get(mode, mode)}
    try:
        with record_oom(row, "tokens_per_s", "mfu"):
            row.update(harness_throughput(fam, shape, mode, device, steps, warmup))
    except Exception as e:  # noqa: BLE001 - one family's failure must not end the bench
        row.update(tokens_per_s="error", mfu="error", error=f"{type(e).__name__}: {e}"[:500])
    if bare_params is not None and isinstance(row.get("params"), int) and row["params"] != bare_params:
        row["error"] = f"params {row['params']:,} != the bare step's {bare_params:,}: the shapes differ"
    return row


def bench_training(device, families, shapes: list[dict], compile_backends=(None, "inductor"), warmup: int = 3,
                   steps: int = 8, harness: bool = False, log=print, on_row=None) -> list[dict]:
    """One row per (shape, family, compile backend) of the bare step (loop="bare"), and with `harness` one
    per (shape, family, harness_variants) of the real training loop (loop="harness"); shapes: dicts of
    budget_name, vocab, seq_len, batch. on_row(rows) is called after each row (the caller writes what is
    measured so far)."""
    rows = []
    for shape in shapes:
        budget = load_budget(shape["budget_name"])
        T, batch = shape["seq_len"], shape["batch"]
        for fam in families:
            cfg = solve(load_family(fam), budget, shape["vocab"])
            first = len(rows)
            for backend in compile_backends:
                if backend == GRAPHS and device.type != "cuda":
                    continue  # CUDA graphs need CUDA
                compiling = backend not in (None, GRAPHS)
                row = {"family": fam, "budget": budget.name, "seq_len": T, "batch": batch, "layers": cfg.n_layers,
                       "d_model": cfg.d_model, "loop": "bare", "compile_backend": backend or "none"}
                with record_oom(row, "tokens_per_s", "mfu"):
                    if compiling:
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
                               graph_breaks=graph_breaks() if compiling else 0,
                               backends=",".join(sorted({str(m.backend_used()) for m in model.mixers})))
                    del model, opt, idx, step
                rows.append(row)
                log(f"  train {fam:12s} {budget.name} T={T} B={batch} {row['compile_backend']:9s} "
                    f"{row['tokens_per_s']} tok/s  MFU {row['mfu']}  breaks {row.get('graph_breaks')}")
                if compiling and row.get("graph_breaks"):
                    for reason, n in graph_break_reasons().items():  # what to fix (issue 13)
                        log(f"    graph break x{n}: {' '.join(reason.split())[:300]}")
                if on_row:
                    on_row(rows)
            # the bare rows of this (shape, family) are the last ones; their model is the harness's reference
            bare_params = next((r["params"] for r in rows[first:] if isinstance(r.get("params"), int)), None)
            for mode in harness_variants(compile_backends) if harness else []:
                if mode == GRAPHS and device.type != "cuda":
                    continue
                row = harness_row(device, fam, shape, cfg, mode, steps, warmup, bare_params)
                rows.append(row)
                log(f"  train {fam:12s} {budget.name} T={T} B={batch} harness {row['compile_backend']:9s} "
                    f"{row['tokens_per_s']} tok/s  params {row.get('params')}"
                    + (f"  ERROR {row['error']}" if row.get("error") else ""))
                if on_row:
                    on_row(rows)
    return rows


def side_by_side(rows: list[dict]) -> list[dict]:
    """The rows of one (shape, family) merged into one line: bare eager, compiled and graphed, and the harness
    loop (`loop_eager_tok_s`, `loop_compiled_tok_s`, `loop_graphed_tok_s`) with its ratio to the bare step of
    the same setting (`loop_*_x`; none where either failed or the harness row has an error); `speedup` and
    `graphs_speedup`: compiled and graphed bare step over eager."""
    merged = {}
    for r in rows:
        key = (r["budget"], r["seq_len"], r["batch"], r["family"])
        m = merged.setdefault(key, {k: r.get(k) for k in ("family", "budget", "seq_len", "batch", "params",
                                                          "layers", "d_model", "backends")})
        tag = {"none": "eager", GRAPHS: "graphed"}.get(r["compile_backend"], "compiled")
        if r.get("loop") == "harness":
            m[f"loop_{tag}_tok_s"] = r.get("tokens_per_s")
            m[f"loop_{tag}_error"] = r.get("error")
            continue
        m[f"{tag}_tok_s"], m[f"{tag}_mfu"] = r.get("tokens_per_s"), r.get("mfu")
        if tag == "compiled":
            m["graph_breaks"], m["compile_s"] = r.get("graph_breaks"), r.get("first_steps_s")
        m["params"] = m["params"] or r.get("params")
    for m in merged.values():
        m["speedup"] = ratio(m.get("compiled_tok_s"), m.get("eager_tok_s"))
        if "graphed_tok_s" in m:
            m["graphs_speedup"] = ratio(m.get("graphed_tok_s"), m.get("eager_tok_s"))
        for tag in ("eager", "compiled", "graphed"):
            if f"loop_{tag}_tok_s" in m:
                ok = not m.pop(f"loop_{tag}_error")
                m[f"loop_{tag}_x"] = ratio(m[f"loop_{tag}_tok_s"], m.get(f"{tag}_tok_s")) if ok else None
    return list(merged.values())


def ratio(a, b) -> float | None:
    """a / b for two measured rates; None when either is missing or a marker such as "OOM"."""
    return a / b if isinstance(a, float) and isinstance(b, float) else None
