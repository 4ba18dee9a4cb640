"""PNG plots for the paper tables, from run folders only (called by sessa_bench.report.paper):

- <table>_<task>_val.png   the table's validation metric against the training step, one line per family
                           (mean over seeds of metrics.jsonl; a shaded band spans min..max over seeds;
                           dashed where fewer seeds logged the step: a mean of other seeds is another curve)
- <table>_<task>_lags.png  Diffuse MQAR test token accuracy per lag bucket and family; buckets beyond the
                           longest training lag (out of distribution) are shaded

Files are written atomically, like every result file.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on the training machines
import matplotlib.pyplot as plt  # noqa: E402

from sessa_bench.files import atomic_write  # noqa: E402
from sessa_bench.run_folder import RunFolder  # noqa: E402

LAG = re.compile(r"^test/acc/lag=(\d+)-(\d+)$")


def save(fig, path: Path) -> Path:
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    finally:
        plt.close(fig)


def mean_curve(run_dirs: list[Path], metric: str) -> tuple[list[int], list[float], list[float], list[float],
                                                        list[int], int]:
    """Steps, mean, min, max and count over runs of `metric` from their training's metrics lines (steps where
    any run logged it; the final evaluation of a best checkpoint is not a point of the curve), and the step
    where the shortest run's curve ends."""
    by_step: dict[int, list[float]] = defaultdict(list)
    ends = []
    for d in run_dirs:
        logged = [(int(row["step"]), float(row[metric])) for row in RunFolder(d).fit_metrics()
                  if metric in row and "step" in row]
        for step, value in logged:
            by_step[step].append(value)
        ends += [max(step for step, _ in logged)] if logged else []
    steps = sorted(by_step)
    vals = [by_step[s] for s in steps]
    return (steps, [sum(v) / len(v) for v in vals], [min(v) for v in vals], [max(v) for v in vals],
            [len(v) for v in vals], min(ends, default=0))


def coverage_split(steps: list[int], counts: list[int], runs: int, end: int) -> tuple[list[int], list[int]]:
    """Indices of the steps every run logged, and of those past `end`, the shortest run's last (runs of
    different lengths: the mean of those that trained on, from the last common step so the two lines join).
    A step only some runs logged up to `end` (the shorter run's final validation) is in neither: as a mean of
    fewer runs it would be a dip or a jump."""
    common = [i for i, n in enumerate(counts) if n >= runs]
    after = [i for i, st in enumerate(steps) if st > end and counts[i] < runs]
    return common, [common[-1], *after] if common and after else after


# task facts drawn as levels, where a task has them (what each is, per task: tasks/*.py baseline, ceiling)
REFERENCES = (("chance", "chance", ":"), ("baseline", "baseline (test)", "-."), ("ceiling", "ceiling (test)", "--"))


def reference_levels(summaries: list[dict]) -> dict[str, tuple[float, str]]:
    """{label: (value, linestyle)} of the task facts that all the runs agree on."""
    out = {}
    for key, label, style in REFERENCES:
        vals = {s.get("task_facts", {}).get(key) for s in summaries}
        if len(vals) == 1 and (v := vals.pop()) is not None:
            out[label] = (float(v), style)
    return out


def val_curves(runs: dict[str, list[Path]], metric: str, out: Path, title: str,
               references: dict[str, tuple[float, str]] | None = None) -> Path | None:
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for fam, dirs in runs.items():
        steps, mean, lo, hi, counts, end = mean_curve(dirs, metric)
        if not steps:
            continue
        # seeds of different lengths: past the shortest's end the mean is of fewer seeds (dashed), which drawn
        # as one line would read as a jump of the curve
        parts = list(zip(coverage_split(steps, counts, len(dirs), end), ("-", "--")))
        label = f"{fam} ({len(dirs)} seed{'s' * (len(dirs) > 1)}{'; dashed: fewer' if parts[1][0] else ''})"
        color = None
        for idx, style in parts:
            if not idx:
                continue
            line, = ax.plot([steps[i] for i in idx], [mean[i] for i in idx], marker="o", ms=3, linestyle=style,
                            color=color, label=label if color is None else None)
            color = line.get_color()
            ax.fill_between([steps[i] for i in idx], [lo[i] for i in idx], [hi[i] for i in idx], color=color,
                            alpha=0.2)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    for label, (value, style) in (references or {}).items():
        ax.axhline(value, color="black", linestyle=style, linewidth=1, label=label)
    ax.set(xlabel="training step", ylabel=metric, title=title)
    ax.grid(alpha=0.3)
    # beside the axes: the curves may end anywhere between chance and the ceiling, so no corner is free
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save(fig, out)


def lag_accuracy(summaries: dict[str, list[dict]], out: Path, title: str) -> Path | None:
    buckets = sorted({(int(m[1]), int(m[2])) for runs in summaries.values() for s in runs
                      for m in [LAG.match(k) for k in s["final"]] if m})
    if not buckets:
        return None
    fams = [f for f in summaries if summaries[f]]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(buckets)), 4))
    width = 0.8 / len(fams)
    for i, fam in enumerate(fams):
        ys = []
        for lo, hi in buckets:
            v = [s["final"][f"test/acc/lag={lo}-{hi}"] for s in summaries[fam] if f"test/acc/lag={lo}-{hi}" in s["final"]]
            ys.append(sum(v) / len(v) if v else float("nan"))
        ax.bar([j + (i - (len(fams) - 1) / 2) * width for j in range(len(buckets))], ys, width, label=fam)
    facts = [s["task_facts"] for runs in summaries.values() for s in runs]
    limits = {f["ood_above"] for f in facts if f.get("ood_above") is not None}
    if limits:  # a bucket is out of distribution when all its lags exceed the longest training lag
        edge = min(limits)
        ood = [j for j, (lo, _) in enumerate(buckets) if lo > edge]
        if ood:
            ax.axvspan(ood[0] - 0.5, len(buckets) - 0.5, color="grey", alpha=0.15,
                       label=f"out of distribution (lag > {edge})")
    levels = {f["chance"] for f in facts if f.get("chance") is not None}
    if len(levels) == 1:  # runs with different value alphabets have no single chance level
        ax.axhline(levels.pop(), color="black", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(buckets)), [f"{lo}-{hi}" for lo, hi in buckets], rotation=30)
    ax.set(xlabel="lag (query answer - value in memory)", ylabel="test token accuracy", title=title,
           xlim=(-0.5, len(buckets) - 0.5))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, out)


def table_plots(table, got: dict, out_dir: Path) -> list[Path]:
    """The plots of one sessa_bench.tables.Table from its Collected runs; skips plots without data."""
    out, done = [], set()
    for c in got.values():
        if c.experiment_name in done:
            continue
        # named by task; a second experiment on the same task (SymbolSoup, long) by its experiment
        name = c.task if c.task not in {g.task for g in got.values() if g.experiment_name in done} \
            else c.experiment_name.removeprefix(f"{table.name}_")
        done.add(c.experiment_name)
        dirs = {f: [c.run_dir(s) for s in c.runs[f]] for f in table.families}
        refs = reference_levels([s for runs in c.runs.values() for s in runs]) \
            if table.curve_metric.endswith("acc") else {}  # accuracy levels, not on a perplexity axis
        p = val_curves(dirs, table.curve_metric, Path(out_dir) / f"{table.name}_{name}_val.png",
                       f"{table.name}: {c.experiment_name} ({c.task}, {c.budget})", refs)
        if p:
            out.append(p)
        p = lag_accuracy(c.runs, Path(out_dir) / f"{table.name}_{name}_lags.png",
                         f"{c.task}: test accuracy per lag ({c.budget})")
        if p:
            out.append(p)
    return out
