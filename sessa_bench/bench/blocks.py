"""Block level: the gated block around each mixer implementation, forward+backward and forward only, at
a fixed number of tokens per batch, for growing T; then the largest T each implementation fits."""

from __future__ import annotations

import torch

from sessa_bench.bench.block_check import REFERENCE, sessa_errors
from sessa_bench.bench.timing import free_memory, is_oom, measure, record_oom
from sessa_bench.cuda_graphs import graph_forward
from sessa_bench.models.attention import CausalAttention, _flash_attn_func
from sessa_bench.models.block import GatedBlock

TWO_LEVEL_BLOCK_ROWS = 512  # R of sessa/triton2: NOTES.md's estimate; a multiple of the default chunk (64)
# Other R timed beside it (sessa/triton2-r<R>): at R = 512 the two-level solve lost to the single level below
# T = 4096 and won above it (results/bench/nvidia-h200-blocks-2026-11-30.md)
OTHER_BLOCK_ROWS = (256, 1024)
# The two references every ratio is taken against, timed whatever --families says
REFERENCES = ("attention/sdpa", "attention/minimal")
PREFIX = {"sessa": "sessa/", "transformer": "attention/", "mamba2": "mamba2/"}
# Timed again with the block's step replayed from CUDA graphs (as `cuda_graphs=true` trains): eager, Sessa's
# block spent ~3 of its 10.2 ms at T = 4096 between kernels, our SDPA block ~1.5 of 4.9
# (results/bench/nvidia-h200-blocks-2026-11-30-lease15.md), so the eager ratio partly measures launches
# R = 1024 with its strip kernels and lse pass in wgmma-sized tiles (sessa/triton2-r1024-t<S>, S = STRIP_TILE):
# lease 17's profile had them at 135-190 TFLOP/s in the chunk's 64; with `d` its wavefronts also read each
# block's own alpha tiles from the strip instead of computing them in every D tile (strip_diag: the logits of a
# block's tile pairs once, not ND = 6 times). `d` at S = 128 was the mixer's default from lease 23 to 33; every
# other Sessa row pins the chunk's tile without `d`, and wavefronts, so each row's name says what it times,
# whatever the default.
STRIP_TILE = 128
TILED = (f"sessa/triton2-r1024-t{STRIP_TILE}", f"sessa/triton2-r1024-t{STRIP_TILE}d")
# The blocks of R = 1024 rows inverted whole (dense_blocks, kernels/NOTES.md "Dense blocks"): no
# wavefront, its strips in the same 128-tiles; the mixer's default since lease 33 (beside t128d, the one before)
DENSE = f"sessa/triton2-r1024-t{STRIP_TILE}-dense"
CHUNK_WAVEFRONT = {"feedback_strip_tile": None, "feedback_strip_diag": False, "feedback_dense_blocks": False}
# The rows at R = 1024 in 128-tiles: what each sets beside the wavefronts without the strip read
R1024_TILED = {TILED[0]: {}, TILED[1]: {"feedback_strip_diag": True}, DENSE: {"feedback_dense_blocks": True}}
GRAPHED = ("attention/sdpa", "attention/minimal", "sessa/triton", "sessa/triton2", "sessa/triton2-r1024", *TILED,
           DENSE)


def implementations(device: torch.device, d_model: int, n_heads: int, mamba: dict,
                    families: tuple[str, ...] | None = None) -> dict:
    """name -> factory of a mixer, for every implementation usable on this device (of `families` only, and
    the two references)."""
    from sessa_bench.bench.minimal_attention import MinimalAttention
    from sessa_bench.models import kernels
    from sessa_bench.models.mamba2 import Mamba2Mixer
    from sessa_bench.models.mamba_ssm_import import import_mamba_ssm
    from sessa_bench.models.sessa import SessaMixer

    cuda = device.type == "cuda"
    out = {}
    for impl in ("dense", "chunked", "triton"):
        if impl not in kernels.IMPLS or (impl == "triton" and not (cuda and kernels.triton_available())):
            continue
        # sessa/triton: the single-level solve at every T (the mixer's default is two-level above R = 1024 rows)
        out[f"sessa/{impl}"] = lambda impl=impl: SessaMixer(d_model, n_heads, backend="sdpa", impl=impl,
                                                            feedback_block_rows=None, **CHUNK_WAVEFRONT)
        if impl == "triton":  # the two-level solve beside it (kernels/NOTES.md)
            for rows in (TWO_LEVEL_BLOCK_ROWS, *OTHER_BLOCK_ROWS):
                name = "sessa/triton2" + ("" if rows == TWO_LEVEL_BLOCK_ROWS else f"-r{rows}")
                out[name] = lambda rows=rows: SessaMixer(d_model, n_heads, backend="sdpa", impl="triton",
                                                         feedback_block_rows=rows, **CHUNK_WAVEFRONT)
            for name, settings in R1024_TILED.items():
                out[name] = lambda settings=settings: SessaMixer(
                    d_model, n_heads, backend="sdpa", impl="triton", feedback_block_rows=1024,
                    feedback_strip_tile=STRIP_TILE, **{"feedback_strip_diag": False, "feedback_dense_blocks": False,
                                                       **settings})
    for backend in ("math", "sdpa", "flash_attn"):
        if backend == "flash_attn" and not (cuda and _flash_attn_func() is not None):
            continue
        out[f"attention/{backend}"] = lambda b=backend: CausalAttention(d_model, n_heads, backend=b)
    out["attention/minimal"] = lambda: MinimalAttention(d_model, n_heads)
    for backend in ("torch", "mamba_ssm"):
        if backend == "mamba_ssm" and not (cuda and import_mamba_ssm() is not None):
            continue
        out[f"mamba2/{backend}"] = lambda b=backend: Mamba2Mixer(d_model, backend=b, **mamba)
    if families is None:
        return out
    wanted = tuple(PREFIX[f] for f in families)
    return {k: v for k, v in out.items() if k in REFERENCES or k.startswith(wanted)}


def profiled(impls, families: tuple[str, ...], only: list[str] | None = None) -> list[str]:
    """The preset's block-profile impls that `--families` asks for, with the references beside them; none when
    it asks for no family in the list (lease 21's `--families mamba2` profiled Sessa's blocks). `only`
    (`--impls`): the named blocks instead of the preset's, beside the references (lease 31 profiled seven
    blocks where two were asked for)."""
    if only:
        impls = [*only, *(r for r in REFERENCES if r not in only)]
    wanted = tuple(PREFIX[f] for f in families)
    if not any(i.startswith(wanted) for i in impls):
        return []
    return [i for i in impls if i in REFERENCES or i.startswith(wanted)]


def profile_lengths(T, lengths: list[int] | None) -> list[int]:
    """The preset's block-profile T (one or a list), those of `--lengths` only when it is given."""
    ts = [T] if isinstance(T, int) else list(T)
    return [t for t in ts if lengths is None or t in lengths]


def block_input(factory, d_model: int, batch: int, T: int, dtype, device, backward: bool):
    """A gated block around factory()'s mixer, a random input (requiring grad with `backward`) and a random
    output gradient."""
    block = GatedBlock(d_model, factory()).to(device=device, dtype=dtype)
    x = torch.randn(batch, T, d_model, device=device, dtype=dtype, requires_grad=backward)
    return block, x, torch.randn_like(x)


def block_step(factory, d_model: int, batch: int, T: int, dtype, device, backward: bool):
    """One step of a gated block around factory()'s mixer on random input: its forward, and with `backward`
    the backward of a random gradient, the gradients cleared after it."""
    block, x, grad = block_input(factory, d_model, batch, T, dtype, device, backward)

    def step():
        y = block(x)
        if backward:
            y.backward(grad)
            x.grad = None
            for p in block.parameters():
                p.grad = None
    return step


def graphed(block: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor, backward: bool):
    """block's step on x (forward, and with `backward` the backward of grad) captured in CUDA graphs: a
    function that replays it. Forward and backward through torch.cuda.make_graphed_callables (gradients of x
    and the parameters land in x.grad and p.grad as eagerly); forward only, one graph under no_grad, whose
    replay returns its output."""
    if backward:
        fn = torch.cuda.make_graphed_callables(block, (x,))

        def step():
            fn(x).backward(grad)
        return step
    with torch.no_grad():  # 3 warm-ups: Triton autotuning and cuBLAS workspaces before the capture
        replay_graph, out = graph_forward(block, x.detach(), None, warmup=3)

    def replay():
        replay_graph()
        return out  # the graph's static output, rewritten by each replay
    return replay


def run_graphed(factory, d_model: int, batch: int, T: int, dtype, device, backward: bool, reps: int) -> dict:
    return measure(graphed(*block_input(factory, d_model, batch, T, dtype, device, backward), backward), device,
                   reps=reps)


def run_one(factory, d_model: int, batch: int, T: int, dtype, device, backward: bool, reps: int) -> dict:
    step = block_step(factory, d_model, batch, T, dtype, device, backward)
    if not backward:
        with torch.no_grad():
            return measure(step, device, reps=reps)
    return measure(step, device, reps=reps)


def select(impls: dict, only: list[str] | None) -> dict:
    """impls restricted to the names in `only` (all of them without it), the references every ratio and the
    err column need kept; an unknown name is a ValueError that lists this device's."""
    if not only:
        return impls
    unknown = [n for n in only if n not in impls]
    if unknown:
        raise ValueError(f"--impls: {unknown[0]!r} is not a block on this device (and --families); it has: "
                         f"{', '.join(impls)}")
    keep = {*only, *REFERENCES, REFERENCE}
    return {k: v for k, v in impls.items() if k in keep}


def bench_blocks(device, dtype, d_model: int, n_heads: int, tokens: int, lengths: list[int],
                 mamba: dict, reps: int = 5, fit_lengths: list[int] = (), log=print,
                 families: tuple[str, ...] | None = None, only: list[str] | None = None) -> tuple[list, list]:
    impls = select(implementations(device, d_model, n_heads, mamba, families), only)
    rows = []
    for T in lengths:
        batch = max(1, tokens // T)
        errors = sessa_errors(impls, d_model, batch, T, dtype, device, log)  # each Sessa row's check, first
        for name, factory in impls.items():
            for backward in (True, False):
                row = {"impl": name, "T": T, "batch": batch, "mode": "fwd+bwd" if backward else "fwd"}
                if backward and name in errors:
                    row["err"] = errors[name]
                try:
                    with record_oom(row, "ms", "peak_gib"):
                        row.update(run_one(factory, d_model, batch, T, dtype, device, backward, reps))
                except Exception as e:  # a row that cannot run (a kernel Triton cannot build at this size, say)
                    row.update(ms="failed", peak_gib="failed")  # is a finding; the references and rows go on
                    log(f"  {name}: failed: {type(e).__name__}: {str(e)[:200]}")
                if device.type == "cuda" and name in GRAPHED and isinstance(row["ms"], float):
                    try:
                        row["graph_ms"] = run_graphed(factory, d_model, batch, T, dtype, device, backward, reps)["ms"]
                    except Exception as e:  # a capture that fails is a finding, not the end of the part
                        row["graph_ms"] = "OOM" if is_oom(e) else "failed"
                        log(f"  {name}: graphed step {row['graph_ms']}: {type(e).__name__}: {str(e)[:200]}")
                    finally:
                        free_memory()
                rows.append(row)
                log(f"  {name:20s} T={T:6d} {row['mode']:7s} {row['ms']} ms  {row['peak_gib']} GiB"
                    + (f"  graphed {row['graph_ms']} ms" if "graph_ms" in row else ""))
    # ratios to our attention block (sdpa) and to the minimal one, at the same T and mode, eager to eager and
    # graphed to graphed
    for time_key, suffix in (("ms", ""), ("graph_ms", "_graph")):
        for key, impl in (("x_attention", "attention/sdpa"), ("x_minimal", "attention/minimal")):
            ref = {(r["T"], r["mode"]): r.get(time_key) for r in rows if r["impl"] == impl}
            for r in rows:
                if time_key in r:
                    a, b = r[time_key], ref.get((r["T"], r["mode"]))
                    r[key + suffix] = a / b if isinstance(a, float) and isinstance(b, float) else "n/a"
    # the largest single-sequence T each implementation trains (one fwd+bwd pass)
    fits = []
    for name, factory in impls.items():
        if name == "attention/minimal" or name.startswith("sessa/triton2-r"):
            continue  # the same memory as attention/sdpa and sessa/triton2; each try up to 131072 costs seconds
        largest = None
        for T in fit_lengths:
            try:
                run_one(factory, d_model, 1, T, dtype, device, True, reps=1)
                largest = T
            except Exception as e:
                if not is_oom(e):
                    raise
                free_memory()
                break
            free_memory()
        fits.append({"impl": name, "largest_T_fwd_bwd": largest, "tried_up_to": max(fit_lengths, default=None)})
        log(f"  fits: {name:20s} largest T = {largest}")
    return rows, fits
