"""The paper's tables, rendered from run folders only: mean ± std over seeds per family, the paper's number
beside each of ours, parameter counts with their deviation from the budget, and a caption with budget,
steps, tokens, devices, commits and the time spent. `sessa_bench.tables` runs what is missing first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sessa_bench.compose import compose_train
from sessa_bench.files import atomic_write_text
from sessa_bench.report.collect import collect
from sessa_bench.report.markdown import NOT_RUN, aggregate, csv_text, device, md_table, mean_std, short_commit


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


# arXiv 2604.18580 ("Sessa: Selective State Space Attention"), transcribed from the paper:
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
MAX_DEVIATION = 0.02  # every family within 2 % of the budget's target


def experiments(table: Table) -> list[str]:
    return list(dict.fromkeys(c.experiment for c in table.columns))


def compose(experiment: str, family: str, seed: int, overrides: list[str]):
    return compose_train([f"experiment={experiment}", f"model={family}", f"seed={seed}", *overrides])


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
    lines, rows = [], []
    for fam in table.families:
        cells = [fam]
        for i, col in enumerate(table.columns):
            ours, paper = cell(col, got[col.experiment].runs[fam]), table.paper[fam][i]
            cells += [mean_std(ours, col.digits), mean_std(paper, col.digits)]
            rows.append({"table": table.name, "family": fam, "column": col.title, "experiment": col.experiment,
                         "metric": col.metric, "percent": col.percent,
                         "n_seeds": len([s for s in got[col.experiment].runs[fam] if col.metric in s["final"]]),
                         "mean": "" if ours is None else ours[0],
                         "std": "" if ours is None or ours[1] is None else ours[1],
                         "paper_mean": paper[0], "paper_std": paper[1]})
        lines.append(cells)

    # Parameter counts per family and experiment (the vocabulary and head differ between tasks).
    plines = []
    for fam in table.families:
        for exp, c in got.items():
            runs = c.runs[fam]
            if not runs:
                plines.append([fam, c.experiment_name, "", "", NOT_RUN, "", "", ""])
                continue
            p, cost = runs[0]["params"], runs[0].get("cost", {})
            flag = "" if abs(p["deviation"]) <= MAX_DEVIATION else " **over 2 %**"
            plines.append([fam, c.experiment_name, cost.get("layers", "?"), cost.get("d_model", "?"),
                           f"{p['total']:,}", f"{p['target']:,}", f"{p['deviation']:+.2%}{flag}",
                           ", ".join(str(s["seed"]) for s in runs)])
            for row in rows:
                if row["family"] == fam and row["experiment"] == exp:
                    row.update(params_total=p["total"], params_deviation=p["deviation"])

    md = (f"# {table.title}\n\nOurs: mean ± std over seeds {', '.join(map(str, seeds))} (one seed: the value "
          f"alone); paper: arXiv 2604.18580 (mean ± std over 2 seeds). `{NOT_RUN}`: no finished run folder.\n\n"
          + md_table(head, lines) + "\n\n"
          + md_table(["family", "experiment", "layers", "d_model", "params", "target", "deviation", "seeds"], plines)
          + "\n\n" + table_caption(table, got) + "\n")
    fields = ["table", "family", "column", "experiment", "metric", "percent", "n_seeds", "mean", "std",
              "paper_mean", "paper_std", "params_total", "params_deviation"]
    return md, csv_text(fields, rows)


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
        lengths = {(s["task_facts"]["train_len"], s["task_facts"]["train_len_exact"]) for s in runs}
        tokens = sorted({s["steps"] * s["batch_size"] * n for s in runs for n, _ in lengths})
        bound = "" if all(exact for _, exact in lengths) else "at most "
        gpu_s = sum(s.get("wall_seconds_this_process") or 0.0 for s in runs)
        shared = max(s.get("concurrent_runs", 1) for s in runs)
        sharing = f"; up to {shared} runs shared the device at once, so it was busy for less" if shared > 1 else ""
        devices = sorted({device(s) for s in runs})
        commits = sorted({short_commit(s["git_commit"]) for s in runs})
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


def write(table: Table, seeds: list[int], scoped: dict[str, list[str]], out_dir: str | Path = "results",
          plots: bool = True) -> dict[str, Path]:
    """Write <out_dir>/<table>.md and .csv (and plots) from the finished run folders; returns the paths."""
    got = gather(table, seeds, scoped)
    md, csv_body = render(table, got, seeds)
    name = table.name
    out = Path(out_dir)
    paths = {"md": out / f"{name}.md", "csv": out / f"{name}.csv"}
    if plots:
        from sessa_bench.report.plots import table_plots
        pngs = table_plots(table, got, out)
        if pngs:
            md += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pngs) + "\n"
        paths.update({p.stem: p for p in pngs})
    atomic_write_text(paths["csv"], csv_body)
    atomic_write_text(paths["md"], md)
    return paths


