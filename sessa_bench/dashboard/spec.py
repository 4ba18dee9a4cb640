"""What the dashboards show, as data: one section per paper table (sessa_bench.report.paper.TABLES), each
with, per experiment of the table, the validation curve by family, the table's final metrics by family,
test accuracy per slice (Diffuse MQAR's lag buckets) and training tokens/s. The W&B workspace and reports
(sessa_bench.wandb_dashboard) and the offline page (sessa_bench.dashboard.page) both render these
sections, so the two dashboards cannot drift apart.

Experiment names come from composing each table experiment's config; slice names from the task facts of
finished run folders (building a task to ask it would load its data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sessa_bench.report.collect import collect
from sessa_bench.report.markdown import NOT_RUN
from sessa_bench.report.paper import TABLES, Table, experiments, sweep_text
from sessa_bench.report.paper import marks as cell_marks

THROUGHPUT = "throughput_tokens_per_s"
# A run the paper table counts (a seed at its family's chosen rate, as long as its experiment trains), or
# another: the sweep's other rates, and runs at the chosen rate the table leaves out (shorter than its
# experiment's steps, or a seed it does not ask for)
CHOSEN, OTHER = "chosen", "other runs"
KINDS = ("curve", "final", "slices", "throughput")


@dataclass(frozen=True)
class Panel:
    kind: str                   # one of KINDS
    title: str
    experiment: str             # the runs' experiment_name: the W&B group and the results/runs folder
    metrics: tuple[str, ...]    # curve: history metric; final, slices, throughput: summary metrics
    families: tuple[str, ...]   # one trace (curve, final, throughput) or one bar series (slices) each


@dataclass(frozen=True)
class Section:
    table: Table
    panels: tuple[Panel, ...]


@lru_cache(maxsize=None)
def experiment_name(experiment: str) -> str:
    from sessa_bench.compose import compose_train
    return str(compose_train([f"experiment={experiment}"]).experiment_name)


def slice_names(runs: list[dict]) -> list[str]:
    """Slice names recorded by the runs, in the order the task lists them."""
    out: list[str] = []
    for s in runs:
        for name in s.get("task_facts", {}).get("slice_names") or ():
            if name not in out:
                out.append(name)
    return out


def sections(results_dir: str | Path) -> list[Section]:
    out = []
    for table in TABLES.values():
        panels = []
        for exp in experiments(table):
            name = experiment_name(exp)
            fams = table.families
            panels.append(Panel("curve", f"{name}: {table.curve_metric} during training", name,
                                (table.curve_metric,), fams))
            for col in table.columns:
                if col.experiment == exp:
                    panels.append(Panel("final", f"{name}: {col.title} ({col.metric})", name, (col.metric,), fams))
            slices = slice_names(collect(results_dir, name))
            if slices:
                panels.append(Panel("slices", f"{name}: test accuracy per slice", name,
                                    tuple(f"test/acc/{s}" for s in slices), fams))
            # runs of a lease share a GPU with different numbers of others, so these bars are no speed
            # comparison of the families (make bench times them alone): the title says so
            panels.append(Panel("throughput", f"{name}: training tokens/s per run (GPU shared with other "
                                f"runs; speeds: make bench)", name, (THROUGHPUT,), fams))
        out.append(Section(table, tuple(panels)))
    return out


@dataclass(frozen=True)
class Undecided:
    """A protocol sweep under way: no rate chosen yet, so no run is at the chosen rate; `text` is what its
    table cell says (report.paper.sweep_text, else `not run`)."""
    text: str


@dataclass(frozen=True)
class Chosen:
    """A cell's chosen rate and the run folders the paper table counts at it: which of them are not converged
    and how many seeds the cell asks for, so a dashboard marks its value as results/<table>.md does (`*`,
    `(k of n seeds)`)."""
    lr: float
    runs: frozenset[str]  # run names (folder names) of the seeds the table reports
    unconverged: frozenset[str] = frozenset()  # those of `runs` the protocol does not count as converged
    asked: int = 0  # the seeds the cell asks for (its experiment's sweep.seeds, else the default)

    def marks(self, shown: list[dict]) -> str:
        """The paper table's marks for a value over the runs `shown` (summaries): `*` when one of them is not
        converged; `(k of n seeds)` when they are all this cell's runs and fewer than it asks for."""
        names = {s.get("run_name") for s in shown}
        if not names:
            return ""
        # runs of another rate shown beside: no seed count (n = asked says nothing is missing)
        shown_n = len(names) if names <= self.runs else self.asked
        return cell_marks(bool(names & self.unconverged), shown_n, self.asked)


def chosen_rates(results_dir: Path, present: set[tuple[str, str]]) -> dict[tuple[str, str], Chosen | Undecided]:
    """(experiment_name, family) -> the rate the tables' protocol chose from these run folders and the runs
    the table counts there (Chosen), for the pairs in `present` (those with runs) whose sweep is finished;
    Undecided where the sweep has begun (a run folder at a rate of its grid) but not finished (the paper
    table shows no value then either); absent where no run is the protocol's (runs of your own)."""
    from sessa_bench.report.protocol import cell
    from sessa_bench.tables import split_overrides
    out = {}
    for table in TABLES.values():
        names = experiments(table)
        scoped = split_overrides([f"results_dir={results_dir}"], names)
        for exp in names:
            for f in table.families:
                if (experiment_name(exp), f) in present:
                    c = cell(exp, f, scoped[exp], table.curve_metric)
                    lr, tried, scores, _ = c.selection()
                    if lr is not None:
                        runs = c.reported(lr, None)
                        out[(experiment_name(exp), f)] = Chosen(
                            lr, frozenset(r.folder.path.name for r in runs),
                            frozenset(r.folder.path.name for r in runs if not c.converged(r)[0]),
                            len(c.seed_list(None)))
                    elif any(c.run(x, 0).folder.config.exists() for x in tried):  # its sweep has begun
                        out[(experiment_name(exp), f)] = Undecided(sweep_text(scores) or NOT_RUN)
    return out


def at_chosen_rate(summary: dict, chosen: Chosen | Undecided | float | None) -> bool:
    """True for a run the paper table counts (Chosen: one of its runs; a bare rate: any run at it), or of a
    cell without a protocol sweep (nothing to hide then); never while its sweep is under way (Undecided)."""
    if chosen is None:
        return True
    if isinstance(chosen, Chosen):
        return summary.get("run_name") in chosen.runs
    if isinstance(chosen, Undecided):
        return False
    lr = summary.get("optim", {}).get("lr")
    return lr is not None and math.isclose(lr, chosen)


def by_family(results_dir: str | Path, experiment: str, families: tuple[str, ...]) -> dict[str, list[dict]]:
    """Finished runs of one experiment folder, by family (every task and budget the folder holds)."""
    runs = collect(results_dir, experiment)
    return {f: sorted((s for s in runs if s["family"] == f), key=lambda s: s["seed"]) for f in families}


def table_rows(table: Table, results_dir: str | Path) -> tuple[list[str], list[list[str]]]:
    """The table as in results/<table>.md: per family, ours (mean ± std over the seeds at its chosen rate, with
    its marks: `Chosen.marks`) beside the paper's."""
    from sessa_bench.report.markdown import mean_std
    from sessa_bench.report.paper import cell

    header = ["family"] + [x for c in table.columns for x in (c.title, "paper")]
    got = {exp: by_family(results_dir, experiment_name(exp), table.families) for exp in experiments(table)}
    chosen = chosen_rates(Path(results_dir), {(experiment_name(e), f) for e, fams in got.items()
                                              for f, runs in fams.items() if runs})
    got = {e: {f: [s for s in runs if at_chosen_rate(s, chosen.get((experiment_name(e), f)))]
               for f, runs in fams.items()} for e, fams in got.items()}
    rows = []
    for fam in table.families:
        row = [fam]
        for i, col in enumerate(table.columns):
            runs, pick = got[col.experiment][fam], chosen.get((experiment_name(col.experiment), fam))
            ours = cell(col, runs)
            marks = pick.marks([s for s in runs if col.metric in s["final"]]) \
                if ours is not None and isinstance(pick, Chosen) else ""
            missing = pick.text if isinstance(pick, Undecided) else NOT_RUN
            row += [mean_std(ours, col.digits, missing=missing) + marks, mean_std(table.paper[fam][i], col.digits)]
        rows.append(row)
    return header, rows
