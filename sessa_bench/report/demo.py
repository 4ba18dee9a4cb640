"""The demo table (`make demo`): tiny-budget families on a short SymbolSoup, from run folders only.

    python -m sessa_bench.report.demo [--results-dir results/runs]     # results/demo.md
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

from sessa_bench.files import atomic_write_text
from sessa_bench.report.collect import collect
from sessa_bench.report.markdown import aggregate, device, md_table, mean_std


def caption(summaries: list[dict]) -> str:
    commits = sorted({s["git_commit"] for s in summaries})
    hw = sorted({device(s) for s in summaries})
    return f"commit {', '.join(commits)}; hardware {', '.join(hw)}; torch {summaries[0]['hardware']['torch']}"


def demo_table(summaries: list[dict], metric: str = "val/acc") -> str:
    rows = []
    for fam in sorted({s["family"] for s in summaries}):
        runs = [s for s in summaries if s["family"] == fam]
        tps = [s["throughput_tokens_per_s"] for s in runs if s["throughput_tokens_per_s"]]
        rows.append([fam, f"{runs[0]['params']['total']:,}", runs[0]["steps"],
                     mean_std(aggregate([s["final"][metric] for s in runs]), missing="n/a"),
                     mean_std(aggregate([s["final"]["val/loss"] for s in runs]), missing="n/a"),
                     mean_std(aggregate([s["final"].get("test/acc", float("nan")) for s in runs]), missing="n/a"),
                     f"{statistics.mean(tps):,.0f}" if tps else "n/a", len(runs)])
    return md_table(["family", "params", "steps", metric, "val/loss", "test/acc", "train tokens/s", "seeds"], rows)


def references(facts: dict) -> str:
    """The task's own yardsticks at the demo's lengths, where its runs' facts hold them (older runs may not)."""
    out = ""
    if facts.get("baseline") is not None:
        out += f"; naive Bayes on symbol counts reaches {facts['baseline']:.2f} on the test split"
    if facts.get("ceiling") is not None:
        out += f"; the Bayes ceiling is {facts['ceiling']:.2f}"
    return out


def write_demo(results_dir: str | Path = "results/runs", out: str | Path = "results/demo.md") -> str:
    summaries = collect(results_dir, "demo")
    if not summaries:
        raise FileNotFoundError(f"no finished runs under {Path(results_dir) / 'demo'}; run `make demo`")
    s0 = summaries[0]
    facts = s0["task_facts"]
    text = (f"# Demo: tiny budget on SymbolSoup (CPU)\n\n"
            f"Task `{s0['task']}`, budget `{s0['budget']}` (~{s0['params']['target']:,} parameters), "
            f"{s0['steps']} steps of batch {s0['batch_size']}, sequences up to {s0['seq_len']} tokens; "
            f"chance accuracy is {facts['chance']:.2f} (loss ln {facts['num_classes']} = "
            f"{math.log(facts['num_classes']):.3f}){references(facts)}.\n\n{demo_table(summaries)}\n\n"
            f"_{caption(summaries)}. Built by `make demo` (python -m sessa_bench.demo) from results/runs/demo/._\n")
    atomic_write_text(Path(out), text)
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description="build the demo table from run folders")
    ap.add_argument("--results-dir", default="results/runs")
    ap.add_argument("--out", default="results/demo.md")
    args = ap.parse_args(argv)
    print(write_demo(args.results_dir, args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    with user_errors("python -m sessa_bench.report.demo"):
        main()
