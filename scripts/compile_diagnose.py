"""Is a family's compiled graph right on this GPU, and if not, which part of torch.compile is wrong?

At Table 1's shapes, bf16 autocast, one real SymbolSoup batch, the first-batch check of every compiled run
(sessa_bench/compile_check.py), with bf16's own noise on the batch (eager bf16 against eager float32, the
check's third pass) and the tolerance it allows: a graph within twice that noise of eager is as right as
eager bf16 itself. Every family: the compiled blocks, as compile=true does. The Transformer also gets the
variants that found why its compiled graph was wrong on the H200 (results/bench/h200-run9-session.log): the
compile layout (whole model, as in that run, or each block), SDPA at head dim 66 as it was (unpadded) or
padded to 72 by attention_sdpa (now), and the backend (inductor; aot_eager: Dynamo and AOT autograd without
Inductor's code generation). Writes a markdown table to --out and prints it.
    python scripts/compile_diagnose.py --out compile_diagnose.md [--family transformer] [--batch 16]
(--device cpu with overrides such as budget=tiny: a dry run of the script itself on CPU.)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sessa_bench import compile_check  # noqa: E402
from sessa_bench.compose import compose_train  # noqa: E402
from sessa_bench.data import TaskDataModule  # noqa: E402
from sessa_bench.lit_module import LitSequenceModel  # noqa: E402
from sessa_bench.models import attention  # noqa: E402
from sessa_bench.train import build_task, resolve_model  # noqa: E402

PADDED = attention.attention_sdpa


def unpadded_sdpa(q, k, v):
    """attention_sdpa before 45be4cd: the head dim left as it is (66), the compiler's choice of kernel."""
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=1.0 / math.sqrt(q.shape[-1])
                                          ).transpose(1, 2)


COMPILE_TRUE = ("blocks, padded, inductor (compile=true now)", "blocks", PADDED, "inductor")
SDPA_VARIANTS = [  # (name, layout, sdpa, backend): the Transformer only (head dim 66)
    ("whole, unpadded, inductor (the wrong run's)", "whole", unpadded_sdpa, "inductor"),
    ("whole, unpadded, aot_eager", "whole", unpadded_sdpa, "aot_eager"),
    ("whole, padded, inductor", "whole", PADDED, "inductor"),
    ("blocks, unpadded, inductor", "blocks", unpadded_sdpa, "inductor"),
]


def batch_and_config(family: str, batch_size: int, cache: str, device: str, overrides: list[str]):
    import os
    os.environ["SESSA_BENCH_CACHE"] = cache
    cfg = compose_train(["experiment=table1_symbol_soup", f"model={family}", "task.n_train=64", "task.n_val=8",
                         "task.n_test=8", *overrides])
    task = build_task(cfg)
    model_cfg, _ = resolve_model(cfg, task)
    dm = TaskDataModule(task, batch_size, batch_size, seed=0, fixed_length=True)
    dm.trainer = None
    batch = {k: v.to(device) for k, v in next(iter(dm.train_dataloader())).items() if torch.is_tensor(v)}
    return cfg, model_cfg, batch


def one(cfg, model_cfg, batch, layout: str, sdpa, backend: str, device: str) -> dict:
    torch._dynamo.reset()
    attention.attention_sdpa = sdpa
    try:
        torch.manual_seed(0)
        lit = LitSequenceModel(model_cfg.to_dict(), dict(cfg.optim), 10, compile=False).to(device)
        if layout == "whole":
            lit.model = torch.compile(lit.model, backend=backend)
        else:
            lit.model.compile_blocks(backend=backend)
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16):
            r = compile_check.compare(lit, batch, lit.loss)
        r["seconds"] = time.perf_counter() - t0
        try:
            compile_check.check(r)
            r["verdict"] = "agrees"
        except compile_check.CompileMismatch:
            r["verdict"] = "DISAGREES"
        return r
    finally:
        attention.attention_sdpa = PADDED


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="compile_diagnose.md")
    ap.add_argument("--family", default="transformer")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--cache", default="/tmp/compile_diagnose_cache")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the experiment (a CPU dry run: smaller)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("compile_diagnose: needs a CUDA device (the fault is in what the GPU compiles)", file=sys.stderr)
        return 2
    cfg, model_cfg, batch = batch_and_config(args.family, args.batch, args.cache, args.device, args.overrides)
    lines = [f"# compile diagnosis: {args.family} at Table 1's shapes on "
             f"{torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}",
             "", f"torch {torch.__version__}; bf16 autocast; batch {args.batch} x {batch['input_ids'].shape[1]} "
             f"tokens of SymbolSoup{'; overrides ' + ' '.join(args.overrides) if args.overrides else ''}; "
             f"tolerances: loss {compile_check.LOSS_RTOL}, gradients {compile_check.GRAD_RTOL}, or "
             f"{compile_check.NOISE_FACTOR:g}x bf16's noise where larger",
             "", "`bf16 noise`: eager bf16's gradients against eager float32's (relative); `allowed`: the "
             "gradient tolerance of the check for this batch.", "",
             "| variant | loss eager | loss compiled | grad rel diff | grad cosine | bf16 noise | allowed | verdict "
             "| s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, layout, sdpa, backend in (SDPA_VARIANTS if args.family == "transformer" else []) + [COMPILE_TRUE]:
        try:
            r = one(cfg, model_cfg, batch, layout, sdpa, backend, args.device)
            row = (f"| {name} | {r['loss_eager']:.5f} | {r['loss_compiled']:.5f} | {r['grad_rel_diff']:.3g} | "
                   f"{r['grad_cosine']:.4f} | {r['grad_noise']:.3g} | {compile_check.tolerances(r)[1]:.3g} | "
                   f"{r['verdict']} | {r['seconds']:.0f} |")
        except Exception as e:  # a variant that fails to compile is a finding too
            row = f"| {name} | | | | | | | error: {type(e).__name__}: {str(e).splitlines()[0][:120]} | |"
        print(row, flush=True)
        lines.append(row)
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
