"""`make table1|table2|ablation|tables`: ensure the runs of a paper table, then write it from run folders.

    python -m sessa_bench.tables table1|table2|ablation|all [--run [--jobs N] [--jobs-per-gpu K]
                                 [--max-steps-cap S] [--experiments E ...]] [--seeds 0 1] [--results-dir DIR]
                                 [--out-dir results] [hydra overrides...]

With --run, the table's protocol (`sessa_bench/report/protocol.py`) trains what is missing, every run through
`sessa_bench.runs.ensure` (in this process, or in N worker processes with --jobs N, spread round robin over
the visible GPUs, at most K per GPU with --jobs-per-gpu K; --jobs-per-gpu alone: K on every GPU):
1. the sweep: seed 0 of every family at every learning rate of the experiment's `sweep.lr` grid (run names
   carry the rate); the grid grows past an edge that wins (x3 or /3, at most twice), then each family's
   rate is the one with the best validation metric;
2. the other seeds at the chosen rate (seed 0 is the sweep's run);
3. convergence: while a family's runs at the chosen rate have not converged, all of them are extended to
   twice their steps (resumed from their last checkpoint; constant schedule), up to --max-steps-cap
   (default 4x the experiment's trainer.max_steps).
Every step reads its state from the run folders, so a rerun (or a rerun after a kill) continues where the
last one stopped. Then results/<table>.md and .csv and the plots are written from the run folders alone
(`sessa_bench.report.paper`); without --run nothing trains.

Overrides apply to every experiment of the table; `<experiment>:<override>` applies to one only, e.g.
`table1_diffuse_mqar:task.train_lag=[8,31]` (SymbolSoup has no such key). Only runs whose task, budget and
seed match the composed config are tabulated, so `task=bible` (the offline stand-in for SimpleStories)
builds Table 2 from the *-bible-* runs, and the table says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sessa_bench.compose import CONF_DIR, compose_train
from sessa_bench.report.paper import TABLES, Table, experiments, write
from sessa_bench.report.protocol import Cell, cell


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


def protocol(table: Table, seeds: list[int], scoped: dict[str, list[str]], jobs: int | None = 1,
             max_steps_cap: int | None = None, only: list[str] | None = None, **kw) -> None:
    """Train the table's runs by the protocol (module docstring), for the experiments in `only` (default:
    all of the table's); `kw` goes on to sessa_bench.runs.ensure."""
    from sessa_bench.runs import ensure  # the trainer is imported only when something may train

    names = [e for e in experiments(table) if only is None or e in only]
    cells = [cell(e, f, scoped[e], table.curve_metric) for e in names for f in table.families]
    cells = list({(c.experiment, c.family): c for c in cells}.values())
    # 1. the sweep, round by round (a round's grid extensions are known only once it has finished)
    while todo := [c.run(x, 0).overrides for c in cells for x in c.selection()[3]]:
        print(f"sweep: {len(todo)} runs", flush=True)
        ensure(todo, jobs, **kw)
    # 2. + 3. the seeds at the chosen rate, then extensions until converged or capped
    while todo := [ov for c in cells for ov in seed_runs(c, seeds, max_steps_cap)]:
        print(f"seeds and extensions: {len(todo)} runs", flush=True)
        ensure(todo, jobs, **kw)


def seed_runs(c: Cell, seeds: list[int], max_steps_cap: int | None) -> list[list[str]]:
    """Overrides of the runs of one cell still to train: missing seeds at its current step count, or, when
    all are finished and one has not converged, all of them at twice the steps (reopened for resumption)."""
    lr = c.selection()[0]
    runs = [c.run(lr, s) for s in seeds]
    steps = max(r.steps for r in runs)
    runs = [c.run(lr, s, steps) for s in seeds]  # every seed trains as long as the longest
    missing = [r.overrides for r in runs if r.summary is None]
    if missing:
        return missing
    cap = max_steps_cap if max_steps_cap is not None else 4 * c.steps
    if all(c.converged(r)[0] for r in runs) or 2 * steps > cap or not c.constant:
        return []
    longer = [c.run(lr, s, 2 * steps) for s in seeds]
    for r in longer:  # finished runs become unfinished ones that resume from their last step
        r.folder.reopen(compose_train(r.overrides))  # composed last: its ${hydra:...} resolve to its own
    return [r.overrides for r in longer]


def build(name: str, seeds: list[int] = (0, 1), overrides: list[str] = (), run: bool = False,
          out_dir: str | Path = "results", plots: bool = True, jobs: int | None = 1,
          jobs_per_gpu: int | None = None, max_steps_cap: int | None = None,
          only: list[str] | None = None) -> dict[str, Path]:
    """Run the protocol (run=True), then write <out_dir>/<name>.md and .csv (and plots); returns paths."""
    if name not in TABLES:
        raise ValueError(f"table={name!r}: must be one of {sorted(TABLES)} or 'all'")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    if max_steps_cap is not None and max_steps_cap < 1:
        raise ValueError(f"max_steps_cap={max_steps_cap}: must be >= 1 (steps)")
    table = TABLES[name]
    if only is not None and (bad := [e for e in only if e not in experiments(table)]):
        raise ValueError(f"experiments={bad}: {name} has the experiments {experiments(table)}")
    scoped = split_overrides(list(overrides), experiments(table))
    if run:
        protocol(table, seeds, scoped, jobs, max_steps_cap, only, jobs_per_gpu=jobs_per_gpu)
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
    ap.add_argument("--max-steps-cap", type=int, default=None,
                    help="with --run: extend unconverged runs (doubling their steps) up to this many steps "
                         "(default: 4x each experiment's trainer.max_steps)")
    ap.add_argument("--experiments", nargs="+", metavar="EXPERIMENT",
                    help="with --run: train only these columns' experiments (e.g. table1_symbol_soup); the "
                         "table is still written with every column")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--results-dir", help="where the run folders are (default: the config's results_dir)")
    ap.add_argument("--out-dir", default="results", help="where <table>.md/.csv and plots go")
    args, overrides = ap.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        ap.error(f"unknown option(s) {bad}")
    if args.experiments and args.table == "all":
        ap.error("--experiments names columns of one table; give table1, table2 or ablation")
    if args.results_dir:
        overrides = [f"results_dir={args.results_dir}", *overrides]
    for name in (list(TABLES) if args.table == "all" else [args.table]):
        paths = build(name, args.seeds, overrides, args.run, args.out_dir, jobs=_jobs(args),
                      jobs_per_gpu=args.jobs_per_gpu, max_steps_cap=args.max_steps_cap,
                      only=args.experiments)
        print(paths["md"].read_text())


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    with user_errors("python -m sessa_bench.tables"):
        main()
