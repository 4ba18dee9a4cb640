"""`make table1|table2|ablation|tables`: ensure the runs of a paper table, then write it from run folders.

    python -m sessa_bench.tables table1|table2|ablation|all [--run [--jobs N] [--jobs-per-gpu K]] [--seeds 0 1]
                                 [--results-dir DIR] [--out-dir results] [hydra overrides...]

With --run, every missing (family, seed) run of the table's experiments is trained first
(`sessa_bench.runs.ensure`: in this process, or in N worker processes with --jobs N, spread round robin over
the visible GPUs, at most K per GPU with --jobs-per-gpu K; --jobs-per-gpu alone: K on every GPU). Then
results/<table>.md and .csv and the plots are written from the finished run folders alone
(`sessa_bench.report.paper`); without --run nothing trains.

Overrides apply to every experiment of the table; `<experiment>:<override>` applies to one only, e.g.
`table1_diffuse_mqar:task.train_lag=[8,31]` (SymbolSoup has no such key). Only runs whose task, budget and
seed match the composed config are tabulated, so `task=bible` (the offline stand-in for SimpleStories)
builds Table 2 from the *-bible-* runs, and the table says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sessa_bench.compose import CONF_DIR
from sessa_bench.report.paper import TABLES, Table, experiments, write


def split_overrides(overrides: list[str], names: list[str]) -> dict[str, list[str]]:
    """Overrides per experiment: plain ones go to all, `<experiment>:<override>` to that one only."""
    known = {p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")}
    out: dict[str, list[str]] = {n: [] for n in names}
    for o in overrides:
        head, sep, rest = o.partition(":")
        if sep and "=" not in head:  # a colon before any '=': a scoped override
            if head not in known:
                raise ValueError(f"override {o!r}: {head!r} is not an experiment; scoped overrides are "
                                 f"written <experiment>:<override> with experiment one of {sorted(known)}")
            if head in out:  # scoped to an experiment of another table: not for this one
                out[head].append(rest)
        else:
            for n in names:
                out[n].append(o)
    return out


def table_runs(table: Table, seeds: list[int], scoped: dict[str, list[str]]) -> list[list[str]]:
    """The overrides of every run of a table, seed by seed with the families of one seed side by side
    (so concurrent workers train different families)."""
    return [[f"experiment={e}", f"model={f}", f"seed={s}", *scoped[e]]
            for e in experiments(table) for s in seeds for f in table.families]


def build(name: str, seeds: list[int] = (0, 1), overrides: list[str] = (), run: bool = False,
          out_dir: str | Path = "results", plots: bool = True, jobs: int | None = 1,
          jobs_per_gpu: int | None = None) -> dict[str, Path]:
    """Run what is missing (run=True), then write <out_dir>/<name>.md and .csv (and plots); returns paths."""
    if name not in TABLES:
        raise ValueError(f"table={name!r}: must be one of {sorted(TABLES)} or 'all'")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    table = TABLES[name]
    scoped = split_overrides(list(overrides), experiments(table))
    if run:
        from sessa_bench.runs import ensure  # the trainer is imported only when something may train
        ensure(table_runs(table, seeds, scoped), jobs, jobs_per_gpu)
    return write(table, seeds, scoped, out_dir, plots)


def _jobs(args) -> int | None:
    """--jobs, else 1, else (with --jobs-per-gpu alone) None: K per visible GPU."""
    return args.jobs if args.jobs is not None else (None if args.jobs_per_gpu else 1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="rebuild the paper's tables from run folders (optionally run "
                                             "what is missing first)")
    ap.add_argument("table", choices=[*TABLES, "all"])
    ap.add_argument("--run", action="store_true", help="train missing runs first (skips finished ones)")
    ap.add_argument("--jobs", type=int, default=None,
                    help="with --run: train up to this many runs at once, each in its own process, spread over "
                         "the visible GPUs (default 1, or K per GPU with --jobs-per-gpu)")
    ap.add_argument("--jobs-per-gpu", type=int, default=None,
                    help="with --run: at most this many runs share one GPU")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--results-dir", help="where the run folders are (default: the config's results_dir)")
    ap.add_argument("--out-dir", default="results", help="where <table>.md/.csv and plots go")
    args, overrides = ap.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        ap.error(f"unknown option(s) {bad}")
    if args.results_dir:
        overrides = [f"results_dir={args.results_dir}", *overrides]
    for name in (list(TABLES) if args.table == "all" else [args.table]):
        paths = build(name, args.seeds, overrides, args.run, args.out_dir, jobs=_jobs(args),
                      jobs_per_gpu=args.jobs_per_gpu)
        print(paths["md"].read_text())


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    with user_errors("python -m sessa_bench.tables"):
        main()
