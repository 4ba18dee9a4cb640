"""How many ops one static decode step runs, per family, counted on the CPU under a dispatch mode (views and
other metadata-only ops left out): a graphed GPU step launches about one kernel per op, and each costs a few
microseconds even replayed from a CUDA graph, so the count bounds what fusion could save.

    python scripts/count_decode_ops.py [--budget base] [--batch 2] [--context 256]

On the CPU, bf16 batched products with a float32 result upcast both operands first (models/bmm_fp32.py); on a
GPU cuBLAS returns float32 itself, so here each such product counts as one op, as on the GPU.
"""

from __future__ import annotations

import argparse
import collections
import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sessa_bench.bench.decoding import decode_model
from sessa_bench.models.generate import StaticDecoder

METADATA = {"view", "_unsafe_view", "unsqueeze", "squeeze", "transpose", "t", "expand", "permute", "slice",
            "select", "alias", "detach", "split", "split_with_sizes", "unbind", "unflatten", "as_strided",
            "diagonal", "lift_fresh", "_reshape_alias", "promote_types", "view_as_real", "view_as_complex",
            "scalar_tensor"}


class OpCount(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops, self.paused = collections.Counter(), False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if not self.paused and name not in METADATA:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))

    def bmm_fp32(self, a, b):
        """models.bmm_fp32 as the GPU runs it: one product, no casts."""
        self.paused = True
        try:
            out = torch.bmm(a.float(), b.float())
        finally:
            self.paused = False
        self.ops["bmm"] += 1
        return out


def count(family: str, budget: str, batch: int, context: int, gpu_products: bool = True) -> tuple[int, OpCount]:
    """(layers, the counter) of one step; gpu_products=False counts the CPU's own casts of the products too."""
    from sessa_bench.models import masked_read

    model = decode_model(family, budget, 4096, "cpu", torch.bfloat16)
    dec = StaticDecoder(model, batch, context + 8, cuda_graph=False)
    dec.pos.fill_(context)
    c = OpCount()
    with contextlib.ExitStack() as stack:
        stack.callback(setattr, masked_read, "bmm_fp32", masked_read.bmm_fp32)
        if gpu_products:
            masked_read.bmm_fp32 = c.bmm_fp32
        with c:
            dec.advance()
    return model.cfg.n_layers, c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", default="base")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--families", nargs="+", default=["sessa", "transformer", "mamba2"])
    a = ap.parse_args()
    print("| family | layers | ops per step | per layer | top ops |\n|---|---|---|---|---|")
    for fam in a.families:
        layers, c = count(fam, a.budget, a.batch, a.context)
        n = sum(c.ops.values())
        top = ", ".join(f"{k} {v}" for k, v in c.ops.most_common(6))
        print(f"| {fam} | {layers} | {n} | {n / layers:.1f} | {top} |")


if __name__ == "__main__":
    main()
