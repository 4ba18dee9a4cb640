"""Training throughput of the real harness loop: what `sessa-bench train` runs (sessa_bench.train.run: the
Lightning Trainer, LitSequenceModel with its AdamW, the data module, the callbacks, gradient clipping 1.0),
at a bare-step shape of sessa_bench/bench/training.py, so `make bench` shows the loop beside the bare step.

The task is MQAR (fixed-length rows) at exactly the shape's vocabulary and length: the model sees seq_len
tokens per row, as the bare step sees idx[:, :-1]. The number is the run's own `Throughput` callback's
(sessa_bench/callbacks.py): with windows of `window` steps and its warm-up set to one window, the first
window (compilation, autotuning) is left out and the second is the timed one.
"""

from __future__ import annotations

import io
import os
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
                       warmup: int) -> dict:
    """Run the harness once for (family, shape, mode: a key of MODES) (`run_loop`); its tokens/s, MFU and
    parameter count."""
    if mode == "compile":
        torch._dynamo.reset()  # a fresh compile, as the bare step's compiled rows get
    summary = run_loop(family, shape, mode, device, steps, warmup)
    if not summary["throughput_tokens_per_s"]:
        raise RuntimeError(f"the run reported no throughput (steps {summary['steps']})")
    return {"params": summary["params"]["total"], "tokens_per_s": summary["throughput_tokens_per_s"],
            "mfu": summary["mfu"], "timed_steps": window(steps, warmup), "steps": summary["steps"],
            "backends": ",".join(summary["backends"])}
