"""The paper's tables, rendered from run folders only: mean ± std over seeds per family at the learning rate
chosen on validation (`report/protocol.py`), the paper's number beside each of ours, `*` on cells whose runs
did not converge, reference rows (chance, Bayes ceiling) where the runs' task facts give them, parameter
counts, the rate chosen from the grid tried, and a caption with budget, steps, tokens, devices, commits and
the time spent. `sessa_bench.tables` runs what is missing first."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from sessa_bench.files import atomic_write_text
from sessa_bench.report.markdown import NOT_RUN, aggregate, csv_text, device, md_table, mean_std, short_commit
from sessa_bench.report.protocol import ACC_TOL, MAX_EXTENSIONS, PPL_TOL, STEP, Cell, cell as make_cell, curve
from sessa_bench.run_folder import IMPLICIT


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
    curve_metric: str           # validation metric: plotted against steps, selects the rate, tells convergence
    reference_rows: bool = False  # chance and ceiling rows from the runs' task facts
    lm_references: bool = False   # rows of reference predictors per metric (task_facts.references: LM tasks)


# arXiv 2604.18580 ("Sessa: Selective State Space Attention"), transcribed from the paper:
# Table 1 (test accuracy), Table 2 (SimpleStories test perplexity, top-1, top-5) and the ablation paragraph
# (feedback branch removed). All are mean ± std over 2 seeds.
# The paper reports one SymbolSoup number without its lengths; it is shown beside both SymbolSoup columns.
PAPER_TABLE1 = {
    "sessa": ((0.8601, 0.0016), (0.8601, 0.0016), (0.1541, 0.0071)),
    "transformer": ((0.7921, 0.0070), (0.7921, 0.0070), (0.1222, 0.0003)),
    "mamba2": ((0.0500, 0.0000), (0.0500, 0.0000), (0.0021, 0.0000)),   # "did not converge"
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
         Column("SymbolSoup accuracy, long", "table1_symbol_soup_long", "test/acc"),
         Column("Diffuse MQAR token accuracy", "table1_diffuse_mqar", "test/acc")),
        PAPER_TABLE1, {"table1_symbol_soup": "symbol_soup", "table1_symbol_soup_long": "symbol_soup",
                       "table1_diffuse_mqar": "diffuse_mqar"}, "val/acc", reference_rows=True),
    "table2": Table(
        "table2", "Table 2: language modelling on SimpleStories (test)", ("transformer", "mamba2", "sessa"),
        (Column("perplexity", LM, "test/ppl"),
         Column("top-1 (%)", LM, "test/acc", percent=True, digits=3),
         Column("top-5 (%)", LM, "test/top5", percent=True, digits=3)),
        PAPER_TABLE2, {LM: "simplestories"}, "val/ppl", lm_references=True),
    # The ablation's config is Table 2's (conf/experiment/ablation.yaml): its Sessa runs are Table 2's.
    "ablation": Table(
        "ablation", "Ablation: Sessa without its feedback branch (SimpleStories, test)", ("sessa", "sessa_nofb"),
        (Column("perplexity", "ablation", "test/ppl"),
         Column("top-1 (%)", "ablation", "test/acc", percent=True, digits=3)),
        PAPER_ABLATION, {"ablation": "simplestories"}, "val/ppl", lm_references=True),
}
MAX_DEVIATION = 0.02  # every family within 2 % of the budget's target
NOT_IN_PAPER = "not in the paper"  # the paper cell of a family added to a table (--families)
EDGE = "grid edge"  # after a chosen rate that is still the grid's smallest or largest once it stopped growing


def with_families(table: Table, families: list[str]) -> Table:
    """The table with these rows: the paper's families or any model config of conf/model/ (a baseline the
    paper did not run: its paper cells stay empty, and every family gets the same protocol)."""
    from sessa_bench.compose import available
    known = available("model")
    if not families or (bad := [f for f in families if f not in known]) or len(set(families)) < len(families):
        raise ValueError(f"families={list(families)}: give distinct model configs from {known}"
                         + (f" ({bad} unknown)" if families and bad else ""))
    return replace(table, families=tuple(families))


def experiments(table: Table) -> list[str]:
    return list(dict.fromkeys(c.experiment for c in table.columns))


@dataclass
class Collected:
    """The runs of one experiment at each family's chosen rate, with the protocol's state, by family."""
    experiment: str
    experiment_name: str
    task: str
    budget: str
    results_dir: Path
    runs: dict[str, list[dict]]                 # finished runs at the chosen rate, by seed
    cells: dict[str, Cell]
    chosen: dict[str, float | None]             # None: the sweep is not finished
    tried: dict[str, dict[float, float | None]]  # rate -> validation score at the grid's step count
    converged: dict[str, list[bool]]            # per run in runs[family]
    sweep_runs: list[dict]                      # seed-0 runs at every rate tried (their time counts too)
    curves: dict[str, list[tuple[int, list[dict]]]] = field(default_factory=dict)  # (seed, metrics lines)
    #                                                                                  per run in runs[family]

    def run_dir(self, summary: dict) -> Path:
        return self.results_dir / self.experiment_name / summary["run_name"]


def gather(table: Table, seeds: list[int] | None, overrides: dict[str, list[str]]) -> dict[str, Collected]:
    """seeds: every cell's (--seeds), or None: each experiment's sweep.seeds, else 0 and 1."""
    out = {}
    for exp in experiments(table):
        cells = {f: make_cell(exp, f, overrides[exp], table.curve_metric) for f in table.families}
        runs, chosen, tried, conv, sweep, curves = {}, {}, {}, {}, [], {}
        for f, c in cells.items():
            lr, grid, scores, _ = c.selection()
            chosen[f], tried[f] = lr, scores if c.grid else {}
            sweep += [r.summary for x in grid if (r := c.run(x, 0)).summary and x != lr]
            done = c.reported(lr, seeds) if lr is not None else []
            runs[f] = [r.summary for r in done]
            conv[f] = [c.converged(r)[0] for r in done]
            curves[f] = [(r.seed, r.rows) for r in done]
        n = next(iter(cells.values())).names
        out[exp] = Collected(exp, n["experiment_name"], n["task_name"], n["budget"], Path(n["results_dir"]), runs,
                             cells, chosen, tried, conv, sweep, curves)
    return out


def cell(col: Column, runs: list[dict]) -> tuple[float, float | None] | None:
    scale = 100.0 if col.percent else 1.0
    return aggregate([s["final"][col.metric] * scale for s in runs if col.metric in s["final"]])


def lr_text(lr: float | None) -> str:
    return "?" if lr is None else f"{lr:g}"


def at_edge(c: Collected, fam: str) -> bool:
    """The chosen rate is the grid's smallest or largest after its extensions: the best may lie beyond."""
    tried, lr = list(c.tried[fam]), c.chosen[fam]
    return lr is not None and len(tried) >= 2 and lr in (min(tried), max(tried))


def chosen_text(c: Collected, fam: str) -> str:
    return lr_text(c.chosen[fam]) + (f" ({EDGE})" if at_edge(c, fam) else "")


def reference_row(name: str, key: str, table: Table, got: dict[str, Collected]) -> list[str]:
    """A row of the runs' task facts (chance, ceiling) per column; one value when all runs agree. With
    `lm_references`, the fact is task_facts.references[key][the column's metric]."""
    def fact(facts: dict, col: Column):
        if table.lm_references:
            return (facts.get("references") or {}).get(key, {}).get(col.metric)
        return facts.get(key)

    cells = [name]
    for col in table.columns:
        vals = {fact(s["task_facts"], col) for runs in got[col.experiment].runs.values() for s in runs}
        scale = 100.0 if col.percent else 1.0
        if not vals:
            text = NOT_RUN
        elif vals == {None}:
            text = "unknown"
        else:
            text = ", ".join(f"{v * scale:.{col.digits}f}" for v in sorted(v for v in vals if v is not None))
        cells += [text, ""]
    return cells


def seeds_text(table: Table, got: dict[str, Collected], seeds: list[int] | None) -> str:
    """`0, 1`, or where an experiment asks for other seeds (sweep.seeds), `0, 1 (<its columns>: 0, 1, 2)`."""
    def listed(xs) -> str:
        return ", ".join(map(str, xs))
    by_col = {col.title: tuple(next(iter(got[col.experiment].cells.values())).seed_list(seeds))
              for col in table.columns}
    common = Counter(by_col.values()).most_common(1)[0][0]
    other = {}
    for title, xs in by_col.items():
        if xs != common:
            other.setdefault(xs, []).append(title)
    return listed(common) + "".join(f" ({', '.join(t)}: {listed(xs)})" for xs, t in other.items())


def marks(unconverged: bool, n: int, asked: int) -> str:
    """What a table cell says beside its value: `*` for a run not converged, `(k of n seeds)` while seeds
    are still to train (the dashboards' cells use it too: sessa_bench.dashboard.spec.Chosen.marks)."""
    return ("*" if unconverged else "") + (f" ({n} of {asked} seeds)" if n < asked else "")


def sweep_text(scores: dict[float, float | None]) -> str | None:
    """`sweep: k of n rates` for a learning-rate sweep under way with k of the n rates of its grid so far
    scored; None before any is."""
    done = sum(v is not None for v in scores.values())
    return f"sweep: {done} of {len(scores)} rates" if done else None


def missing_text(c: Collected, fam: str) -> str:
    """What a cell without a result says: `sweep_text` while its sweep is under way (its choice still open: the
    grid column below has the scores so far), else `not run`."""
    return (c.chosen.get(fam) is None and sweep_text(c.tried.get(fam) or {})) or NOT_RUN


def render(table: Table, got: dict[str, Collected], seeds: list[int] | None) -> tuple[str, str]:
    """(markdown, csv) of one table."""
    head = ["family"] + [x for c in table.columns for x in (c.title, "paper")]
    lines, rows = [], []
    for fam in table.families:
        cells = [fam]
        for i, col in enumerate(table.columns):
            c = got[col.experiment]
            in_paper = fam in table.paper
            ours, paper = cell(col, c.runs[fam]), table.paper[fam][i] if in_paper else None
            unconverged = not all(c.converged[fam])
            n, asked = len([r for r in c.runs[fam] if col.metric in r["final"]]), len(c.cells[fam].seed_list(seeds))
            cells += [mean_std(ours, col.digits, missing=missing_text(c, fam))
                      + (marks(unconverged, n, asked) if ours is not None else ""),
                      mean_std(paper, col.digits, missing=NOT_RUN if in_paper else NOT_IN_PAPER)]
            rows.append({"table": table.name, "family": fam, "column": col.title, "experiment": col.experiment,
                         "metric": col.metric, "percent": col.percent,
                         "n_seeds": n, "seeds_asked": asked,
                         "mean": "" if ours is None else ours[0],
                         "std": "" if ours is None or ours[1] is None else ours[1],
                         "paper_mean": "" if paper is None else paper[0],
                         "paper_std": "" if paper is None else paper[1], "lr": c.chosen[fam] or "",
                         "lr_grid": " ".join(f"{x:g}" for x in c.tried[fam]), "lr_at_edge": at_edge(c, fam),
                         "steps": "/".join(str(s["steps"]) for s in c.runs[fam]),
                         "converged": "" if ours is None else not unconverged,
                         "test_from": "/".join(sorted({s.get("test_from", "last") for s in c.runs[fam]}))})
        lines.append(cells)
    if table.reference_rows:
        lines += [reference_row("chance", "chance", table, got),
                  reference_row("baseline", "baseline", table, got),
                  reference_row("ceiling", "ceiling", table, got)]
    if table.lm_references:
        lines += [reference_row("chance", "chance", table, got), reference_row("bigram", "bigram", table, got)]

    # Per family and experiment: parameters (vocabulary and head differ between tasks), the chosen rate.
    plines = []
    for fam in table.families:
        for exp, c in got.items():
            runs = c.runs[fam]
            metric = table.curve_metric
            grid = ", ".join(f"{x:g}{'**' if x == c.chosen[fam] else ''}: "
                             + ("not run" if v is None else f"{v:.4f}") for x, v in c.tried[fam].items())
            if not runs:
                plines.append([fam, c.experiment_name, "", "", NOT_RUN, "", "", "", chosen_text(c, fam),
                               grid or "-", "", ""])
                continue
            p, cost = runs[0]["params"], runs[0].get("cost", {})
            flag = "" if abs(p["deviation"]) <= MAX_DEVIATION else " **over 2 %**"
            best = [f"best {s['best_step']}" if s.get("test_from") == "best" else "last" for s in runs]
            best = best if c.cells[fam].best or "last" not in best else []  # shown where the best is asked for
            plines.append([fam, c.experiment_name, cost.get("layers", "?"), cost.get("d_model", "?"),
                           f"{p['total']:,}", f"{p['target']:,}", f"{p['deviation']:+.2%}{flag}",
                           ", ".join(str(s["seed"]) for s in runs), chosen_text(c, fam), grid or "-",
                           "/".join(str(s["steps"]) for s in runs) + (f" (tested: {'/'.join(best)})" if best else ""),
                           "/".join("yes" if ok else "no" for ok in c.converged[fam])])
            for row in rows:
                if row["family"] == fam and row["experiment"] == exp:
                    row.update(params_total=p["total"], params_deviation=p["deviation"])

    md = (f"# {table_title(table, got)}\n\nOurs: mean ± std over seeds {seeds_text(table, got, seeds)} (one seed: "
          f"the value alone) at each family's learning rate chosen on validation; paper: arXiv 2604.18580 (mean ± "
          f"std over 2 seeds). `{NOT_RUN}`: no finished run folder at the step count its experiment asks for (a "
          f"shorter run, of an earlier step count, is not counted). `sweep: k of n rates`: its learning-rate sweep "
          f"is under way, k rates scored (the grid column below), none chosen yet. `*`: not converged (below). "
          f"`(k of n seeds)`: "
          f"n seeds asked for, k of them finished so far."
          + (f" `{NOT_IN_PAPER}`: a family the paper did not run ({', '.join(extra)})."
             if (extra := [f for f in table.families if f not in table.paper]) else "") + "\n\n"
          + md_table(head, lines) + "\n\n"
          + md_table(["family", "experiment", "layers", "d_model", "params", "target", "deviation", "seeds",
                      "lr", f"grid ({metric} at the grid's steps; ** chosen)", "steps", "converged"], plines)
          + "\n\n" + protocol_caption(table, got) + "\n\n" + table_caption(table, got) + "\n"
          + (f"\n## Validation curves\n\n{curves}\n" if (curves := curves_section(table, got)) else "")
          + (f"\n## Fit\n\n{fit}\n" if (fit := fit_section(table, got)) else ""))
    fields = ["table", "family", "column", "experiment", "metric", "percent", "n_seeds", "seeds_asked", "mean", "std",
              "paper_mean", "paper_std", "lr", "lr_grid", "lr_at_edge", "steps", "converged", "test_from", "params_total",
              "params_deviation"]
    return md, csv_text(fields, rows)


def chosen_runs(table: Table, c: Collected) -> list[tuple[str, int, list[dict], dict]]:
    """(family, seed, training metrics lines, summary) of every run at the chosen rates of one experiment."""
    return [(f, s, rows, summary) for f in table.families for (s, rows), summary in zip(c.curves.get(f, []), c.runs[f])]


def curves_section(table: Table, got: dict[str, Collected]) -> str:
    """Per experiment with runs: the validation metric of every run at the chosen rates every quarter of the
    grid's step count (the last validation of the half-interval up to that step, from the run's metrics.jsonl;
    blank where there is none), and its test metric, so the curves behind the convergence marks read as numbers."""
    metric, out = table.curve_metric, []
    for c in got.values():
        runs = chosen_runs(table, c)
        if not runs:
            continue
        every = max(1, next(iter(c.cells.values())).steps // 4)
        marks = list(range(every, max(sm["steps"] for *_, sm in runs) + 1, every))
        test = metric.replace("val/", "test/", 1)
        lines = []
        for f, seed, rows, sm in runs:
            vals = []
            for m in marks:  # a validation within the last half-interval before the mark, else blank
                at = [r[metric] for r in rows if metric in r and m - max(1, every // 2) < r["step"] <= m]
                vals.append(f"{at[-1]:.3f}" if at else "")
            lines.append([f, lr_text(c.chosen[f]), seed, *vals,
                          f"{sm['final'][test]:.3f}" if test in sm["final"] else ""])
        out.append(f"`{c.experiment_name}`: {metric} every {every} steps of the runs at the chosen rates "
                   f"(from their metrics.jsonl), and {test} at their last step.\n\n"
                   + md_table(["family", "lr", "seed", *map(str, marks), test], lines))
    return "\n\n".join(out)


def fit_section(table: Table, got: dict[str, Collected]) -> str:
    """Per run at the chosen rates: its training loss over the last tenth of its steps beside its validation
    loss at the minimum and at the end (from its metrics.jsonl). A validation loss that climbs while the
    training loss falls is memorisation of the training split, which the best checkpoint guards against."""
    out = []
    for c in got.values():
        lines = []
        for f, seed, rows, sm in chosen_runs(table, c):
            n, val = sm["steps"], curve(rows, "val/loss")
            last_tenth = n - max(1, n // 10)
            train = [r["train/loss"] for r in rows if "train/loss" in r and r.get("step", -1) >= last_tenth]
            if not val or not train:
                continue
            low_step, low = min(val, key=lambda p: (p[1], p[0]))
            lines.append([f, lr_text(c.chosen[f]), seed, n, f"{sum(train) / len(train):.3f}", f"{low:.3f}",
                          low_step, f"{val[-1][1]:.3f}"])
        if lines:
            out.append(f"`{c.experiment_name}`: train/loss (mean over the last tenth of the steps) and val/loss (its "
                       f"minimum, the step it was logged at, and the last) of the runs at the chosen rates.\n\n"
                       + md_table(["family", "lr", "seed", "steps", "train/loss, last tenth", "val/loss, min",
                                   "at step", "val/loss, last"], lines))
    return "\n\n".join(out)


def scoring(cs: list[Cell]) -> str:
    """How the caption's cells score a rate at the grid's step count (sweep.score, else as callbacks.best)."""
    ways = sorted({"the best validation up to it" if c.scores_best() else "the last validation at or before it"
                   for c in cs})
    return " / ".join(ways)


def caps(got: dict[str, Collected]) -> str:
    """Each experiment's extension cap, from its config (sweep.max_steps_cap, else 4x the grid's steps)."""
    out = []
    for exp, col in got.items():
        cells = list(col.cells.values())
        if cells:
            c = cells[0]
            out.append(f"`{exp}` {c.max_steps} steps" + ("" if c.cap is not None else " (4x the grid's)"))
    return "; ".join(out) + "; `tables --max-steps-cap` overrides them when it trains"


def grid_steps(got: dict[str, Collected]) -> str:
    """Each experiment's grid step count (its config's trainer.max_steps), named: a bare list of numbers did not
    say which column trains how long."""
    out = []
    for exp, col in got.items():
        steps = sorted({c.steps for c in col.cells.values()})
        if steps:
            out.append(f"`{exp}` {'/'.join(str(s) for s in steps)}")
    return ", ".join(out) or "none"


def protocol_caption(table: Table, got: dict[str, Collected]) -> str:
    metric = table.curve_metric
    acc = not metric.endswith(("ppl", "loss"))
    tol = f"{ACC_TOL:g} absolute" if acc else f"{PPL_TOL:.0%} relative"
    cs = [c for col in got.values() for c in col.cells.values()]
    grids = sorted({tuple(c.grid) for c in cs})
    text = [f"_Protocol: each family's learning rate is chosen from the shared grid "
            f"{' / '.join('[' + ', '.join(f'{x:g}' for x in g) + ']' for g in grids) or '(none)'} by the best "
            f"{metric} ({'max' if acc else 'min'}) of its seed-0 run at the configured step count "
            f"({grid_steps(got)}; {scoring(cs)}), on the validation split "
            f"only; a best rate at "
            f"an edge of the grid extends it by x{STEP:g} or /{STEP:g} (at most {MAX_EXTENSIONS} times). The "
            f"other seeds train at the chosen rate; test metrics are those of these seeds. A run is converged "
            f"when {metric} moved by less than {tol} over the last quarter of its steps (max - min over the "
            f"validations of that quarter and the one before it)"
            + (f" and ends above the task's trivial level (its baseline, else chance) by more than {tol}: "
               f"a flat curve at that level is a plateau" if acc else "")
            + "; runs that were not are extended (resumed with twice the steps, constant learning rate after "
              f"warmup) up to their experiment's cap ({caps(got)}), and `*` marks cells with a run still "
              "unconverged."]
    if any(at_edge(c, f) for c in got.values() for f in table.families):
        text.append(f"`({EDGE})` after a chosen rate: it is still the smallest or largest of its grid after "
                    f"the {MAX_EXTENSIONS} extensions, so a better rate may lie beyond it.")
    if any(c.best for c in cs):
        text.append(f"Runs keep their best-{metric} checkpoint; validation and test metrics are that "
                    f"checkpoint's (`tested: best <step>` in the second table), and convergence is judged on the best-so-far "
                    f"{metric}. A run kept before its experiment kept the best checkpoint reports its last model "
                    f"(`tested: last`) and counts as unconverged; its extension trains from step 0.")
    if table.reference_rows:
        text.append("`chance`: the task's chance accuracy. `baseline`, what a model reaches without reading the "
                    "structure the task is about: SymbolSoup, the test accuracy of naive Bayes on the symbol counts "
                    "of the whole text, fitted on the train split (tasks/symbol_soup_baseline.py), blind to the "
                    "blocks; Diffuse MQAR, a guess among the memory's values that no earlier query was answered "
                    "with, blind to the query's key (tasks/diffuse_mqar_recall.py, which also scores recall by one "
                    "key token). `ceiling`: "
                    "SymbolSoup, the Bayes-optimal test accuracy computed exactly from its generator "
                    "(tasks/symbol_soup_bayes.py); Diffuse MQAR, copying the value after the query key's earlier "
                    "occurrence, 1 by construction. A run that recorded neither (older Diffuse MQAR runs) adds "
                    "nothing to these rows (`unknown` when none did). "
                    "The paper states no SymbolSoup lengths; its number is shown beside both SymbolSoup columns.")
    if table.lm_references:
        text.append("`chance`: the uniform guess over the vocabulary. `bigram`: an interpolated Kneser-Ney bigram "
                    "(absolute discount 0.75) counted on the training split, scored on the test split's labels as "
                    "the models are, each predicted from the token before it (tasks/lm_reference.py): the n-gram "
                    "floor a model of context should clear. A run that did not record them (before 2026-11-30) "
                    "adds nothing to these rows (`unknown` when none did).")
    return " ".join(text) + "_"


def table_title(table: Table, got: dict[str, Collected]) -> str:
    """The table's title, which says so when its runs are on another task than the paper's (the Bible,
    offline, for SimpleStories): a caption's note alone was easy to miss under a title naming SimpleStories."""
    other = sorted({c.task for exp, c in got.items() if c.task and c.task != table.paper_task[exp]})
    if not other:
        return table.title
    return (f"{table.title}: **our runs on `{'`, `'.join(other)}`**, the paper's on "
            f"`{'`, `'.join(sorted(set(table.paper_task.values())))}`")


def table_caption(table: Table, got: dict[str, Collected]) -> str:
    parts = []
    for exp, c in got.items():
        runs = [s for f in table.families for s in c.runs[f]]
        timed = runs + c.sweep_runs
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
        walls = [(s.get("wall_seconds_total", s.get("wall_seconds_this_process")) or 0.0,
                  max(s.get("concurrent_runs") or 1, 1)) for s in timed]
        gpu_s = sum(w for w, _ in walls)
        shared = max(k for _, k in walls)
        # a device shared by k runs gives each about 1/k of its time: these runs' shares, summed
        device_h = sum(w / k for w, k in walls) / 3600
        sharing = (f"; up to {shared} runs shared the device at once, so it was busy for less: these runs' "
                   f"share of it is about {device_h:.2f} device-hours (each run's wall time divided by the runs "
                   f"sharing its device)" if shared > 1 else f"; {device_h:.2f} device-hours")
        devices = sorted({device(s) for s in runs})
        commits = sorted({short_commit(s["git_commit"]) for s in runs})
        parts.append(
            f"`{c.experiment_name}` (task `{c.task}`): budget `{c.budget}` (target "
            f"{runs[0]['params']['target']:,} parameters), {'/'.join(map(str, steps))} steps of batch "
            f"{'/'.join(map(str, batch))} x {'/'.join(str(n) for n, _ in sorted(lengths))} tokens = {bound}"
            f"{'/'.join(f'{t:,}' for t in tokens)} training tokens per run; {len(runs)} runs at the chosen "
            f"rates and {len(c.sweep_runs)} other sweep runs; "
            f"{init(runs)}; device {', '.join(devices)}; commit {', '.join(commits)}; precision "
            f"{', '.join(sorted({str(s['precision']) for s in runs}))}; execution {execution(timed)}; "
            f"time {gpu_s:,.0f} s = {gpu_s / 60:.1f} min (sum of the wall time of all these runs: sweep, "
            f"extensions and evaluation included{sharing})")
    return ("_" + "; ".join(parts) + f". Built by `python -m sessa_bench.tables {table.name}` from run folders "
            f"only._")


def init(summaries: list[dict]) -> str:
    """The embedding init and LM-head tying of these runs (the defaults moved on 2026-11-30; a summary from
    before then has no embed_std: 0.02, run_folder.IMPLICIT)."""
    stds = sorted({s["model"].get("embed_std", IMPLICIT["model.embed_std"]) for s in summaries})
    heads = sorted({"class head" if s["model"]["head"] == "cls" else
                    "LM head tied" if s["model"]["tie_embeddings"] else "LM head untied" for s in summaries})
    return f"embedding init N(0, {'/'.join(f'{v:g}' for v in stds)}), {'/'.join(heads)}"


def execution(summaries: list[dict]) -> str:
    """How the runs executed: eager, or which families' runs were compiled or ran in CUDA graphs (summaries
    without the keys predate their recording, when every table run was eager)."""
    every = Counter(s["family"] for s in summaries)
    ways = [(Counter(s["family"] for s in summaries if s.get("compile")), "compiled (torch.compile)"),
            (Counter(s["family"] for s in summaries if s.get("cuda_graphs")), "in CUDA graphs (eager's kernels)")]
    ways = [(c, how) for c, how in ways if c]
    if not ways:
        return "eager"
    # Each compiled or graphed run compared its first batch with eager (compile_check.py); older ones did not.
    checks = [s.get("compile_check") for s in summaries if s.get("compile") or s.get("cuda_graphs")]
    done = [c["grad_rel_diff"] for c in checks if c]
    # eager against itself on that batch (nondeterministic kernels), where the runs recorded it
    again = [c["grad_repeat"] for c in checks if c and c.get("grad_repeat") is not None]
    check = (f"; checked against eager on their first batch: {len(done)}, gradients within "
             f"{max(done):.2g} relative" + (f" (eager against itself: within {max(again):.2g}, {len(again)} runs)"
                                            if again else "") if done else "") + \
        (f"; without that check: {len(checks) - len(done)}" if len(done) < len(checks) else "")
    return "; ".join(", ".join(f"{f} {c[f]}/{n} runs" for f, n in sorted(every.items()) if c[f]) + f" {how}"
                     for c, how in ways) + ", the rest eager" + check


def write(table: Table, seeds: list[int] | None, scoped: dict[str, list[str]], out_dir: str | Path = "results",
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


