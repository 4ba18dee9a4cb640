"""One run on 2 GPUs against 1 GPU (issue 15), in one command of ~5 minutes on a 2-GPU machine:

    PYTHONPATH=. python3 scripts/ddp_check.py --out $OUT          # after: source .wheelhouse/bootstrap.sh .wheelhouse

Trains the same run (experiment=table1_symbol_soup: `small` on SymbolSoup, bf16) on one GPU (trainer=gpu) and
on two (trainer=ddp trainer.devices=2) with the same global batch, then evaluates the DDP run's checkpoint on
one GPU with `sessa-bench eval --split val`. Checks: DDP tokens/s >= --min-speedup x one GPU's; the DDP run's
final val metrics (each GPU evaluates its shard in bf16, counts summed) == the single-GPU evaluation of its
checkpoint (which runs in float32: accuracies to --acc-tol, losses to 1 % relative); the two loss curves agree
to --loss-tol. Writes ddp_check.md to --out; exits 1 when a check fails. `--cpu-smoke` runs the same steps on
2 CPU processes at a toy size with the speed check off (tests/test_gpu_busy.py), so a typo cannot waste a lease.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sessa_bench.run_folder import RunFolder  # noqa: E402


def train(out: Path, name: str, args: list[str], extra: list[str]) -> RunFolder:
    cmd = [sys.executable, "-m", "sessa_bench.train", "experiment=table1_symbol_soup", f"results_dir={out}/runs",
           f"experiment_name={name}", "logger=none", "trainer.enable_progress_bar=false", *args, *extra]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return next(RunFolder(p.parent) for p in (out / "runs" / name).glob("*/summary.json"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--model", default="sessa")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=64, help="the global batch (the same for both runs)")
    ap.add_argument("--min-speedup", type=float, default=1.8)
    ap.add_argument("--acc-tol", type=float, default=0.005, help="bf16 run vs float32 eval: max |acc difference|")
    ap.add_argument("--loss-tol", type=float, default=0.05, help="max |mean train loss difference| (bf16 noise)")
    ap.add_argument("--cpu-smoke", action="store_true", help=argparse.SUPPRESS)
    args, extra = ap.parse_known_args(argv)
    gpu1, gpu2 = ["trainer=gpu"], ["trainer=ddp", "trainer.devices=2"]
    if args.cpu_smoke:
        gpu1, gpu2 = ["trainer=cpu"], ["trainer=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
        extra = ["budget=tiny", "task.min_len=41", "task.max_len=61", "task.n_train=64", "task.n_val=21",
                 "task.n_test=8", "trainer.log_every_n_steps=1", "callbacks.throughput.warmup=0", *extra]
        args.min_speedup, args.acc_tol = 0.0, 0.0
    common = [f"model={args.model}", f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}",
              f"callbacks.checkpoint.every_n_steps={args.steps}", f"data.batch_size={args.batch_size}",
              "callbacks.throughput.warmup=20", "probe=false", *extra]
    one = train(args.out, "gpu1", [*gpu1, *common], [])
    two = train(args.out, "gpu2", [*gpu2, *common], [])
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]}
    subprocess.run([sys.executable, "-m", "sessa_bench.evaluate", str(two.path), "--split", "val"], cwd=ROOT,
                   env=env, check=True)
    s1, s2 = one.read_summary(), two.read_summary()
    ev = json.loads((two.path / "eval_val.json").read_text())
    speedup = s2["throughput_tokens_per_s"] / s1["throughput_tokens_per_s"]
    l1 = [r["train/loss"] for r in one.read_metrics() if "train/loss" in r]
    l2 = [r["train/loss"] for r in two.read_metrics() if "train/loss" in r]
    dloss = abs(sum(l1) / len(l1) - sum(l2) / len(l2))
    rows = [("world size", s1["world_size"], s2["world_size"], s2["world_size"] == 2),
            ("tokens/s", f"{s1['throughput_tokens_per_s']:,.0f}", f"{s2['throughput_tokens_per_s']:,.0f}",
             speedup >= args.min_speedup),
            ("speed-up", "", f"{speedup:.2f}x", speedup >= args.min_speedup),
            ("mean train loss", f"{sum(l1) / len(l1):.4f}", f"{sum(l2) / len(l2):.4f}", dloss <= args.loss_tol)]
    for k in sorted(k for k in s2["final"] if k.startswith("val/")):
        diff = abs(ev[k] - s2["final"][k])
        same = diff <= args.acc_tol if "/acc" in k else diff <= 1e-2 * abs(ev[k])
        rows.append((f"{k}: DDP run | eval of its ckpt", f"{ev[k]:.6f}", f"{s2['final'][k]:.6f}", same))
    md = ["| check | 1 GPU (or eval) | 2 GPUs (DDP) | ok |", "|---|---|---|---|",
          *(f"| {a} | {b} | {c} | {'yes' if ok else 'NO'} |" for a, b, c, ok in rows)]
    text = "\n".join(md) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ddp_check.md").write_text(text)
    print(text)
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
