"""A/B of how the training loop executes: one `sessa-bench train` run (same seed, data and steps) eager and
with cuda_graphs=true (or compile=true), the modes of a family side by side on the visible GPUs (one run per
GPU at a time, so the rates compare), and a table: the loop's tokens/s (its Throughput callback), the ratio to
eager, the largest train-loss difference to eager over the logged steps, the final validation metric and the
first-batch check (compile_check.py). Writes <out>/execution_ab.md and keeps the run folders under <out>/runs.
    python scripts/execution_ab.py --out DIR [--families transformer sessa mamba2] [--modes eager cuda_graphs]
                                   [--steps 200] [--experiment table1_symbol_soup] [hydra overrides...]
--report-only writes the table from the run folders already in DIR; --repeat-of DIR2 (an earlier A/B of the
same settings) adds the control: each run's train-loss difference to the same mode's run in DIR2, i.e. what
two runs of one mode differ by (kernels with atomics are not bitwise reproducible).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sessa_bench.bench.harness_loop import MODES  # noqa: E402  (the overrides of each execution mode)


def command(args, family: str, mode: str) -> list[str]:
    s = args.steps
    return [sys.executable, "-m", "sessa_bench.train", f"experiment={args.experiment}", f"model={family}",
            f"trainer.max_steps={s}", f"trainer.val_check_interval={s}", f"callbacks.checkpoint.every_n_steps={s}",
            "trainer.log_every_n_steps=10", "trainer.enable_progress_bar=false", "probe=false", "logger=none",
            f"results_dir={args.out}/runs", "experiment_name=execution_ab", f"run_name={family}-{mode}",
            *MODES[mode], *args.overrides]


def gpus() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        out = []
    return out or [""]


def losses(folder: Path) -> dict[int, float]:
    rows = [json.loads(ln) for ln in (folder / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def folder_of(out: Path, family: str, mode: str) -> Path:
    return out / "runs" / "execution_ab" / f"{family}-{mode}"


def max_diff(a: dict[int, float], b: dict[int, float]) -> str:
    common = sorted(set(a) & set(b))
    return f"{max(abs(a[k] - b[k]) for k in common):.4f} over {len(common)} steps" if common else ""


def row(out: Path, family: str, mode: str, wall: float | None, rc: int, eager: dict | None,
        repeat: Path | None = None) -> str:
    folder = folder_of(out, family, mode)
    try:
        s = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        log_file = out / f"{family}-{mode}.log"
        log = log_file.read_text().strip().splitlines() if log_file.exists() else []
        return (f"| {family} | {mode} | failed (exit {rc}): {log[-1][:150] if log else ''} | | | | | "
                f"{'' if repeat is None else '| '}{'' if wall is None else f'{wall:.0f}'} |")
    tps, val = s.get("throughput_tokens_per_s"), s["final"].get("val/acc")
    ratio = f"{tps / eager['tps']:.2f}" if eager and eager.get("tps") and tps else ""
    diff = max_diff(losses(folder), eager["losses"]) if eager and mode != "eager" else ""
    again = ""
    if repeat is not None:
        other = folder_of(repeat, family, mode)
        again = f"{max_diff(losses(folder), losses(other)) if (other / 'metrics.jsonl').exists() else ''} | "
    check = s.get("compile_check")
    check = f"loss {check['loss_compiled']:.4f}/{check['loss_eager']:.4f}, grad {check['grad_rel_diff']:.2g}" \
        if check else ""
    return (f"| {family} | {mode} | {tps or 0:,.0f} | {ratio} | {diff} | {again}"
            f"{'' if val is None else f'{val:.4f}'} | {check} | {'' if wall is None else f'{wall:.0f}'} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--families", nargs="+", default=["transformer", "sessa", "mamba2"])
    ap.add_argument("--modes", nargs="+", default=["eager", "cuda_graphs"], choices=sorted(MODES))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--experiment", default="table1_symbol_soup")
    ap.add_argument("--report-only", action="store_true", help="no runs: the table from the folders in --out")
    ap.add_argument("--repeat-of", type=Path, help="an earlier A/B's --out: the run-to-run control column")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    devices = gpus()
    jobs = [] if args.report_only else [(f, m) for f in args.families for m in args.modes]
    done: dict[tuple, tuple] = {}
    running: dict[str, tuple] = {}  # device -> (job, process, start)
    while jobs or running:
        for dev in devices:
            if dev not in running and jobs:
                f, m = jobs.pop(0)
                env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": dev} if dev else {})}
                log = open(out / f"{f}-{m}.log", "w")
                running[dev] = ((f, m), subprocess.Popen(command(args, f, m), env=env, stdout=log,
                                                         stderr=subprocess.STDOUT), time.time())
        time.sleep(2)
        for dev, (job, p, t0) in list(running.items()):
            if p.poll() is not None:
                done[job] = (time.time() - t0, p.returncode)
                del running[dev]
                print(f"{job[0]} {job[1]}: exit {p.returncode} after {time.time() - t0:.0f} s", flush=True)
    lines = [f"# Execution A/B: {args.experiment}, {args.steps} steps, {', '.join(args.modes)}", "",
             f"Overrides: {' '.join(args.overrides) or '(none)'}; "
             + ("written from the run folders of an earlier A/B (--report-only: no wall times); " if args.report_only
                else f"one run per GPU at a time ({len(devices)} device(s)); ")
             + "`tok/s`: the run's Throughput callback; `vs eager`: the train loss's largest difference to the "
               "eager run's over the logged steps"
             + (f"; `vs repeat`: the same to the same mode's run in {args.repeat_of}" if args.repeat_of else "")
             + ".", "",
             "| family | mode | tok/s | x eager | train loss vs eager | " + ("vs repeat | " if args.repeat_of else "")
             + "val/acc | first-batch check | wall s |",
             "|---|---|---|---|---|---|---|---|" + ("---|" if args.repeat_of else "")]
    for f in args.families:
        ref_folder = folder_of(out, f, "eager")
        eager = None
        if (ref_folder / "summary.json").exists():
            eager = {"tps": json.loads((ref_folder / "summary.json").read_text()).get("throughput_tokens_per_s"),
                     "losses": losses(ref_folder)}
        for m in args.modes:
            wall, rc = done.get((f, m), (None, -1))
            lines.append(row(out, f, m, wall, rc, eager, args.repeat_of))
    text = "\n".join(lines) + "\n"
    (out / "execution_ab.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
