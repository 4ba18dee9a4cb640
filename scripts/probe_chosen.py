"""Probe the memory tail of a paper table's chosen runs, on the machine that holds their checkpoints:

    python3 scripts/probe_chosen.py RESULTS_DIR [--table table1] [--experiments E ...] [--seeds S ...]
                                    [--max-seconds 120] [--device auto] [overrides ...]

For every experiment and family of the table, the run at the family's chosen learning rate (the protocol's
selection, read from the run folders) and each of --seeds (default the tables': each
experiment's sweep.seeds, else 0 1): when it is finished, has
no probe.json of its own yet (none, or one of the shorter run it was extended from) and its reported checkpoint
is on this machine, `sessa-bench probe` runs on it (the same settings as a run's own end-of-training probe)
and writes <run folder>/probe.json. A GPU lease trains its sweep with probe=false (run-independent) and
probes only these runs afterwards: the sweep's other runs are never tabulated, and each probe costs up to
--max-seconds. The overrides are the table's (the same as `sessa_bench.tables`, `<experiment>:<override>`
scoped), so the runs found are the ones it trained. One line per run; a failure is one line, the next goes
on. A run trained on another machine (its folder came with the committed ones; checkpoints never leave a GPU
machine) is skipped with one line, not counted as a failure: a lease probes the runs it trained, whichever
seed they are.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sessa_bench.probe import TRAINED, device_arg, probe_run, summary_line  # noqa: E402
from sessa_bench.report.paper import TABLES, experiments  # noqa: E402
from sessa_bench.report.protocol import cell  # noqa: E402
from sessa_bench.run_folder import RunFolder  # noqa: E402
from sessa_bench.tables import split_overrides  # noqa: E402


def chosen_runs(results_dir: str, table: str, only: list[str] | None, seeds: list[int] | None,
                overrides: list[str] = ()) -> list[Path]:
    """Folders of the finished runs at each family's chosen rate, for the given seeds (None: the tables')."""
    t = TABLES[table]
    names = [e for e in experiments(t) if not only or e in only]
    scoped = split_overrides([*overrides, f"results_dir={results_dir}"], names)
    out = []
    for e in names:
        for f in t.families:
            c = cell(e, f, scoped[e], t.curve_metric)
            lr = c.selection()[0]
            if lr is None:
                print(f"{e} {f}: no rate chosen yet (the sweep is unfinished)", flush=True)
                continue
            out += [r.folder.path for r in c.reported(lr, seeds)]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results_dir")
    ap.add_argument("--table", default="table1", choices=sorted(TABLES))
    ap.add_argument("--experiments", nargs="+", default=None)
    ap.add_argument("--seeds", nargs="+", type=int, help="default: each experiment's sweep.seeds, else 0 1")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="time budget of each probe (default 120)")
    ap.add_argument("--device", default="auto", type=device_arg, help="auto, cpu, cuda or cuda:N (default auto)")
    ap.add_argument("overrides", nargs="*", help="the table's Hydra overrides")
    args = ap.parse_intermixed_args(argv)  # overrides may follow options
    failed = 0
    for path in chosen_runs(args.results_dir, args.table, args.experiments, args.seeds, args.overrides):
        folder = RunFolder(path)
        if folder.probe_current():
            print(f"{path.name}: has probe.json", flush=True)
            continue
        ckpt = folder.reported()[0]
        if not ckpt.exists():
            print(f"{path.name}: no {ckpt.name} on this machine (trained elsewhere): not probed", flush=True)
            continue
        if folder.probe.exists():  # it measured the model before an extension, or other weights: measure this one
            print(f"{path.name}: probe.json is of another model than the run reports (step count or best/last "
                  f"weights); probing again", flush=True)
        try:
            _, result = probe_run(path, device=args.device, **TRAINED, max_seconds=args.max_seconds)
        except Exception as e:  # noqa: BLE001 - one line per run, the next goes on
            print(f"{path.name}: no probe.json: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
            failed += 1
            continue
        print(f"{path.name}: {result['seconds']} s; {summary_line(result)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
