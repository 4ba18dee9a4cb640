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

Evaluation (no grad: validation, test) replays graphs of its own, once training is captured: at the first
no-grad forward of an activation shape (at most EVAL_SHAPES of them: the val and test splits' fixed
lengths), every block's forward is captured in order in one CUDA graph each, block i+1 reading block i's
static output, so a replay costs one copy of the embeddings and one launch per block. Mamba2's eager
validations were ~48 ms a batch, host-bound (results/bench/nvidia-h200-mamba2-speed-ab.md). The replay is
checked against the eager forward of the same batch at the capture and again at the first no-grad batch
after any training forward (so each validation's first batch checks that the replays read the weights the
optimizer just wrote); a capture that fails or a check that disagrees turns eval graphs off for the run,
with one line, and evaluation runs eagerly as before (as it does throughout with SESSA_BENCH_EVAL_GRAPHS=0
in the environment). A forward with grad in eval mode (the memory-tail probe) and calls with a decode cache
run eagerly.

A graph reads the memory its kernels were captured with, so the blocks' parameters must stay where they were.
Lightning's teardown after `fit` moves the model to the CPU and empties the CUDA cache, and the validation and
test that follow move it back into new memory: eval graphs captured during fit would then read freed memory
(the bench's graphed loop at `small` died of an illegal memory access there, leases 16 and 18) or, where the
allocator happened to hand back the same addresses, the right weights by luck (every committed graphed run:
its validation after fit equals its best validation during fit). So each capture records the parameters' and
buffers' addresses; an eval call that finds them moved drops its graphs and captures again (checked against
eager as always), and a training call runs eagerly from then on, with one line.
"""

from __future__ import annotations

import contextlib
import os

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


EVAL_SHAPES = 2  # no-grad activation shapes captured per run (the val and the test split's); others: eager


def graph_forward(fn, static_in: torch.Tensor, pool, warmup: int):
    """Capture fn(static_in) in a CUDA graph (after `warmup` eager calls on a side stream, as torch.cuda.graph
    asks): returns (replay, static output). Replaced in the CPU tests by a stand-in with this contract."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = fn(static_in)
    return graph.replay, out


def new_pool():
    return torch.cuda.graph_pool_handle() if torch.cuda.is_available() else None


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
        self.eval_graphs: dict = {}  # no-grad key -> per block (replay, static input, static output)
        # why eval graphs are off (None: on); SESSA_BENCH_EVAL_GRAPHS=0 turns them off from the start
        off = os.environ.get("SESSA_BENCH_EVAL_GRAPHS") == "0"
        self.eval_off: str | None = "SESSA_BENCH_EVAL_GRAPHS=0" if off else None
        self.eval_pool = None
        self.check_eval = False  # set by training forwards: the next eval replay is checked against eager
        # each block's own (eager) forward, bound before the dispatch replaces it: the eager path, and what the
        # eval captures record and their checks compare with
        self.eager_forwards = [type(block).forward.__get__(block) for block in blocks]
        self.train_ptrs = self.eval_ptrs = None  # the memory the training / eval graphs read (see the docstring)
        self.train_moved = False  # the parameters moved after the training capture: training runs eagerly
        for i, block in enumerate(blocks):
            block.forward = self._dispatch(i, block, self.eager_forwards[i])

    def _autocast(self) -> tuple:
        return (torch.is_autocast_enabled(self.device_type), torch.get_autocast_dtype(self.device_type))

    def _uncached_autocast(self):
        """The current autocast setting with its weight-cast cache off (why: `capture`), for the captures and
        the eager pass an eval replay is checked against; a null context without autocast."""
        amp, dtype = self._autocast()
        return (torch.autocast(self.device_type, dtype=dtype, enabled=True, cache_enabled=False) if amp
                else contextlib.nullcontext())

    def _key(self, x: torch.Tensor) -> tuple:
        return (tuple(x.shape), x.dtype, x.device, x.requires_grad, self._autocast())

    def _dispatch(self, i: int, block: nn.Module, eager):
        def forward(x, cache=None, pos=None):
            if (self.force_eager or self.capturing or cache is not None or pos is not None
                    or x.device.type != self.device_type):
                return eager(x, cache, pos)
            if not torch.is_grad_enabled():
                return self._eval(i, x, eager)
            if not block.training:
                return eager(x, cache, pos)
            self.check_eval = True  # the weights are about to move: the next evaluation checks its first batch
            if self.key is None:
                if i != 0:  # the capture starts at the first block, with the activations it receives
                    return eager(x, cache, pos)
                self.capture(x)
            elif i == 0 and not self.train_moved and self._ptrs() != self.train_ptrs:
                self.train_moved = True
                print("cuda_graphs: the blocks' parameters moved in memory since the training capture; "
                      "training runs eagerly from here", flush=True)
            if self.train_moved or self._key(x) != self.key:
                return eager(x, cache, pos)
            return self.graphed[i](x)
        return forward

    def capture(self, x: torch.Tensor) -> None:
        """Capture every block at x's shape (the residual stream has one shape and dtype through the blocks).
        Autocast's weight-cast cache must be off while capturing (a cached cast would be a stale copy of the
        weights at replay); the cast kernels are captured instead and read the updated weights each step."""
        samples = tuple((x.detach().clone().requires_grad_(x.requires_grad),) for _ in self.blocks)
        forwards = [b.forward for b in self.blocks]
        self.capturing = True
        try:
            with self._uncached_autocast():
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
        self.train_ptrs = self._ptrs()

    def _ptrs(self) -> tuple:
        """The addresses of the blocks' parameters and buffers: the memory a captured graph reads."""
        return tuple(t.data_ptr() for t in (*self.blocks.parameters(), *self.blocks.buffers()))

    def _eval_key(self, x: torch.Tensor) -> tuple:
        return (tuple(x.shape), x.dtype, x.device, torch.is_inference_mode_enabled(), self._autocast())

    def _eval(self, i: int, x: torch.Tensor, eager):
        """Block i's no-grad forward: a replay of its eval graph, captured with the whole stack at block 0."""
        key = self._eval_key(x)
        if i == 0 and self.eval_graphs and self._ptrs() != self.eval_ptrs:
            # moved since the eval captures (Lightning's teardown after fit, then back): replays would read freed
            # memory, so capture again below, checked against eager as every capture is
            self.eval_graphs.clear()
            print("cuda_graphs: the blocks' parameters moved in memory since the eval capture; captured again",
                  flush=True)
        if key not in self.eval_graphs:
            # only once training is captured: Lightning's sanity validation comes before the first training
            # batch, and the training capture must come first (see the module docstring)
            if i != 0 or self.key is None or self.eval_off or len(self.eval_graphs) >= EVAL_SHAPES:
                return eager(x, None, None)
            self._capture_eval(key, x)  # checked against eager as it is captured
            self.check_eval = False
            if key not in self.eval_graphs:
                return eager(x, None, None)
        elif i == 0 and self.check_eval:  # the first batch after training steps: replays read the new weights?
            self.check_eval = False
            try:
                self._check(self.eval_graphs[key], x)
            except CaptureError as e:
                self._eval_off(e)
                return eager(x, None, None)
        replay, static_in, static_out = self.eval_graphs[key][i]
        if x.data_ptr() != static_in.data_ptr():  # block 0's embeddings; block i+1 reads block i's output
            static_in.copy_(x)
        replay()
        return static_out

    def _capture_eval(self, key: tuple, x: torch.Tensor) -> None:
        """Capture every block's no-grad forward at x's shape, chained through static buffers, then check the
        chain's replay against the eager forward of x; on any failure eval graphs go off for this run."""
        self.eval_pool = self.eval_pool or new_pool()
        graphs, h = [], x.detach().clone()
        self.capturing = True
        try:
            with self._uncached_autocast():
                for fwd in self.eager_forwards:
                    replay, out = graph_forward(lambda t, f=fwd: f(t, None, None), h, self.eval_pool, self.warmup)
                    graphs.append((replay, h, out))
                    h = out
            self._check(graphs, x)
        except Exception as e:  # noqa: BLE001 - evaluation goes on eagerly; one line says why
            self._eval_off(e)
            return
        finally:
            self.capturing = False
        self.eval_graphs[key] = graphs
        self.eval_ptrs = self._ptrs()

    def _check(self, graphs: list, x: torch.Tensor) -> None:
        """The chain's replay against the eager forward of x (the same kernels: equal up to rounding); raises
        CaptureError when they differ."""
        with self._uncached_autocast():
            expect = x
            for fwd in self.eager_forwards:
                expect = fwd(expect, None, None)
        graphs[0][1].copy_(x)
        for replay, _, _ in graphs:
            replay()
        diff = (graphs[-1][2].float() - expect.float()).abs().max().item()
        if not diff <= 1e-3 * max(expect.float().abs().max().item(), 1e-6):
            raise CaptureError(f"the replay differs from the eager forward by up to {diff:.3g}")

    def _eval_off(self, e: Exception) -> None:
        self.eval_off = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        self.eval_graphs.clear()
        print(f"cuda_graphs: evaluation runs eagerly ({self.eval_off})", flush=True)

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
                "blocks": len(self.blocks),
                "eval_shapes": [list(k[0]) for k in self.eval_graphs], "eval_off": self.eval_off}
