"""How much do several small runs sharing one GPU train together, with and without CUDA MPS? One GPU call:

    source .wheelhouse/bootstrap.sh .wheelhouse; python3 scripts/mps_check.py --out $OUT/mps [--runs 1 2 3]
        [--families sessa] [--steps 150]

The tables put several ~20M-parameter runs on one GPU (`--jobs-per-gpu`): their eager steps are launch-bound
(one run alone trained 212k tokens/s on an H200, seven together 330k: results/bench/README.md), and without
MPS the GPU time-slices between the processes, so the kernels of different runs never overlap. With the MPS
daemon they can. The table runs train one per GPU since they replay CUDA graphs (325-420k tokens/s alone, at
3-7 % MFU: results/runs/table1_symbol_soup); whether two or three graphed runs on a GPU train more together
was never measured. For each count N of `--runs`, this trains N runs of Table 1's SymbolSoup shapes at once
(`--families` round robin, one family for a clean sharing curve; distinct seeds, `--steps` steps each, no
probe, graphed as the table runs are) without MPS, then every N > 1 again with the daemon started for this
check alone (pipe and log folders under /tmp; stopped at the end, whatever happens). It changes no setting
of the GPU (compute mode, clocks): MPS is a user process. Where `nvidia-cuda-mps-control` is missing, or its
daemon does not start, the second trial is skipped and the table says why.

Per trial: the runs' summed training tokens/s (each run's own Throughput average, warm-up excluded: the
rate while they overlap), that sum over the first trial's (with `--runs 1 ...` and one family: what sharing
buys), and the trial's wall time from the first start to the last finish (start-up, graph capture,
evaluation and the slowest family included). Writes <out>/mps_check.md and prints it.
On CPU: `--cpu` trains tiny runs on the CPU and skips MPS (a dry run of the script itself).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("sessa", "transformer", "mamba2")
CONTROL = "nvidia-cuda-mps-control"


def trial(label: str, runs: int, steps: int, work: Path, extra: list[str], env: dict,
          families: tuple[str, ...] = FAMILIES) -> dict:
    """Train `runs` runs at once; their summed tokens/s, wall time and exit codes."""
    root = work / "".join(c if c.isalnum() else "_" for c in label)  # a Hydra value: no spaces or commas
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    t0 = time.time()
    procs = []
    for i in range(runs):
        cmd = [sys.executable, "-m", "sessa_bench.train", "experiment=table1_symbol_soup",
               f"model={families[i % len(families)]}", f"seed={i}", f"trainer.max_steps={steps}",
               f"trainer.val_check_interval={steps}", f"callbacks.checkpoint.every_n_steps={steps}",
               "probe=false", "logger=none", "trainer.enable_progress_bar=false", f"results_dir={root}",
               "experiment_name=mps_check", *extra]
        log = open(root / f"run{i}.log", "w")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT), log))
    codes = []
    for p, log in procs:
        codes.append(p.wait())
        log.close()
    wall = time.time() - t0
    tps = {}
    for s in sorted((root / "mps_check").glob("*/summary.json")):
        summary = json.loads(s.read_text())
        tps[s.parent.name] = summary.get("throughput_tokens_per_s") or 0.0
    return {"label": label, "runs": runs, "finished": len(tps), "codes": codes, "wall_s": wall,
            "tokens_per_s": sum(tps.values()), "per_run": tps}


def start_mps(env: dict) -> str | None:
    """Start the MPS daemon for this check; None when it runs, else why not."""
    if shutil.which(CONTROL) is None:
        return f"{CONTROL} not found"
    for d in (env["CUDA_MPS_PIPE_DIRECTORY"], env["CUDA_MPS_LOG_DIRECTORY"]):
        Path(d).mkdir(parents=True, exist_ok=True)
    r = subprocess.run([CONTROL, "-d"], env=env, capture_output=True, text=True)
    return None if r.returncode == 0 else f"{CONTROL} -d exited {r.returncode}: {(r.stderr or r.stdout).strip()}"


def stop_mps(env: dict) -> None:
    subprocess.run([CONTROL], input="quit\n", env=env, capture_output=True, text=True, timeout=60)


def table(rows: list[dict], skipped: str | None, steps: int) -> str:
    lines = ["# MPS check: several small runs on one GPU, without and with CUDA MPS", "",
             f"Table 1's SymbolSoup `small` shapes (batch 32, up to 599 tokens), {steps} steps per run, the "
             f"families round robin; tokens/s: the runs' summed Throughput averages (warm-up excluded); `x first`: "
             f"that sum over the first trial's; wall: first start to last finish (start-up and evaluation "
             f"included). Built by scripts/mps_check.py.", "",
             "| trial | runs | finished | summed tokens/s | x first | wall s | per run tokens/s |",
             "|---|---|---|---|---|---|---|"]
    first = rows[0]["tokens_per_s"] if rows else 0.0
    for r in rows:
        per = ", ".join(f"{k.split('-')[0]} {v:,.0f}" for k, v in r["per_run"].items())
        ratio = f"{r['tokens_per_s'] / first:.2f}" if first else "n/a"
        lines.append(f"| {r['label']} | {r['runs']} | {r['finished']} | {r['tokens_per_s']:,.0f} | {ratio} | "
                     f"{r['wall_s']:.0f} | {per} |")
    plain = {r["runs"]: r for r in rows if r["label"].startswith("no MPS")}
    for r in rows:  # MPS against no MPS at the same count
        base = plain.get(r["runs"])
        if r["label"].startswith("MPS") and base is not None and base["tokens_per_s"]:
            lines += ["", f"{r['runs']} runs, MPS / no MPS, summed tokens/s: "
                          f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x; wall: {r['wall_s'] / base['wall_s']:.2f}x"]
    if skipped:
        lines += ["", f"MPS trials skipped: {skipped}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for mps_check.md")
    ap.add_argument("--runs", type=int, nargs="+", default=[7],
                    help="runs at once, one trial per count (default 7, as PER_GPU=7; e.g. 1 2 3)")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES,
                    help="the runs' families, round robin (default all three; one for a clean sharing curve)")
    ap.add_argument("--steps", type=int, default=150, help="steps per run")
    ap.add_argument("--work", default="/tmp/mps_check", help="where the runs' folders go (deleted first)")
    ap.add_argument("--cpu", action="store_true", help="dry run on the CPU: tiny runs, no MPS")
    args = ap.parse_args(argv)
    if min(args.runs) < 1 or args.steps < 1:
        ap.error(f"--runs {' '.join(map(str, args.runs))} --steps {args.steps}: all must be >= 1")
    out, work, families = Path(args.out), Path(args.work), tuple(args.families)
    extra = ["trainer=cpu", "budget=tiny", "task.n_train=64", "task.n_val=16", "task.n_test=16",
             "data.batch_size=4"] if args.cpu else []
    env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": "/tmp/mps-check-pipe",
           "CUDA_MPS_LOG_DIRECTORY": "/tmp/mps-check-log"}
    base = {k: v for k, v in env.items() if not k.startswith("CUDA_MPS_")}  # no MPS client
    # the task's data once, into the task cache, so no trial pays for (or races on) generating it
    subprocess.run([sys.executable, "-m", "sessa_bench.runs", "--build-data", "experiment=table1_symbol_soup",
                    *extra], env=base, cwd=ROOT, check=True)
    rows = [trial(f"no MPS, {n}", n, args.steps, work, extra, base, families) for n in args.runs]
    shared = [n for n in args.runs if n > 1]
    skipped = ("--cpu (a dry run)" if args.cpu else "no count above 1 in --runs" if not shared
               else start_mps(env))
    if skipped is None:
        try:
            rows += [trial(f"MPS, {n}", n, args.steps, work, extra, env, families) for n in shared]
        finally:
            stop_mps(env)
    text = table(rows, skipped, args.steps)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mps_check.md").write_text(text)
    print(text, flush=True)
    return 0 if all(c == 0 for r in rows for c in r["codes"]) else 1


if __name__ == "__main__":
    sys.exit(main())
