"""The decode step's cache read alone: each implementation of models/masked_read.py at the shapes a family's
decode step reads (attention's heads; Sessa's one D-wide feedback head), one query per head over a cache of
`context` positions, at each batch size.

At batch 16 a decode step is mostly this read (Sessa at `base`, 4096 positions: ~8 GiB of cache a step), so how
fast each implementation streams K and V decides the step: `gb_s` is the bytes of K and V over the read's time,
`x_sdpa` its time over the eager sdpa read's at the same shape and batch, `step_ms` the time of all the model's
layers of that shape. On CUDA a read is timed as the decode step runs it, replayed from a CUDA graph (`calls`
reads in one graph, over copies of the cache too large together for the L2 cache; the median of `reps`
replays); the Triton read also at fixed split counts (`triton/S`) beside its own choice. Every output is
checked against the float64 `reduce` read (`rel_err`; that read is tested against a per-head softmax reference
in tests/test_masked_read.py), so a fast wrong read cannot pass."""

from __future__ import annotations

import functools

import torch

from sessa_bench.bench.decoding import decode_model
from sessa_bench.bench.timing import free_memory, measure, record_oom
from sessa_bench.cuda_graphs import graph_forward
from sessa_bench.models.kernels import triton_runs_on
from sessa_bench.models.masked_read import masked_read
from sessa_bench.models.sessa import SessaMixer


FLUSH_BYTES = 256 * 2**20  # the caches' copies together: several times an H100's / H200's 50-60 MB of L2
MAX_COPIES = 64  # a bound on the reads per graph for toy shapes (base's smallest cache, 12.6 MB, takes 21)


def read_shapes(model) -> list[dict]:
    """The distinct reads of one decode step of `model`: cache kind, query heads H, key/value heads Hkv, head
    width d, and how many layers read that shape."""
    count: dict[tuple, int] = {}
    for m in model.mixers:
        keys = []
        if hasattr(m, "n_kv_heads"):  # attention, and Sessa's attention branch
            keys.append(("attention", m.n_heads, m.n_kv_heads, m.head_dim))
        if isinstance(m, SessaMixer) and m.feedback:
            keys.append(("feedback", 1, 1, m.d_model))
        for k in keys:
            count[k] = count.get(k, 0) + 1
    return [{"cache": c, "H": H, "Hkv": Hkv, "d": d, "layers": n} for (c, H, Hkv, d), n in count.items()]


def variants(impls, compiled, triton_splits, triton: bool) -> list[tuple[str, bool, int]]:
    """(read, compiled, forced Triton splits or 0) to time: every read of `impls` eager, those of `compiled`
    through torch.compile too (a compile per row: only where the compiler can fuse something, as `reduce`'s
    product and sum). The Triton read needs CUDA and the triton package (`triton`); its forced splits are timed
    eager (its op is one graph node either way)."""
    ok = [r for r in impls if r != "triton" or triton]
    out = [(r, False, 0) for r in ok] + [(r, True, 0) for r in compiled if r in ok]
    if "triton" in ok:
        out += [("triton", False, int(s)) for s in triton_splits]
    return out


def bench_reads(device, dtype, families, budget_name: str, vocab: int, context: int, batches, impls,
                compiled=(), triton_splits=(), calls: int = 10, reps: int = 5, log=print,
                on_row=None) -> list[dict]:
    """One row per (family, shape, batch, variant); on_row(rows) after each (the caller writes them)."""
    triton = triton_runs_on(torch.empty(0, device=device))
    rows = []
    for fam in families:
        model = decode_model(fam, budget_name, vocab, device, dtype)
        shapes = read_shapes(model)
        del model
        free_memory()
        for shape in shapes:
            for B in batches:
                these = []
                with torch.no_grad():
                    data = _inputs(B, shape["H"], shape["Hkv"], shape["d"], context, dtype, device)
                    for read, comp, n_splits in variants(impls, compiled, triton_splits, triton):
                        row = {"family": fam, **shape, "context": context, "batch": B,
                               "read": f"triton/{n_splits}" if n_splits else read, "compile": comp}
                        _time(row, data, read, comp, n_splits, device, calls, reps)
                        these.append(row)
                        rows.append(row)
                        log(f"  read {fam:12s} {shape['cache']:9s} B={B:3d} {row['read']:10s} compile={comp!s:5s} "
                            f"{row.get('us', '-')} us" + (f"  ERROR {row['error']}" if row.get("error") else ""))
                        if on_row:
                            on_row(rows)
                del data
                free_memory()
                with_sdpa_ratio(these)
    return rows


def with_sdpa_ratio(rows: list[dict]) -> None:
    """`x_sdpa` on each timed row of one shape and batch: its time over the eager sdpa read's (< 1: faster)."""
    base = next((r["us"] for r in rows if r["read"] == "sdpa" and not r["compile"]
                 and isinstance(r.get("us"), float)), None)
    for r in rows:
        if base and isinstance(r.get("us"), float):
            r["x_sdpa"] = r["us"] / base


def _inputs(B, H, Hkv, d, L, dtype, device):
    """q, copies of (K, V) in dtype, the mask of a step mid-decode (the last position not yet written), and the
    float64 reduce read that every variant is checked against. On CUDA the copies hold at least FLUSH_BYTES
    together and the timed reads cycle through them, as a decode step reads a new layer's cache each time: a
    batch-1 cache (12.6 MB at `base`) would otherwise be read from the L2 cache."""
    gen = torch.Generator(device=device).manual_seed(0)
    q = (torch.randn(B, H, d, generator=gen, device=device) / 4).to(dtype)
    K, V = (torch.randn(B, L, Hkv, d, generator=gen, device=device).to(dtype) for _ in range(2))
    mask = torch.arange(L, device=device) < L - 1
    want = masked_read(q.double(), K.double(), V.double(), mask, "reduce")
    n = min(-(-FLUSH_BYTES // (K.nbytes + V.nbytes)), MAX_COPIES) if device.type == "cuda" else 1
    return q, [(K, V)] + [(K.clone(), V.clone()) for _ in range(n - 1)], mask, want


def _time(row, data, read, comp, n_splits, device, calls, reps) -> None:
    """Fill row with the read's time, rate and error; a failure is the row's `error` (us "error"), an
    out-of-memory its "OOM": a read that does not run must not end the part."""
    try:
        with record_oom(row, "us", "gb_s"):
            _measure(row, data, read, comp, n_splits, device, calls, reps)
    except Exception as e:  # noqa: BLE001 - recorded in the row and the log
        row.update(us="error", gb_s="error", error=f"{type(e).__name__}: {e}"[:300])
        free_memory()


def _measure(row, data, read, comp, n_splits, device, calls, reps) -> None:
    q, copies, mask, want = data
    if n_splits:
        from sessa_bench.models.kernels import split_read_triton  # noqa: F401 (registers the op)
        def one(q, K, V, m):
            return torch.ops.sessa_bench.split_read(q, K, V, m, n_splits)
        m = mask.to(torch.uint8)
    else:
        one, m = functools.partial(masked_read, impl=read), mask
        if comp:
            torch._dynamo.reset()  # one code object compiled per row: each starts from a clean cache
            one = torch.compile(one, fullgraph=True, dynamic=False)
    fns = [functools.partial(one, q, K, V, m) for K, V in copies]
    row["rel_err"] = float((fns[0]().double() - want).norm() / want.norm())
    if device.type == "cuda":  # `calls` reads in one graph, cycling through the copies (warmed up once each)
        calls = max(calls, len(fns))
        run, _ = graph_forward(lambda _: [fns[i % len(fns)]() for i in range(calls)], None, None, warmup=1)
        per = calls
    else:
        run, per = fns[0], 1
    ms = measure(run, device, warmup=2, reps=reps)["ms"] / per
    K, V = copies[0]
    row["us"] = 1e3 * ms
    row["gb_s"] = (K.nbytes + V.nbytes) / (ms * 1e-3) / 1e9
    row["step_ms"] = ms * row["layers"]
