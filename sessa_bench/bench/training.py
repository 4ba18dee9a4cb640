"""Training throughput: tokens/s and model FLOPs utilisation per family at one budget, with the
first steps (compilation, Triton autotuning) excluded."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from sessa_bench.bench.timing import record_oom
from sessa_bench.budget import describe, load_budget, load_family, solve
from sessa_bench.models.backbone import Backbone

# Dense bf16 tensor-core peak (no sparsity), for MFU.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def bench_training(device, families, budget_name: str, vocab: int, seq_len: int, batch: int,
                   warmup: int = 5, steps: int = 10, log=print) -> list[dict]:
    budget = load_budget(budget_name)
    peak = peak_flops(device)
    rows = []
    for fam in families:
        cfg = solve(load_family(fam), budget, vocab)
        cost = describe(cfg, seq_len, budget.target_params)
        row = {"family": fam, "budget": budget_name, "params": cost["params_total"], "layers": cfg.n_layers,
               "d_model": cfg.d_model, "seq_len": seq_len, "batch": batch}
        with record_oom(row, "tokens_per_s", "mfu"):
            torch.manual_seed(0)
            model = Backbone(cfg).to(device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
            idx = torch.randint(0, vocab, (batch, seq_len + 1), device=device)
            amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

            def step():
                with amp:
                    logits = model(idx[:, :-1])
                loss = F.cross_entropy(logits.float().flatten(0, 1), idx[:, 1:].flatten())
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            for _ in range(warmup):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            tps = batch * seq_len * steps / (time.perf_counter() - t0)
            row.update(tokens_per_s=tps, train_flops_per_token=cost["train_flops_per_token"],
                       mfu=tps * cost["train_flops_per_token"] / peak if peak else float("nan"),
                       backends=",".join(sorted({str(m.backend_used()) for m in model.mixers})))
            del model, opt
        rows.append(row)
        log(f"  train {fam:12s} {row['tokens_per_s']} tok/s  MFU {row['mfu']}")
    return rows
