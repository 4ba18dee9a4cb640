"""Run a command while sampling every GPU's utilisation, then say how busy each GPU was (issue 15):

    PYTHONPATH=. python3 scripts/gpu_busy.py --log $OUT/gpu_util.csv -- \
        python3 -m sessa_bench.tables table1 --run --jobs 4 --results-dir $OUT/runs trainer.max_steps=300

Samples `nvidia-smi --query-gpu=index,utilization.gpu --format=csv,noheader,nounits` every --interval
seconds into --log (time, gpu, percent), and prints per GPU the mean utilisation and the share of samples
above --busy percent, over the samples after --skip seconds (start-up and data building). Exits with the
command's status, or 3 when --min-busy is given and some GPU was busy for less than that share.
`--fake-smi` replaces nvidia-smi by a shell command printing the same CSV (tests/test_gpu_busy.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

SMI = "nvidia-smi --query-gpu=index,utilization.gpu --format=csv,noheader,nounits"


def sample(smi: str) -> list[tuple[str, float]]:
    out = subprocess.run(smi, shell=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        if "," in line:
            gpu, util = (x.strip() for x in line.split(",", 1))
            rows.append((gpu, float(util)))
    return rows


def summarise(rows: list[tuple[float, str, float]], skip: float, busy: float) -> dict[str, dict]:
    """Per GPU: samples, mean utilisation and share of samples above `busy`, after `skip` seconds."""
    per = defaultdict(list)
    for t, gpu, util in rows:
        if t >= skip:
            per[gpu].append(util)
    return {gpu: {"samples": len(u), "mean": sum(u) / len(u), "busy_share": sum(x > busy for x in u) / len(u)}
            for gpu, u in sorted(per.items())}


def run_for(cmd: list[str], timeout: float | None) -> int:
    """Run cmd in its own process group; past `timeout` seconds, TERM then KILL the group (exit 124)."""
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        print(f"stopped after {timeout:g} s", flush=True)
        return 124


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", required=True, help="CSV of the samples (seconds, gpu, utilisation %%)")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--skip", type=float, default=60.0, help="seconds of start-up left out of the summary")
    ap.add_argument("--busy", type=float, default=10.0, help="utilisation %% that counts as busy")
    ap.add_argument("--min-busy", type=float, help="fail (exit 3) when a GPU is busy for less than this share")
    ap.add_argument("--timeout", type=float, help="stop the command (its whole process group: the workers too) "
                    "after this many seconds and still summarise; exit 124 then. Runs resume when started again")
    ap.add_argument("--fake-smi", default=SMI, help=argparse.SUPPRESS)
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run")
    args = ap.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("give the command to run after --")
    rows: list[tuple[float, str, float]] = []
    stop = threading.Event()
    t0 = time.time()

    def loop():
        while not stop.is_set():
            rows.extend((time.time() - t0, g, u) for g, u in sample(args.fake_smi))
            stop.wait(args.interval)

    sampler = threading.Thread(target=loop, daemon=True)
    sampler.start()
    rc = run_for(cmd, args.timeout)
    stop.set()
    sampler.join()
    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("seconds,gpu,utilization\n" + "".join(f"{t:.1f},{g},{u:g}\n" for t, g, u in rows))
    summary = summarise(rows, args.skip, args.busy)
    print(f"GPU utilisation after the first {args.skip:g} s (command exit {rc}, {time.time() - t0:.0f} s):")
    for gpu, s in summary.items():
        print(f"  gpu {gpu}: mean {s['mean']:.0f} %, busy (> {args.busy:g} %) {s['busy_share']:.0%} of "
              f"{s['samples']} samples")
    if rc:
        return rc
    if args.min_busy is not None and (not summary or min(s["busy_share"] for s in summary.values()) < args.min_busy):
        print(f"FAIL: some GPU was busy for less than {args.min_busy:.0%} of the time")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
