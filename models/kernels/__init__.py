"""Implementations of Sessa's feedback solve. `feedback(..., impl=)` picks one; all compute the same s.

- dense:   the T x T reference (feedback_dense.py); O(B T^2) memory
- chunked: pure PyTorch, chunks of C rows, O(B T C + B T D) memory, any device (feedback_chunked.py)
- triton:  Triton kernels for CUDA, same memory bound as chunked (feedback_triton.py, NOTES.md)
- auto:    triton for CUDA tensors (fp16/bf16/fp32) when Triton imports, else chunked above AUTO_DENSE_MAX_T tokens and
           dense up to it; `resolve_impl` says which one a call would use
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from .feedback_chunked import feedback_chunked
from .feedback_dense import feedback_dense

IMPLS = ("auto", "dense", "chunked", "triton")
AUTO_DENSE_MAX_T = 512  # dense is fastest on CPU for short rows and its T x T buffers are small there
# The Sessa mixer's default block of the two-level Triton solve (None: single level). Forward+backward of a
# block, lease 17 (results/bench/nvidia-h200-blocks-2026-11-30-lease17.md), R = 1024 against the single level:
# graphed 6.35 / 8.06 ms at T = 4096, 9.73 / 13.12 at 8192, 16.35 / 23.15 at 16384, 4.83 / 5.45 at 2048 (eager
# 6.36 / 6.06 there); at T <= R it is the single level, launch for launch. R = 512 was within one run's noise
# of it; lease 15 (before the strips' launch cut) had R = 1024 the best two-level setting from T = 1024 up.
DEFAULT_BLOCK_ROWS = 1024
# The Sessa mixer's default tile of the Triton solve's fully parallel kernels (alpha's strips, dl, the lse
# pass's past tiles; None: the chunk, 64) and whether the two-level wavefronts read each block's own alpha tiles
# from its strip (written once) instead of computing them in every D tile's program. 128 with the strip read
# won in two leases' `make bench` (graphed forward+backward over the minimal block, R = 1024, against the chunk's
# tile without it): 1.37 / 1.56 / 1.97x against 1.51 / 1.66 / 2.16x at T = 2048 / 4096 / 16384 (lease 22,
# results/bench/nvidia-h200-blocks-2026-12-01-strip.md), 1.57 against 1.66x at T = 4096 (lease 23,
# ...-2026-12-02-strip.md), the same error (the bench's `err`, against the float32 dense solve); 128 without
# the strip read was within noise of it except at T = 2048 (1.48x). Runs record them in `backends`
# (SessaMixer.backend_used).
DEFAULT_STRIP_TILE = 128
DEFAULT_STRIP_DIAG = True
# The Sessa mixer inverts each block of the two-level solve whole (dense_blocks, NOTES.md "Dense blocks") by
# default since lease 33: graphed forward+backward over the minimal block against the wavefronts' t128d, in one
# run each (results/bench/nvidia-h200-blocks-2026-12-03-kept-wr*.md): 1.34 / 1.29 / 1.44 / 1.59 / 2.07x against
# 1.42 / 1.52 / 1.53 / 1.83 / 2.73x at T = 600 / 1024 / 2048 / 4096 / 16384, the same error, memory flat in T
# (0.75 GiB against 0.69: W_R kept for the backward); eager 5 % faster to 13 % slower (launch-bound, two runs).
# Where the mixer has no blocks (feedback_block_rows None) it walks wavefronts.
DEFAULT_DENSE_BLOCKS = True
STRIP_TILES = (16, 32, 64, 128)  # square tiles, powers of two (tl.arange)
# The Triton solve's chunk C (rows a wavefront step solves; W_c is C x C): 64 by default. 128 was tried and
# removed: no faster on the H200 (lease 25), and its float32 build did not finish in ~280 s (lease 26, NOTES.md).
CHUNKS = (16, 32, 64)
DEFAULT_CHUNK = 64
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # float64 references use dense/chunked


@functools.cache  # asked on every Sessa forward: search the import path once
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_runs_on(x: torch.Tensor, triton_ok: bool | None = None) -> bool:
    """Whether a Triton kernel can take x: Triton imports and x is on CUDA (any device under TRITON_INTERPRET=1,
    the CPU tests' interpreter). triton_ok: the import probe, taken once when a module is built (None: probe
    now; a compiled forward then traces the probe's cache wrapper, which Dynamo warns about)."""
    ok = triton_available() if triton_ok is None else triton_ok
    return ok and (x.is_cuda or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"))


def block_len(T: int, chunk: int, block_rows: int | None) -> int:
    """Rows of the two-level solve's longest block (its first): a multiple of the chunk, T rounded up to the
    chunk at most (one block of all T without block_rows)."""
    chunks = -(-T // chunk)
    return (chunks if block_rows is None else min(chunks, max(1, block_rows // chunk))) * chunk


def check_block_rows(block_rows, chunk: int, dense_blocks: bool = False) -> None:
    if block_rows is not None and (isinstance(block_rows, bool) or not isinstance(block_rows, int)
                                   or block_rows <= 0 or block_rows % chunk):
        raise ValueError(f"feedback block_rows={block_rows!r} must be None or a positive multiple of chunk={chunk}")
    if dense_blocks and block_rows is None:  # one block of all T would be a T x T inverse
        raise ValueError("feedback dense_blocks=True needs block_rows (the blocks it inverts), got None")


def triton_label(strip_tile, strip_diag, chunk: int = DEFAULT_CHUNK, dense_blocks: bool = False) -> str:
    """The Triton solve as a run's `backends` records it: `triton`, then `-t<tile>` for a strip tile other than
    the chunk and `d` for the strip read (runs before these options recorded plain `triton`: the chunk's tile),
    then `-c<chunk>` for a chunk other than the default and `-dense` for blocks inverted whole (which read no
    wavefront tiles: no `d` then, whatever strip_diag says)."""
    return ("triton" + (f"-t{strip_tile}" if strip_tile else "") + ("d" if strip_diag and not dense_blocks else "")
            + (f"-c{chunk}" if chunk != DEFAULT_CHUNK else "") + ("-dense" if dense_blocks else ""))


def check_chunk(chunk) -> None:
    if isinstance(chunk, bool) or chunk not in CHUNKS:
        raise ValueError(f"feedback chunk={chunk!r} must be one of {CHUNKS} for impl='triton'")


def check_strip_tile(strip_tile) -> None:
    if strip_tile is not None and (isinstance(strip_tile, bool) or not isinstance(strip_tile, int)
                                   or strip_tile not in STRIP_TILES):
        raise ValueError(f"feedback strip_tile={strip_tile!r} must be None (the chunk) or one of {STRIP_TILES}")


def resolve_impl(impl: str, x: torch.Tensor, triton_ok: bool | None = None) -> str:
    """The implementation `feedback(x, ..., impl=impl)` runs for an input like x: (B, T, D). triton_ok: the
    Triton probe, taken once when the mixer is built (None: probe now)."""
    if impl not in IMPLS:
        raise ValueError(f"sessa impl={impl!r} is not one of {IMPLS}")
    if impl != "auto":
        return impl
    if triton_ok is None:
        triton_ok = triton_available()
    if x.is_cuda and x.dtype in TRITON_DTYPES and triton_ok:
        return "triton"
    return "chunked" if x.shape[1] > AUTO_DENSE_MAX_T else "dense"


def feedback(f, q_b, k_b, gamma, impl: str = "auto", triton_ok: bool | None = None, block_rows: int | None = None,
             strip_tile: int | None = None, strip_diag: bool = False, chunk: int = DEFAULT_CHUNK,
             dense_blocks: bool = False):
    """block_rows, strip_tile, strip_diag, chunk, dense_blocks: the two-level Triton solve's block, its strip
    kernels' tile, whether its wavefronts read their tiles from the strips, its chunk, and whether its blocks are
    inverted whole instead (feedback_triton); the other impls compute the same s without them and ignore them."""
    impl = resolve_impl(impl, f, triton_ok)
    if impl == "dense":
        return feedback_dense(f, q_b, k_b, gamma)
    if impl == "chunked":
        return feedback_chunked(f, q_b, k_b, gamma)
    if not (triton_available() if triton_ok is None else triton_ok):
        raise ValueError("sessa impl='triton' needs the triton package (pip install triton); "
                         "use impl='chunked' without it")
    if not f.is_cuda and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        raise ValueError(f"sessa impl='triton' needs CUDA tensors, got {f.device}; use impl='chunked' on CPU")
    from .feedback_triton import feedback_triton  # imported on first use: Triton is optional
    return feedback_triton(f, q_b, k_b, gamma, chunk=chunk, block_rows=block_rows, strip_tile=strip_tile,
                           strip_diag=strip_diag, dense_blocks=dense_blocks)

