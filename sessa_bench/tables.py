"""The paper's tables, rebuilt only from run folders (DESIGN.md sections 1 and 6).

    python -m sessa_bench.tables table1|table2|ablation|all [--run [--jobs N]] [--seeds 0 1]
                                 [--results-dir DIR] [--out-dir results] [hydra overrides...]

With --run, every missing (family, seed) run of the table's experiments is trained first, one after another
in this process (the semantics of the `local` launcher; finished runs are skipped by `train.run`), or with
--jobs N in N worker processes that share the machine (small models leave most of a GPU idle). Then the
finished run folders are collected and results/<table>.md and .csv are written (atomically): mean ± std over
seeds per family, the paper's number beside each of ours, parameter counts with their deviation from the
budget, and a caption with budget, steps, tokens, devices, commits and the GPU time spent. Plots come from
`sessa_bench.plots`.

Overrides apply to every experiment of the table; `<experiment>:<override>` applies to one only, e.g.
`table1_diffuse_mqar:task.train_lag=[8,31]` (SymbolSoup has no such key). Only runs whose task, budget and
seed match the composed config are tabulated, so `task=bible` (the offline stand-in for SimpleStories)
builds Table 2 from the *-bible-* runs, and the table says so.
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
from dataclasses import dataclass
from pathlib import Path


from sessa_bench.compose import CONF_DIR, compose_train
from sessa_bench.report import collect, run_task_config
from sessa_bench.run_folder import atomic_write_text


@dataclass(frozen=True)
class Column:
    title: str
    experiment: str          # a file in conf/experiment
    metric: str              # a key of summary["final"]
    percent: bool = False    # shown x100, like the paper's accuracies in Table 2
    digits: int = 4


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    families: tuple[str, ...]
    columns: tuple[Column, ...]
    # The paper's (mean, std) per family and column, in the unit shown (percent where percent=True).
    paper: dict[str, tuple[tuple[float, float] | None, ...]]
    paper_task: dict[str, str]  # experiment -> the task the paper's numbers are on
    curve_metric: str           # validation metric plotted against steps


# arXiv 2604.18580 ("Sessa: Selective State Space Attention"), as transcribed in DESIGN.md section 1:
# Table 1 (test accuracy), Table 2 (SimpleStories test perplexity, top-1, top-5) and the ablation paragraph
# (feedback branch removed). All are mean ± std over 2 seeds.
PAPER_TABLE1 = {
    "sessa": ((0.8601, 0.0016), (0.1541, 0.0071)),
    "transformer": ((0.7921, 0.0070), (0.1222, 0.0003)),
    "mamba2": ((0.0500, 0.0000), (0.0021, 0.0000)),   # "did not converge"
}
PAPER_TABLE2 = {
    "transformer": ((7.6701, 0.0313), (50.441, 0.059), (78.497, 0.062)),
    "mamba2": ((7.7229, 0.0207), (50.299, 0.046), (78.302, 0.043)),
    "sessa": ((8.3700, 0.0482), (49.144, 0.081), (77.119, 0.090)),
}
PAPER_ABLATION = {
    "sessa": PAPER_TABLE2["sessa"][:2],
    "sessa_nofb": ((8.0902, 0.0192), (49.648, 0.026)),
}

LM = "table2_simplestories"
TABLES = {
    "table1": Table(
        "table1", "Table 1: long-context classification and retrieval (test)", ("sessa", "transformer", "mamba2"),
        (Column("SymbolSoup accuracy", "table1_symbol_soup", "test/acc"),
         Column("Diffuse MQAR token accuracy", "table1_diffuse_mqar", "test/acc")),
        PAPER_TABLE1, {"table1_symbol_soup": "symbol_soup", "table1_diffuse_mqar": "diffuse_mqar"}, "val/acc"),
    "table2": Table(
        "table2", "Table 2: language modelling on SimpleStories (test)", ("transformer", "mamba2", "sessa"),
        (Column("perplexity", LM, "test/ppl"),
         Column("top-1 (%)", LM, "test/acc", percent=True, digits=3),
         Column("top-5 (%)", LM, "test/top5", percent=True, digits=3)),
        PAPER_TABLE2, {LM: "simplestories"}, "val/ppl"),
    # The ablation's config is Table 2's (conf/experiment/ablation.yaml): its Sessa runs are Table 2's.
    "ablation": Table(
        "ablation", "Ablation: Sessa without its feedback branch (SimpleStories, test)", ("sessa", "sessa_nofb"),
        (Column("perplexity", "ablation", "test/ppl"),
         Column("top-1 (%)", "ablation", "test/acc", percent=True, digits=3)),
        PAPER_ABLATION, {"ablation": "simplestories"}, "val/ppl"),
}
NOT_RUN = "not run"
MAX_DEVIATION = 0.02  # DESIGN section 3: every family within 2 % of the budget's target


def experiments(table: Table) -> list[str]:
    return list(dict.fromkeys(c.experiment for c in table.columns))


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


def compose(experiment: str, family: str, seed: int, overrides: list[str]):
    return compose_train([f"experiment={experiment}", f"model={family}", f"seed={seed}", *overrides])


def run_missing(table: Table, seeds: list[int], overrides: dict[str, list[str]], jobs: int = 1) -> None:
    """Train the table's unfinished runs: in this process one after another (jobs=1, the `local`
    launcher's semantics), or in `jobs` worker processes sharing the machine (sessa_bench.concurrent_runs).
    Runs are ordered seed by seed with the families of one seed side by side, so concurrent workers train
    different families."""
    todo = [(exp, fam, seed) for exp in experiments(table) for seed in seeds for fam in table.families]
    if jobs > 1:
        from sessa_bench.concurrent_runs import train_concurrently
        train_concurrently([[f"experiment={e}", f"model={f}", f"seed={s}", *overrides[e]] for e, f, s in todo],
                           jobs)
        return
    from sessa_bench.train import run  # heavy import (Lightning) only when training

    for exp, fam, seed in todo:
        run(compose(exp, fam, seed, overrides[exp]))


def train_length(run_dir: Path, summary: dict) -> tuple[int, bool]:
    """Tokens per training sequence and whether that is exact (False: the longest length, an upper bound).
    The summary's seq_len is the longest sequence the task makes, which for Diffuse MQAR is the test length."""
    from sessa_bench.tasks.diffuse_mqar import DiffuseMQAR

    task = run_task_config(run_dir)
    if (mqar := DiffuseMQAR.from_run_config(task)) is not None:
        return mqar.seq_len, True
    if isinstance(task.get("seq_len"), int):
        return task["seq_len"], True
    return int(summary["seq_len"]), False


def fmt(mean_std: tuple[float, float | None] | None, digits: int) -> str:
    if mean_std is None:
        return NOT_RUN
    m, s = mean_std
    return f"{m:.{digits}f}" if s is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def aggregate(values: list[float]) -> tuple[float, float | None] | None:
    if not values:
        return None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


@dataclass
class Collected:
    """The finished runs of one experiment that match the composed config, by family."""
    experiment: str
    experiment_name: str
    task: str
    budget: str
    results_dir: Path
    runs: dict[str, list[dict]]

    def run_dir(self, summary: dict) -> Path:
        return self.results_dir / self.experiment_name / summary["run_name"]


def gather(table: Table, seeds: list[int], overrides: dict[str, list[str]]) -> dict[str, Collected]:
    out = {}
    for exp in experiments(table):
        cfg = compose(exp, table.families[0], seeds[0], overrides[exp])
        found = [s for s in collect(cfg.results_dir, cfg.experiment_name)
                 if s["task"] == cfg.task_name and s["budget"] == cfg.budget.name and s["seed"] in seeds]
        runs = {f: sorted((s for s in found if s["family"] == f), key=lambda s: s["seed"]) for f in table.families}
        out[exp] = Collected(exp, cfg.experiment_name, cfg.task_name, cfg.budget.name, Path(cfg.results_dir), runs)
    return out


def cell(col: Column, runs: list[dict]) -> tuple[float, float | None] | None:
    scale = 100.0 if col.percent else 1.0
    return aggregate([s["final"][col.metric] * scale for s in runs if col.metric in s["final"]])


def render(table: Table, got: dict[str, Collected], seeds: list[int]) -> tuple[str, str]:
    """(markdown, csv) of one table."""
    head = ["family"] + [x for c in table.columns for x in (c.title, "paper")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = []
    for fam in table.families:
        cells = [fam]
        for i, col in enumerate(table.columns):
            ours, paper = cell(col, got[col.experiment].runs[fam]), table.paper[fam][i]
            cells += [fmt(ours, col.digits), fmt(paper, col.digits)]
            rows.append({"table": table.name, "family": fam, "column": col.title, "experiment": col.experiment,
                         "metric": col.metric, "percent": col.percent,
                         "n_seeds": len([s for s in got[col.experiment].runs[fam] if col.metric in s["final"]]),
                         "mean": "" if ours is None else ours[0],
                         "std": "" if ours is None or ours[1] is None else ours[1],
                         "paper_mean": paper[0], "paper_std": paper[1]})
        lines.append("| " + " | ".join(cells) + " |")

    # Parameter counts per family and experiment (the vocabulary and head differ between tasks).
    plines = ["| family | experiment | layers | d_model | params | target | deviation | seeds |",
              "|---|---|---|---|---|---|---|---|"]
    for fam in table.families:
        for exp, c in got.items():
            runs = c.runs[fam]
            if not runs:
                plines.append(f"| {fam} | {c.experiment_name} | | | {NOT_RUN} | | | |")
                continue
            p, cost = runs[0]["params"], runs[0].get("cost", {})
            flag = "" if abs(p["deviation"]) <= MAX_DEVIATION else " **over 2 %**"
            plines.append(f"| {fam} | {c.experiment_name} | {cost.get('layers', '?')} | {cost.get('d_model', '?')} | "
                          f"{p['total']:,} | {p['target']:,} | {p['deviation']:+.2%}{flag} | "
                          f"{', '.join(str(s['seed']) for s in runs)} |")
            for row in rows:
                if row["family"] == fam and row["experiment"] == exp:
                    row.update(params_total=p["total"], params_deviation=p["deviation"])

    md = (f"# {table.title}\n\nOurs: mean ± std over seeds {', '.join(map(str, seeds))} (one seed: the value "
          f"alone); paper: arXiv 2604.18580 (mean ± std over 2 seeds). `{NOT_RUN}`: no finished run folder.\n\n"
          + "\n".join(lines) + "\n\n" + "\n".join(plines) + "\n\n" + table_caption(table, got) + "\n")
    buf = io.StringIO()
    fields = ["table", "family", "column", "experiment", "metric", "percent", "n_seeds", "mean", "std",
              "paper_mean", "paper_std", "params_total", "params_deviation"]
    w = csv.DictWriter(buf, fieldnames=fields, restval="", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return md, buf.getvalue()


def table_caption(table: Table, got: dict[str, Collected]) -> str:
    parts = []
    for exp, c in got.items():
        runs = [s for f in table.families for s in c.runs[f]]
        if table.paper_task[exp] != c.task:
            parts.append(f"**these runs are on `{c.task}`, the paper's numbers on `{table.paper_task[exp]}`**")
        if not runs:
            parts.append(f"`{c.experiment_name}`: no finished runs")
            continue
        steps = sorted({s["steps"] for s in runs})
        batch = sorted({s["batch_size"] for s in runs})
        lengths = {train_length(c.run_dir(s), s) for s in runs}
        tokens = sorted({s["steps"] * s["batch_size"] * n for s in runs for n, _ in lengths})
        bound = "" if all(exact for _, exact in lengths) else "at most "
        gpu_s = sum(s.get("wall_seconds_this_process") or 0.0 for s in runs)
        shared = max(s.get("concurrent_runs", 1) for s in runs)
        sharing = f"; up to {shared} runs shared the device at once, so it was busy for less" if shared > 1 else ""
        devices = sorted({s["hardware"].get("gpu") or f"CPU x{s['hardware'].get('cpu_count')}" for s in runs})
        commits = sorted({s["git_commit"][:12] + ("-dirty" if s["git_commit"].endswith("-dirty") else "")
                          for s in runs})
        parts.append(
            f"`{c.experiment_name}` (task `{c.task}`): budget `{c.budget}` (target "
            f"{runs[0]['params']['target']:,} parameters), {'/'.join(map(str, steps))} steps of batch "
            f"{'/'.join(map(str, batch))} x {'/'.join(str(n) for n, _ in sorted(lengths))} tokens = {bound}"
            f"{'/'.join(f'{t:,}' for t in tokens)} training tokens per run; {len(runs)} runs; "
            f"device {', '.join(devices)}; commit {', '.join(commits)}; precision "
            f"{', '.join(sorted({str(s['precision']) for s in runs}))}; "
            f"time {gpu_s:,.0f} s = {gpu_s / 60:.1f} min (sum of the runs' wall time, evaluation included{sharing})")
    return ("_" + "; ".join(parts) + f". Built by `python -m sessa_bench.tables {table.name}` from run folders "
            f"only._")


def build(name: str, seeds: list[int] = (0, 1), overrides: list[str] = (), run: bool = False,
          out_dir: str | Path = "results", plots: bool = True, jobs: int = 1) -> dict[str, Path]:
    """Run what is missing (run=True), then write <out_dir>/<name>.md and .csv (and plots); returns paths."""
    if name not in TABLES:
        raise ValueError(f"table={name!r}: must be one of {sorted(TABLES)} or 'all'")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    table = TABLES[name]
    scoped = split_overrides(list(overrides), experiments(table))
    if run:
        run_missing(table, seeds, scoped, jobs)
    got = gather(table, seeds, scoped)
    md, csv_text = render(table, got, seeds)
    out = Path(out_dir)
    paths = {"md": out / f"{name}.md", "csv": out / f"{name}.csv"}
    if plots:
        from sessa_bench.plots import table_plots
        pngs = table_plots(table, got, out)
        if pngs:
            md += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pngs) + "\n"
        paths.update({p.stem: p for p in pngs})
    atomic_write_text(paths["csv"], csv_text)
    atomic_write_text(paths["md"], md)
    return paths


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="rebuild the paper's tables from run folders (optionally run "
                                             "what is missing first)")
    ap.add_argument("table", choices=[*TABLES, "all"])
    ap.add_argument("--run", action="store_true", help="train missing runs first (sequentially, skips finished)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="with --run: train up to this many runs at once, each in its own process (default 1)")
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
        paths = build(name, args.seeds, overrides, args.run, args.out_dir, jobs=args.jobs)
        print(paths["md"].read_text())


if __name__ == "__main__":
    main()
