"""Calibration sweep of the Diffuse MQAR defaults (conf/calibrate/diffuse_mqar.yaml): ensure the candidate
runs, then write the calibration table from their run folders.

    python -m sessa_bench.calibrate [--run [--jobs N] [--jobs-per-gpu K]] [--candidates c0 c3 ...] [--results-dir DIR]
                                    [--out results/calibration/diffuse_mqar.md] [hydra overrides...]

Each candidate is a few `task.*` overrides on top of the sweep's base (Table 1's Diffuse MQAR experiment with
the Transformer, seed 0: same budget, optimiser, steps and batch as the table); its run is named after the
candidate. With --run the missing runs are trained first (--jobs N: N at once, spread over the visible GPUs,
at most K per GPU with --jobs-per-gpu K).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from sessa_bench.compose import compose_file, compose_train
from sessa_bench.files import atomic_write_text
from sessa_bench.report.calibration import render, row
from sessa_bench.report.collect import collect

SWEEP = OmegaConf.to_container(compose_file("calibrate/diffuse_mqar"))
EXPERIMENT = SWEEP["experiment_name"]
CANDIDATES: dict[str, list[str]] = SWEEP["candidates"]


def run_overrides(name: str, extra: list[str]) -> list[str]:
    if name not in CANDIDATES:
        raise ValueError(f"candidate={name!r}: must be one of {sorted(CANDIDATES)}")
    return [*SWEEP["base"], f"experiment_name={EXPERIMENT}", f"run_name={name}", *CANDIDATES[name], *extra]


def build(candidates: list[str], overrides: list[str], run: bool = False, jobs: int | None = 1,
          out: str | Path = "results/calibration/diffuse_mqar.md", jobs_per_gpu: int | None = None) -> str:
    all_overrides = [run_overrides(c, overrides) for c in candidates]
    if run:
        from sessa_bench.runs import ensure
        ensure(all_overrides, jobs, jobs_per_gpu)  # jobs < 1 is an error there
    results_dir = Path(compose_train(all_overrides[0]).results_dir)
    found = {s["run_name"]: s for s in collect(results_dir, EXPERIMENT)}
    missing = [c for c in candidates if c not in found]
    if missing:
        raise FileNotFoundError(f"no finished calibration run for {missing} under {results_dir / EXPERIMENT}; "
                                f"add --run to train them")
    md = render([row(c, CANDIDATES[c], found[c]) for c in candidates])
    atomic_write_text(Path(out), md)
    return md


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Diffuse MQAR calibration sweep (Transformer, small budget)")
    ap.add_argument("--run", action="store_true", help="train the missing candidate runs first")
    ap.add_argument("--jobs", type=int, default=None, help="with --run: runs trained at once (default 1, or K "
                                                           "per visible GPU with --jobs-per-gpu K)")
    ap.add_argument("--jobs-per-gpu", type=int, default=None, help="with --run: at most this many runs per GPU")
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--results-dir", help="where the run folders are (default: the config's results_dir)")
    ap.add_argument("--out", default="results/calibration/diffuse_mqar.md")
    args, overrides = ap.parse_known_args(argv)
    if bad := [o for o in overrides if o.startswith("-")]:
        ap.error(f"unknown option(s) {bad}")
    if args.results_dir:
        overrides = [f"results_dir={args.results_dir}", *overrides]
    jobs = args.jobs if args.jobs is not None else (None if args.jobs_per_gpu else 1)
    print(build(args.candidates, overrides, args.run, jobs, args.out, args.jobs_per_gpu))


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    with user_errors("python -m sessa_bench.calibrate"):
        main()
