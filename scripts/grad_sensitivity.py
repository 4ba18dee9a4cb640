"""How far a tiny perturbation inside the model moves its first-batch gradient: the Table 1 `small` model of a
family at init, one batch of random tokens of length T, block 0's output scaled by (1 + eps * noise); prints
||g' - g|| / ||g|| beside the same computation repeated unperturbed (0 where the kernels are deterministic).

Why: Sessa's graphed first step at T = 2048 differed from eager by 1.2-1.6e-3 on the H200 (leases 17 and 18;
1e-7 at T = 600, and for the Transformer at both): does Sessa's recurrent solve carry a kernel's rounding-level
difference (flash attention's nondeterministic backward, ~1e-7) much further at 2048 rows than at 600?
    python scripts/grad_sensitivity.py --families sessa transformer --lengths 600 2048 [--eps 1e-6] [--bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time

import torch


def gradient(m, batch, params, noise=None, bf16=False):
    def scale(mod, inp, out):
        return out * (1 + noise) if noise is not None else out
    handle = m.model.blocks[0].register_forward_hook(scale)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = m.loss(m(batch), batch["labels"])
    finally:
        handle.remove()
    g = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if x is None else x).flatten().double() for p, x in zip(params, g)])


def measure(family: str, T: int, batch_size: int, eps: float, bf16: bool) -> dict:
    from sessa_bench.compose import compose_train
    from sessa_bench.lit_module import LitSequenceModel
    from sessa_bench.train import build_task, resolve_model

    exp = "table1_symbol_soup_long" if T > 1000 else "table1_symbol_soup"
    cfg = compose_train([f"experiment={exp}", f"model={family}", "task.n_train=64", "task.n_val=8", "task.n_test=8"])
    model_cfg, _ = resolve_model(cfg, build_task(cfg))
    torch.manual_seed(0)
    m = LitSequenceModel(model_cfg.to_dict(), dict(cfg.optim), 10)
    m.configure_model()
    gen = torch.Generator().manual_seed(1)
    batch = {"input_ids": torch.randint(1, 20, (batch_size, T), generator=gen),
             "lengths": torch.full((batch_size,), T), "labels": torch.randint(0, 20, (batch_size,), generator=gen)}
    params = [p for p in m.parameters() if p.requires_grad]
    t0 = time.time()
    g = gradient(m, batch, params, bf16=bf16)
    again = gradient(m, batch, params, bf16=bf16)
    noise = eps * torch.randn(batch_size, T, model_cfg.d_model, generator=gen)
    moved = gradient(m, batch, params, noise, bf16=bf16)

    def rel(a, b):
        return float((a - b).norm() / b.norm())
    return {"family": family, "T": T, "batch": batch_size, "eps": eps, "precision": "bf16 autocast" if bf16 else
            "float32", "repeat": rel(again, g), "perturbed": rel(moved, g), "seconds": time.time() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=["sessa", "transformer"])
    ap.add_argument("--lengths", nargs="+", type=int, default=[600, 2048])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--eps", type=float, default=1e-6)
    ap.add_argument("--bf16", action="store_true", help="under bf16 autocast, as the GPU runs train")
    a = ap.parse_args()
    os.environ.setdefault("SESSA_BENCH_CACHE", tempfile.mkdtemp(prefix="sessa-bench-sens-"))
    print(f"| family | T | batch | precision | eps | repeat | perturbed | perturbed / eps |")
    print("|---|---|---|---|---|---|---|---|")
    for fam in a.families:
        for T in a.lengths:
            r = measure(fam, T, a.batch, a.eps, a.bf16)
            print(f"| {fam} | {T} | {r['batch']} | {r['precision']} | {r['eps']:g} | {r['repeat']:.3g} | "
                  f"{r['perturbed']:.3g} | {r['perturbed'] / r['eps']:.3g} |", flush=True)


if __name__ == "__main__":
    main()
