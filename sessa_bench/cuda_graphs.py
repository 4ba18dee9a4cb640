"""CUDA graphs for training (`cuda_graphs=true`): each block's forward and backward captured once and replayed.

The paper-table models (20M parameters, 600-token rows) are launch-bound on an H200: a step of a few
milliseconds of kernels takes ~80 ms of Python and kernel launches (results/bench/nvidia-h200-small.md:
MFU 0.04). `torch.cuda.make_graphed_callables` records the kernels that a block's eager forward and backward
launch and replays them with one launch each: the same kernels on the same memory, so the numbers are eager's
(no compiler involved, unlike torch.compile, whose graph was wrong on the H200: compile_check.py).

All blocks are captured together at the first training forward on CUDA (before any other graph of their
parameters: a live one, whose gradient accumulators sit on the default stream, breaks the capture; so
compile_check.compare runs this pass before the eager one), with that batch's activation shape
(one capture per run: a fixed batch shape, which the data module's fixed_length gives every full batch), in
one memory pool (forwards in order, backwards in reverse, as the model runs them). A call that does not match
the capture (another shape, the last partial batch of an epoch, eval mode, no grad, a decode cache, another
autocast setting) runs the block eagerly. Replays overwrite the blocks' outputs and gradient buffers in place,
so one forward and one backward per optimizer step: gradient accumulation and DDP are refused by the caller.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def enabled(cfg) -> bool:
    """Whether a run of `cfg` (a config or resolved config dict) trains in CUDA graphs: `cuda_graphs: true`, or
    `auto` where they apply: one CUDA GPU (trainer=gpu, and one is visible: sessa_bench.runs.visible_gpus,
    so `CUDA_VISIBLE_DEVICES=0 ... --plan` on a machine without GPUs plans graphed runs as the GPU machine will
    train them), not compiled, no gradient accumulation. The paper-table experiments say `auto`, so they
    replay on a GPU and still run on a CPU."""
    from sessa_bench.runs import visible_gpus

    value = cfg.get("cuda_graphs", False)
    if value != "auto":
        return value is True
    trainer = cfg.get("trainer") or {}
    return (trainer.get("accelerator") in ("gpu", "cuda") and trainer.get("devices") == 1
            and not cfg.get("compile", False) and (trainer.get("accumulate_grad_batches") or 1) == 1
            and bool(visible_gpus()))


class CaptureError(RuntimeError):
    """The blocks' forward or backward could not be captured in a CUDA graph (a host sync, say)."""


class GraphedBlocks:
    """Installs itself on `blocks` (a ModuleList): each block's forward dispatches to its graph or to eager.
    `info()` says what was captured; `eager()` is a context that runs every block eagerly (the first-batch
    check of sessa_bench/compile_check.py compares the two). device_type: where activations are captured
    (CUDA; the CPU tests give "cpu" with a stand-in for make_graphed_callables)."""

    def __init__(self, blocks: nn.ModuleList, warmup: int = 3, device_type: str = "cuda"):
        self.blocks, self.warmup, self.device_type = blocks, warmup, device_type
        self.key = None  # (shape, dtype, device, requires_grad, autocast state) of the capture
        self.graphed: list = []  # per block: make_graphed_callables' forward
        self.force_eager = False
        self.capturing = False
        for i, block in enumerate(blocks):
            block.forward = self._dispatch(i, block, type(block).forward.__get__(block))

    def _autocast(self) -> tuple:
        return (torch.is_autocast_enabled(self.device_type), torch.get_autocast_dtype(self.device_type))

    def _key(self, x: torch.Tensor) -> tuple:
        return (tuple(x.shape), x.dtype, x.device, x.requires_grad, self._autocast())

    def _dispatch(self, i: int, block: nn.Module, eager):
        def forward(x, cache=None, pos=None):
            if (self.force_eager or self.capturing or cache is not None or pos is not None
                    or x.device.type != self.device_type
                    or not block.training or not torch.is_grad_enabled()):
                return eager(x, cache, pos)
            if self.key is None:
                if i != 0:  # the capture starts at the first block, with the activations it receives
                    return eager(x, cache, pos)
                self.capture(x)
            if self._key(x) != self.key:
                return eager(x, cache, pos)
            return self.graphed[i](x)
        return forward

    def capture(self, x: torch.Tensor) -> None:
        """Capture every block at x's shape (the residual stream has one shape and dtype through the blocks).
        Autocast's weight-cast cache must be off while capturing (a cached cast would be a stale copy of the
        weights at replay); the cast kernels are captured instead and read the updated weights each step."""
        amp, dtype = self._autocast()
        samples = tuple((x.detach().clone().requires_grad_(x.requires_grad),) for _ in self.blocks)
        forwards = [b.forward for b in self.blocks]
        self.capturing = True
        try:
            with torch.autocast(self.device_type, dtype=dtype, enabled=amp, cache_enabled=False) if amp \
                    else contextlib.nullcontext():
                torch.cuda.make_graphed_callables(tuple(self.blocks), samples, num_warmup_iters=self.warmup,
                                                  allow_unused_input=True)
            # make_graphed_callables replaced each forward by its own (the graph when the training flag
            # matches the capture's, else the forward it found): keep it, and put the dispatch back in front.
            graphed = [b.forward for b in self.blocks]
        except Exception as e:  # noqa: BLE001 - turned into one line for the user
            first = e  # the error that broke the capture, not the "previous error during capture" of its end
            while first.__context__ is not None:
                first = first.__context__
            raise CaptureError(f"cuda_graphs=true: the blocks could not be captured in a CUDA graph "
                               f"({type(first).__name__}: {str(first).splitlines()[0] if str(first) else ''}); "
                               f"train with cuda_graphs=false") from e
        finally:
            self.capturing = False
            for b, f in zip(self.blocks, forwards):
                b.forward = f
        self.graphed = graphed
        self.key = self._key(x)

    @contextlib.contextmanager
    def eager(self):
        prev, self.force_eager = self.force_eager, True
        try:
            yield
        finally:
            self.force_eager = prev

    def info(self) -> dict:
        return {"captured": self.key is not None, "shape": list(self.key[0]) if self.key else None,
                "dtype": str(self.key[1]) if self.key else None,
                "autocast": str(self.key[4][1]) if self.key and self.key[4][0] else None,
                "blocks": len(self.blocks)}
