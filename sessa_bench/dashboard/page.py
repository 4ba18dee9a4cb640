"""`sessa-bench dashboard [results/runs] [--out results/dashboard.html]`: the W&B dashboard's sections
(sessa_bench.dashboard.spec) as one self-contained HTML page: plotly.js inlined, the runs' data embedded,
no network and no server. Filters by experiment, family, seed and rate redraw every panel and table in the
browser; by default only the runs the paper tables report are on (the seeds at each family's chosen learning
rate: sessa_bench.report.protocol), the other runs (the sweep's other rates, shorter runs) one click away.
Reads only run folders (summary.json, metrics.jsonl).
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

from sessa_bench.dashboard.spec import (CHOSEN, OTHER, Chosen, Section, Undecided, at_chosen_rate, chosen_rates,
                                        experiment_name, sections)
from sessa_bench.report.collect import collect
from sessa_bench.files import atomic_write_text
from sessa_bench.report.paper import experiments
from sessa_bench.run_folder import RunFolder

SCRIPT = (Path(__file__).parent / "page.js").read_text


def run_record(results_dir: Path, summary: dict, curve_metrics: set[str],
               chosen: Chosen | Undecided | float | None) -> dict:
    """What the page needs of one run: identity, whether the paper table counts it (`other runs` when the
    protocol chose another rate for its experiment and family, or leaves the run out; a run of a cell without
    a finished sweep counts as chosen), final metrics,
    throughput and its validation curves."""
    # its training's lines: a best checkpoint's final evaluation, logged at the last step, is no curve point
    rows = RunFolder(results_dir / summary["experiment"] / summary["run_name"]).fit_metrics(summary)
    curves = {m: [[int(r["step"]), float(r[m])] for r in rows if m in r and "step" in r] for m in curve_metrics}
    counted = isinstance(chosen, Chosen) and summary["run_name"] in chosen.runs
    return {"experiment": summary["experiment"], "run": summary["run_name"], "family": summary["family"],
            "seed": summary["seed"], "task": summary["task"], "budget": summary["budget"],
            "lr": summary.get("optim", {}).get("lr"), "rate": CHOSEN if at_chosen_rate(summary, chosen) else OTHER,
            # a run the paper table counts: whether the protocol counts it as converged (the table's `*`)
            "converged": summary["run_name"] not in chosen.unconverged if counted else None,
            "final": summary["final"], "throughput_tokens_per_s": summary.get("throughput_tokens_per_s"),
            "curves": curves}


def page_data(results_dir: str | Path) -> dict:
    results_dir = Path(results_dir)
    secs = sections(results_dir)
    curves: dict[str, set[str]] = {}    # experiment -> the metrics its curve panels plot
    families: dict[str, set[str]] = {}  # experiment -> the families its panels show
    for s in secs:
        for p in s.panels:
            curves.setdefault(p.experiment, set()).update(p.metrics if p.kind == "curve" else ())
            families.setdefault(p.experiment, set()).update(p.families)
    found = [(exp, summary) for exp in sorted(curves) for summary in collect(results_dir, exp)
             if summary["family"] in families[exp]]
    chosen = chosen_rates(results_dir, {(exp, s["family"]) for exp, s in found})
    runs = [run_record(results_dir, s, curves[exp], chosen.get((exp, s["family"]))) for exp, s in found]
    # the seeds each cell with a chosen rate asks for (the table's `(k of n seeds)`), keyed "experiment|family"
    asked = {f"{exp}|{fam}": c.asked for (exp, fam), c in chosen.items() if isinstance(c, Chosen)}
    # what an empty cell of a sweep under way says instead of "not run" (`sweep: k of n rates`)
    undecided = {f"{exp}|{fam}": c.text for (exp, fam), c in chosen.items() if isinstance(c, Undecided)}
    return {"sections": [section_json(s) for s in secs], "runs": runs, "source": str(results_dir),
            "rates": {"chosen": CHOSEN, "other": OTHER}, "asked": asked,  # rates: the rate filter's values
            "undecided": undecided}


def section_json(s: Section) -> dict:
    t = s.table
    names = {exp: experiment_name(exp) for exp in experiments(t)}
    return {"name": t.name, "title": t.title, "families": list(t.families),
            "columns": [{"title": c.title, "experiment": names[c.experiment], "metric": c.metric,
                         "percent": c.percent, "digits": c.digits} for c in t.columns],
            "paper": {f: [list(v) if v else None for v in t.paper[f]] for f in t.families},
            "panels": [{"kind": p.kind, "title": p.title, "experiment": p.experiment, "metrics": list(p.metrics),
                        "families": list(p.families)} for p in s.panels]}


def render(data: dict) -> str:
    from plotly.offline import get_plotlyjs
    payload = json.dumps(data, sort_keys=True).replace("</", "<\\/")  # no "</script>" inside the data
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sessa-bench dashboard</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }}
#filters {{ display: flex; gap: 2em; flex-wrap: wrap; background: #f6f6f6; padding: .6em 1em; }}
#filters fieldset {{ border: none; margin: 0; padding: 0; }} #filters legend {{ font-weight: 600; }}
#filters label {{ margin-right: .8em; white-space: nowrap; }}
table {{ border-collapse: collapse; margin: .6em 0; font-size: .9em; }}
td, th {{ border: 1px solid #ccc; padding: .25em .6em; text-align: right; }} td:first-child {{ text-align: left; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: .8em; }}
.panel {{ height: 330px; border: 1px solid #e3e3e3; }}
.note {{ color: #666; font-size: .85em; }}
</style></head><body>
<h1>sessa-bench: Sessa vs Transformer vs Mamba2</h1>
<p class="note">Built by <code>sessa-bench dashboard</code> from the run folders under <code>{html.escape(data['source'])}</code>
(summary.json, metrics.jsonl); the same sections as <code>sessa-bench wandb dashboard</code>. Ours: mean ± std over
the selected runs (by default the seeds at each family's chosen learning rate, as in the paper tables; tick
"other runs" to add the sweep's other rates and the runs the tables leave out); paper: arXiv 2604.18580 (mean ± std over 2 seeds).</p>
<div id="filters"></div><div id="sections"></div>
<script>{get_plotlyjs()}</script>
<script id="dashboard-data" type="application/json">{payload}</script>
<script>{SCRIPT()}</script>
</body></html>
"""


def build(results_dir: str | Path, out: str | Path) -> Path:
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"{results_dir}: no such folder of run folders (results/runs/<experiment>/<run>)")
    return atomic_write_text(out, render(page_data(results_dir)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="sessa-bench dashboard", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", default="results/runs", help="folder of experiment folders")
    ap.add_argument("--out", default="results/dashboard.html")
    args = ap.parse_args(argv)
    path = build(args.results, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    with user_errors("python -m sessa_bench.dashboard.page"):
        main()
