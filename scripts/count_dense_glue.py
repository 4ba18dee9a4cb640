"""The PyTorch glue of Sessa's dense-block solve: bytes each aten op moves (models/kernels/NOTES.md, "Dense blocks").

Lease 28 timed the dense blocks (`dense_blocks=True`) at 6.05 ms of kernels a T = 4096 step against the
wavefront solve's 5.56: the products were as estimated, but copies, casts and elementwise ops between them
took ~1.8 ms. This runs the dense forward solve and adjoint (`_solve_dense`, `_adjoint_dense`) at the bench's
shapes on the meta device (shapes and dtypes only, nothing computed, no GPU) with the Triton strip kernel
replaced by an empty strip of its shape, and sums, per aten op, the bytes its tensor arguments and results
span: the traffic a GPU pays for it. Products (bmm, baddbmm) are listed apart from the glue. Also the dq, dk
strips of the backward (`_qk_grads`, the same for the wavefront solve, the default), its dl kernel not run.

    python scripts/count_dense_glue.py [--B 4] [--T 4096] [--D 768] [--R 1024]
"""

from __future__ import annotations

import argparse
import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import sessa_bench.models.kernels.feedback_triton as ft
from count_decode_ops import METADATA  # the metadata-only ops that script leaves out too

VIEWS = METADATA | {"reshape", "empty", "empty_strided", "empty_like"}  # and allocations: no traffic
PRODUCTS = {"bmm", "baddbmm", "mm", "addmm", "pair_product"}


class Traffic(TorchDispatchMode):
    """Per aten op: calls and bytes spanned by its tensor inputs and outputs (views and allocations free)."""
    active: "Traffic | None" = None

    def __init__(self):
        super().__init__()
        self.calls, self.bytes, self.paused = collections.Counter(), collections.Counter(), False

    def __enter__(self):
        Traffic.active = self
        return super().__enter__()

    def record(self, name: str, tensors) -> None:
        """Each tensor once: an in-place op or an out= op returns the tensor it wrote, already counted."""
        seen = {id(t): t for t in tree_leaves(tensors) if isinstance(t, torch.Tensor)}
        self.calls[name] += 1
        self.bytes[name] += sum(t.numel() * t.element_size() for t in seen.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name not in VIEWS and not self.paused and not (name == "copy_" and same_data(*args[:2])):
            self.record(name, (args, kwargs, out))
        return out


def same_data(dst: torch.Tensor, src: torch.Tensor) -> bool:
    """A copy of a view onto itself (what `x[i] += y` ends with), which copy_ returns from at once."""
    return (dst.untyped_storage()._cdata == src.untyped_storage()._cdata  # the same storage (also on meta)
            and dst.storage_offset() == src.storage_offset() and dst.stride() == src.stride()
            and dst.shape == src.shape and dst.dtype == src.dtype)


def fake_strip(q, k, lse, r0, r1, c0, c1, scratch, cfg):
    """_strip's shape and dtype, without its kernel: (B, r1 - r0, c1 - c0) from the scratch."""
    B = q.shape[0]
    return scratch[:B * (r1 - r0) * (c1 - c0)].view(B, r1 - r0, c1 - c0)


def gpu_bmm_fp32(a, b, out=None):
    """bmm_fp32 as it runs on CUDA (float32 out of half operands, one op, into `out` if given), on the meta
    device."""
    kw = {} if out is None else {"out": out}
    return torch.bmm(a, b, out_dtype=torch.promote_types(a.dtype, torch.float32), **kw)


def gpu_baddbmm_fp32(c, a, b, out=None):
    """baddbmm_fp32 as it runs on CUDA (c added in cuBLAS's epilogue, one op), on the meta device, whose
    baddbmm(out_dtype=) fails (torch 2.13's decomposition takes out_dtype for beta): its result by bmm, its
    traffic recorded as one baddbmm."""
    mode = Traffic.active
    mode.paused = True
    result = gpu_bmm_fp32(a, b, out)
    mode.paused = False
    mode.record("baddbmm", (c, a, b, result))
    return result


def gpu_pair_products(a, b, out, g, prec):
    """_pair_products as it runs on CUDA (one Triton launch reading the blocks where they lie): its traffic
    recorded as one product, its result left as allocated."""
    Traffic.active.record("pair_product", (a, b, out, g))


class NoLaunch:
    """A Triton kernel's launch (`kernel[grid](...)`) that does nothing: the strip of dl stays as allocated."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def count(B: int, T: int, D: int, R: int, chunk: int = 64, dtype=torch.bfloat16) -> dict[str, Traffic]:
    """The traffic of one forward solve, one adjoint and the dq, dk strips that follow every adjoint (both
    solves share them), by aten op; the solve module as it was afterwards."""
    swapped = {"_strip": fake_strip, "bmm_fp32": gpu_bmm_fp32, "baddbmm_fp32": gpu_baddbmm_fp32,
               "_dl_kernel": NoLaunch(), "_pair_products": gpu_pair_products,
               "_pair_prec": lambda x, cfg: cfg.PV_PREC}  # the doubling's CUDA path
    saved = {name: getattr(ft, name) for name in swapped}
    dev = torch.device("meta")
    cfg = ft._Config(dtype, D, chunk, None, None, strip_tile=128, strip_diag=True, dense_blocks=True)
    f, ds = (torch.empty(B, T, D, device=dev, dtype=dtype) for _ in range(2))
    q, k = (torch.empty(B, T, D, device=dev, dtype=dtype) for _ in range(2))
    g, lse = torch.empty(B, T, device=dev), torch.empty(B, T, device=dev)
    W = torch.empty(B, -(-T // chunk), chunk, chunk, device=dev)
    modes = {}
    try:
        for name, fn in swapped.items():
            setattr(ft, name, fn)
        with Traffic() as modes["forward (_solve_dense)"]:
            WR = ft._solve_dense(f, q, k, g, lse, W, cfg, R)[2]
        with Traffic() as modes["adjoint (_adjoint_dense)"]:
            u, v = ft._adjoint_dense(ds, q, k, g, lse, W, WR, cfg, R)
        with Traffic() as modes["dq, dk (_qk_grads, either solve)"]:
            ft._qk_grads(q, k, u, u, g, lse, g, cfg, v)
    finally:
        for name, fn in saved.items():
            setattr(ft, name, fn)
    return modes


def glue_bytes(mode: Traffic) -> int:
    return sum(v for op, v in mode.bytes.items() if op not in PRODUCTS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--T", type=int, default=4096)
    ap.add_argument("--D", type=int, default=768)
    ap.add_argument("--R", type=int, default=1024)
    a = ap.parse_args()
    print(f"B={a.B} T={a.T} D={a.D} R={a.R}, bfloat16; MB spanned by each op's tensors (inputs + outputs)\n")
    for where, m in count(a.B, a.T, a.D, a.R).items():
        prod = sum(m.bytes.values()) - glue_bytes(m)
        print(f"{where}: glue {glue_bytes(m) / 1e6:.0f} MB, products {prod / 1e6:.0f} MB")
        for op, v in m.bytes.most_common():
            if v:
                print(f"  {op:14s} {m.calls[op]:4d} calls {v / 1e6:9.1f} MB{'  (product)' if op in PRODUCTS else ''}")
        print()


if __name__ == "__main__":
    main()
