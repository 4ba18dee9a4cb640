"""Tables built only from run folders (DESIGN section 6): mean +/- std over seeds per family, with the
commit and hardware in the caption. Files are written atomically.

    python -m sessa_bench.report demo        # results/demo.md from results/runs/demo/*
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from omegaconf import OmegaConf

from sessa_bench.run_folder import RunFolder, atomic_write_text


def run_task_config(run_dir: str | Path) -> dict:
    """The `task` section of a run folder's config.yaml ({} when the folder has none)."""
    path = Path(run_dir) / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(path)).get("task", {}) if path.exists() else {}


def collect(results_dir: str | Path, experiment: str) -> list[dict]:
    root = Path(results_dir) / experiment
    runs = [RunFolder(p) for p in sorted(root.glob("*")) if p.is_dir()]
    return [r.read_summary() for r in runs if r.is_finished()]


def mean_std(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def caption(summaries: list[dict]) -> str:
    commits = sorted({s["git_commit"] for s in summaries})
    hw = sorted({(s["hardware"].get("gpu") or f"CPU x{s['hardware'].get('cpu_count')}") for s in summaries})
    return f"commit {', '.join(commits)}; hardware {', '.join(hw)}; torch {summaries[0]['hardware']['torch']}"


def demo_table(summaries: list[dict], metric: str = "val/acc") -> str:
    lines = [f"| family | params | steps | {metric} | val/loss | test/acc | train tokens/s | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for fam in sorted({s["family"] for s in summaries}):
        runs = [s for s in summaries if s["family"] == fam]
        tps = [s["throughput_tokens_per_s"] for s in runs if s["throughput_tokens_per_s"]]
        tps_text = f"{statistics.mean(tps):,.0f}" if tps else "n/a"
        lines.append(f"| {fam} | {runs[0]['params']['total']:,} | {runs[0]['steps']} | "
                     f"{mean_std([s['final'][metric] for s in runs])} | "
                     f"{mean_std([s['final']['val/loss'] for s in runs])} | "
                     f"{mean_std([s['final'].get('test/acc', float('nan')) for s in runs])} | "
                     f"{tps_text} | {len(runs)} |")
    return "\n".join(lines)


def write_demo(results_dir: str | Path = "results/runs", out: str | Path = "results/demo.md") -> str:
    summaries = collect(results_dir, "demo")
    if not summaries:
        raise FileNotFoundError(f"no finished runs under {Path(results_dir) / 'demo'}; run `make demo`")
    s0 = summaries[0]
    text = (f"# Demo: tiny budget on SymbolSoup (CPU)\n\n"
            f"Task `{s0['task']}`, budget `{s0['budget']}` (~{s0['params']['target']:,} parameters), "
            f"{s0['steps']} steps of batch {s0['batch_size']}, sequences up to {s0['seq_len']} tokens; "
            f"chance accuracy is 0.05 (loss ln 20 = 2.996).\n\n{demo_table(summaries)}\n\n"
            f"_{caption(summaries)}. Built by `make demo` (python -m sessa_bench.demo) from results/runs/demo/._\n")
    atomic_write_text(Path(out), text)
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description="build result tables from run folders")
    ap.add_argument("table", choices=["demo"])
    ap.add_argument("--results-dir", default="results/runs")
    args = ap.parse_args(argv)
    print(write_demo(args.results_dir))


if __name__ == "__main__":
    main()
