"""Training throughput of the real harness loop: what `sessa-bench train` runs (sessa_bench.train.run: the
Lightning Trainer, LitSequenceModel with its AdamW, the data module, the callbacks, gradient clipping 1.0),
at a bare-step shape of sessa_bench/bench/training.py, so `make bench` shows the loop beside the bare step.

The task is MQAR (fixed-length rows) at exactly the shape's vocabulary and length: the model sees seq_len
tokens per row, as the bare step sees idx[:, :-1]. The number is the run's own `Throughput` callback's
(sessa_bench/callbacks.py): with windows of `window` steps and its warm-up set to one window, the first
window (compilation, autotuning) is left out and the second is the timed one.

On CUDA each timed run is a child process (`python -m sessa_bench.bench.harness_loop`, `run_isolated`): one
CUDA error ends the process that hits it, and a `sessa-bench train` run is its own process in the real harness
too (lease 16, 2026-11-30: Sessa's and Mamba2's graphed harness loops at `small` hit an illegal memory access
that aborted the whole bench, losing every later row).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
from contextlib import redirect_stdout
from unittest import mock

import torch

N_PAIRS = 4  # MQAR memory size: the content does not matter for speed; small so that short rows fit it


def window(steps: int, warmup: int) -> int:
    """Steps per throughput window: the first window must hold the warm-up, the timed one >= steps; at
    least 2, so that the extra last step (see overrides) never ends a window."""
    return max(steps, warmup, 2)


MODES = {"eager": [], "compile": ["compile=true"], "cuda_graphs": ["cuda_graphs=true"]}


def overrides(family: str, shape: dict, mode: str, cuda: bool, steps: int, warmup: int,
              root: str) -> list[str]:
    """The `sessa-bench train` overrides of one timed run under the folder root."""
    w = window(steps, warmup)
    # Windows end at steps w and 2w. The step after them carries the end-of-fit validation and checkpoint
    # (AtomicCheckpoint runs before Throughput at a step, so at step 2w it would be inside the timed window).
    max_steps = 2 * w + 1
    batch = shape["batch"]
    return [
        f"model={family}", f"budget={shape['budget_name']}", "task=mqar",
        f"task.vocab_size={shape['vocab']}", f"task.seq_len={shape['seq_len']}", f"task.n_pairs=[{N_PAIRS}]",
        f"task.n_train={batch * max_steps}", f"task.n_val={batch}", f"task.n_test={batch}",
        f"trainer={'gpu' if cuda else 'cpu'}", f"trainer.max_steps={max_steps}",
        f"trainer.val_check_interval={max_steps}", f"trainer.log_every_n_steps={w}",
        "trainer.enable_progress_bar=false", f"callbacks.checkpoint.every_n_steps={max_steps}",
        f"callbacks.throughput.warmup={w}", f"data.batch_size={batch}", "logger=none", "probe=false",
        f"results_dir={root}/runs", "experiment_name=bench_loop", *MODES[mode],
    ]


def run_loop(family: str, shape: dict, mode: str, device: torch.device, steps: int, warmup: int) -> dict:
    """One `sessa-bench train` run at the shape (`overrides`); its summary. The run folder and the task cache
    live in a temporary folder, removed afterwards."""
    from sessa_bench.compose import compose_train  # Hydra and Lightning: imported when the loop runs
    from sessa_bench.train import run

    with tempfile.TemporaryDirectory(prefix="sessa-bench-loop-") as root, \
            mock.patch.dict(os.environ, {"SESSA_BENCH_CACHE": f"{root}/cache"}):  # restored on exit
        ov = overrides(family, shape, mode, device.type == "cuda", steps, warmup, root)
        with redirect_stdout(io.StringIO()):  # the run's parameter table and final metrics: not the bench's
            return run(compose_train(ov))


def harness_throughput(family: str, shape: dict, mode: str, device: torch.device, steps: int,
                       warmup: int, isolate: bool | None = None) -> dict:
    """Run the harness once for (family, shape, mode: a key of MODES) (`run_loop`); its tokens/s, MFU and
    parameter count. With isolate (default: on CUDA) the run is a child process (`run_isolated`)."""
    if isolate is None:
        isolate = device.type == "cuda"  # on CPU in-process: no CUDA error to contain, and tests can patch it
    if isolate:
        return run_isolated(family, shape, mode, device, steps, warmup)
    if mode == "compile":
        torch._dynamo.reset()  # a fresh compile, as the bare step's compiled rows get
    summary = run_loop(family, shape, mode, device, steps, warmup)
    if not summary["throughput_tokens_per_s"]:
        raise RuntimeError(f"the run reported no throughput (steps {summary['steps']})")
    return {"params": summary["params"]["total"], "tokens_per_s": summary["throughput_tokens_per_s"],
            "mfu": summary["mfu"], "timed_steps": window(steps, warmup), "steps": summary["steps"],
            "backends": ",".join(summary["backends"])}


MARK = "HARNESS_RESULT "  # the child's result line; Lightning and Hydra may print on stdout too


def child_argv(family: str, shape: dict, mode: str, device: torch.device, steps: int, warmup: int) -> list[str]:
    """The command line of one isolated run (`main`)."""
    return [sys.executable, "-m", "sessa_bench.bench.harness_loop", family, json.dumps(shape), mode,
            "--device", str(device), "--steps", str(steps), "--warmup", str(warmup)]


def exit_status(code: int) -> str:
    """A child's exit code in words: a negative one is the signal that ended it (-6, SIGABRT: a C++ abort,
    what a shell reports as 134)."""
    return f"{code} ({signal.Signals(-code).name})" if code < 0 else str(code)


def stderr_tail(stderr: str, n: int = 5) -> str:
    """The last n non-empty lines of a child's stderr, without C++ stack frames (a c10 error prints dozens,
    after its message), after the innermost Python frame of its traceback (where the error surfaced: the CUDA
    error of leases 16 and 18 printed only CUDA's advice in its last lines)."""
    lines = [line.strip() for line in stderr.splitlines()]
    tail = [line for line in lines if line and not line.startswith("frame #")][-n:]
    frames = [line for line in lines if line.startswith('File "')]
    return " | ".join(([f"at {frames[-1]}"] if frames and frames[-1] not in tail else []) + tail)


def run_isolated(family: str, shape: dict, mode: str, device: torch.device, steps: int, warmup: int) -> dict:
    """`harness_throughput` in a child process with this one's environment and folder; a child that fails
    or prints no result raises with its exit status and the end of its stderr (the row records it)."""
    proc = subprocess.run(child_argv(family, shape, mode, device, steps, warmup), capture_output=True, text=True)
    found = [line[len(MARK):] for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode or not found:
        why = exit_status(proc.returncode) if proc.returncode else "0 without a result"
        raise RuntimeError(f"the harness-loop child exited with {why}: {stderr_tail(proc.stderr) or '(no stderr)'}")
    return json.loads(found[-1])


def main(argv: list[str] | None = None) -> None:
    """The child of `run_isolated`: one in-process run; its result as one MARK line on stdout."""
    ap = argparse.ArgumentParser(description="One harness-loop run (the child of run_isolated).")
    ap.add_argument("family")
    ap.add_argument("shape", type=json.loads, help="JSON: budget_name, vocab, seq_len, batch")
    ap.add_argument("mode", choices=list(MODES))
    ap.add_argument("--device", required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    a = ap.parse_args(argv)
    result = harness_throughput(a.family, a.shape, a.mode, torch.device(a.device), a.steps, a.warmup, isolate=False)
    print(MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    with user_errors("python -m sessa_bench.bench.harness_loop"):  # a bad argument: one line for the row
        main()
