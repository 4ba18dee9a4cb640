"""Calibration sweep of the Diffuse MQAR defaults: which task setting leaves the `small` Transformer of
Table 1 clearly above chance and clearly below 100 % after Table 1's training (tasks/diffuse_mqar.py).

    python -m sessa_bench.calibrate [--run [--jobs N]] [--candidates c0 c3 ...] [--results-dir DIR]
                                    [--out results/calibration/diffuse_mqar.md] [hydra overrides...]

Each candidate is a few `task.*` overrides on top of `experiment=table1_diffuse_mqar model=transformer
seed=0` (same budget, optimiser, steps and batch as the table); its run is named `<candidate>` in the
experiment folder `calibrate_diffuse_mqar`. With --run the missing runs are trained first (--jobs N: N at
once, sessa_bench.concurrent_runs). The report gives test token accuracy overall, inside the training lags
and beyond them (the 4x extrapolation), next to chance, from run folders only.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from omegaconf import OmegaConf

from sessa_bench.compose import compose_train
from sessa_bench.report import collect
from sessa_bench.run_folder import atomic_write_text

EXPERIMENT = "calibrate_diffuse_mqar"
BASE = ["experiment=table1_diffuse_mqar", "model=transformer", "seed=0", f"experiment_name={EXPERIMENT}"]

# From the first defaults (c0) towards easier settings: fewer pairs to remember, shorter lags.
CANDIDATES = {
    "c0": [],                                                                    # 32 pairs, lags 32-511
    "c1": ["task.n_pairs=16", "task.n_queries=16"],                              # 16 pairs
    "c2": ["task.train_lag=[16,255]"],                                           # shorter lags
    "c3": ["task.n_pairs=16", "task.n_queries=16", "task.train_lag=[16,255]"],
    "c4": ["task.n_pairs=8", "task.n_queries=8", "task.train_lag=[16,255]"],
    "c5": ["task.n_pairs=16", "task.n_queries=16", "task.train_lag=[8,127]"],
}


def run_overrides(name: str, extra: list[str]) -> list[str]:
    if name not in CANDIDATES:
        raise ValueError(f"candidate={name!r}: must be one of {sorted(CANDIDATES)}")
    return [*BASE, f"run_name={name}", *CANDIDATES[name], *extra]


def row(name: str, summary: dict, results_dir: Path) -> dict:
    from sessa_bench.tasks.diffuse_mqar import DiffuseMQAR

    cfg = OmegaConf.to_container(OmegaConf.load(results_dir / EXPERIMENT / name / "config.yaml"))
    task = DiffuseMQAR.from_run_config(cfg["task"])
    final = summary["final"]
    inside = [final[f"test/acc/{s}"] for s in task.slice_names
              if s not in task.ood_slices and f"test/acc/{s}" in final]
    beyond = [final[f"test/acc/{s}"] for s in task.ood_slices if f"test/acc/{s}" in final]
    return {"candidate": name, "overrides": " ".join(CANDIDATES[name]) or "(first defaults)",
            "n_pairs": task.n_pairs, "train_lag": f"{task.train_lag[0]}-{task.train_lag[1]}",
            "test_lag": f"{task.test_lag[0]}-{task.test_lag[1]}", "lengths": f"{task.seq_len}/{task.test_seq_len}",
            "chance": task.chance, "test_acc": final["test/acc"],
            "inside": statistics.mean(inside) if inside else float("nan"),
            "beyond": statistics.mean(beyond) if beyond else float("nan"),
            "steps": summary["steps"], "lr": cfg["optim"]["lr"], "budget": summary["budget"],
            "device": summary["hardware"].get("gpu") or "CPU", "commit": summary["git_commit"][:12]}


def render(rows: list[dict]) -> str:
    lines = ["| candidate | overrides | pairs | train lags | test lags | train/test length | chance | test acc "
             "| acc, train lags | acc, beyond (up to 4x) | steps | lr |", "|" + "---|" * 12]
    for r in rows:
        lines.append(f"| {r['candidate']} | `{r['overrides']}` | {r['n_pairs']} | {r['train_lag']} | {r['test_lag']} "
                     f"| {r['lengths']} | {r['chance']:.4f} | {r['test_acc']:.4f} | {r['inside']:.4f} | "
                     f"{r['beyond']:.4f} | {r['steps']} | {r['lr']:g} |")
    meta = sorted({f"budget `{r['budget']}`, {r['device']}, commit {r['commit']}" for r in rows})
    return ("# Diffuse MQAR calibration (Transformer; Table 1's budget, optimiser and batch unless overridden; "
            "seed 0)\n\n"
            "Test token accuracy, bucketed by lag: inside the training lags and beyond them (test lags reach 4x "
            "the longest training lag). Means over the power-of-two lag buckets.\n\n" + "\n".join(lines)
            + f"\n\n_{'; '.join(meta)}. Built by `python -m sessa_bench.calibrate` from run folders only._\n")


def build(candidates: list[str], overrides: list[str], run: bool = False, jobs: int = 1,
          out: str | Path = "results/calibration/diffuse_mqar.md") -> str:
    all_overrides = [run_overrides(c, overrides) for c in candidates]
    if run:
        from sessa_bench.concurrent_runs import train_concurrently
        train_concurrently(all_overrides, jobs)  # jobs < 1 is an error there
    cfg = compose_train(all_overrides[0])
    results_dir = Path(cfg.results_dir)
    found = {s["run_name"]: s for s in collect(results_dir, EXPERIMENT)}
    missing = [c for c in candidates if c not in found]
    if missing:
        raise FileNotFoundError(f"no finished calibration run for {missing} under {results_dir / EXPERIMENT}; "
                                f"add --run to train them")
    md = render([row(c, found[c], results_dir) for c in candidates])
    atomic_write_text(Path(out), md)
    return md


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Diffuse MQAR calibration sweep (Transformer, small budget)")
    ap.add_argument("--run", action="store_true", help="train the missing candidate runs first")
    ap.add_argument("--jobs", type=int, default=1, help="with --run: runs trained at once")
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--results-dir", help="where the run folders are (default: the config's results_dir)")
    ap.add_argument("--out", default="results/calibration/diffuse_mqar.md")
    args, overrides = ap.parse_known_args(argv)
    if bad := [o for o in overrides if o.startswith("-")]:
        ap.error(f"unknown option(s) {bad}")
    if args.results_dir:
        overrides = [f"results_dir={args.results_dir}", *overrides]
    print(build(args.candidates, overrides, args.run, args.jobs, args.out))


if __name__ == "__main__":
    main()
