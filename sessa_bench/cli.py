"""`sessa-bench` command: train | eval | params | demo | probe | report. Each forwards to its module's main."""

from __future__ import annotations

import sys

USAGE = """usage: sessa-bench <command> [args]

  train  [hydra overrides]        train one run (or -m for a multirun), e.g. model=mamba2 budget=small
  eval   RUN_DIR [--split test] [--lengths 1 2 4]
  params [--budget small] [--vocab 4096] [--seq-len 2048]
  demo   [hydra overrides]        the CPU comparison of all three families (results/demo.md)
  probe  RUN_DIR [--init] [--lags 1 2 4 ...] [--n-examples 4]   memory tail -> RUN_DIR/probe.json
  report demo                     rebuild a table from run folders
  wandb sync PATH [--dry-run]     upload the offline W&B runs under PATH (already synced ones skipped)
  wandb dashboard --project P [--entity E] [--dry-run OUT.json]   W&B workspace + a report per paper table
  dashboard [results/runs] [--out results/dashboard.html]         the same dashboard as one offline HTML page
"""


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    try:
        dispatch(cmd, rest)
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # bad input: one line, no traceback
        sys.exit(f"sessa-bench {cmd}: error: {e}")


def dispatch(cmd: str, rest: list[str]) -> None:
    if cmd == "train":
        from sessa_bench import train
        sys.argv = ["sessa-bench train", *rest]  # Hydra reads sys.argv
        train.main()
    elif cmd == "eval":
        from sessa_bench.evaluate import main as m
        m(rest)
    elif cmd == "params":
        from sessa_bench.budget import main as m
        m(rest)
    elif cmd == "demo":
        from sessa_bench.demo import main as m
        m(rest)
    elif cmd == "probe":
        from sessa_bench.probe import main as m
        m(rest)
    elif cmd == "report":
        from sessa_bench.report.demo import main as m
        m(rest)
    elif cmd == "wandb" and rest[:1] == ["sync"]:
        from sessa_bench.wandb_sync import main as m
        m(rest[1:])
    elif cmd == "wandb" and rest[:1] == ["dashboard"]:
        from sessa_bench.wandb_dashboard import main as m
        m(rest[1:])
    elif cmd == "dashboard":
        from sessa_bench.dashboard.page import main as m
        m(rest)
    else:
        sys.exit(f"sessa-bench: unknown command {cmd!r}\n{USAGE}")


if __name__ == "__main__":
    main()
