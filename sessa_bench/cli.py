"""`sessa-bench` command: train | eval | params | demo | probe | report. Each forwards to its module's main.
Bad input ends in one line on stderr and exit code 2 (sessa_bench/errors.py; SESSA_BENCH_DEBUG=1 for the
traceback)."""

from __future__ import annotations

import sys

from sessa_bench.errors import UsageError, user_errors

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

A user error ends in one line (exit code 2); SESSA_BENCH_DEBUG=1 shows the traceback.
"""
COMMANDS = ("train", "eval", "params", "demo", "probe", "report", "wandb", "dashboard")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    with user_errors(f"sessa-bench {cmd}" if cmd in COMMANDS else "sessa-bench"):
        dispatch(cmd, rest)


def dispatch(cmd: str, rest: list[str]) -> None:
    if cmd == "train":
        from sessa_bench import train
        sys.argv = ["sessa-bench train", *rest]  # Hydra reads sys.argv
        train.main()
        train.raise_failures()
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
        if rest[:1] != ["demo"]:
            raise UsageError(f"report: which report? one of: demo (got {' '.join(rest) or 'nothing'})")
        from sessa_bench.report.demo import main as m
        m(rest[1:])
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
        raise UsageError(f"unknown command {cmd!r}; one of {', '.join(COMMANDS)} (sessa-bench --help)")


if __name__ == "__main__":
    main()
