"""Fast greedy decoding: preallocated static caches and a fixed-shape step replayed from a CUDA graph.

    tokens = greedy(model, prompt, n_new)            # (B, P + n_new), same tokens as Backbone.generate

The prompt is prefilled with the parallel forward (which fills the caches), then every step runs
`Backbone.decode_step` on a (1,) int64 position tensor that lives on the device: the step writes the caches
with index ops and attends over the whole preallocated cache under a mask, so its shapes never change and
nothing syncs with the host. On CUDA the step (argmax and position increment included) is captured once in a
`torch.cuda.CUDAGraph` and replayed: one launch per token instead of hundreds. Mixers without a
`step_static` fall back to the eager token loop.
"""

from __future__ import annotations

import torch

from .backbone import Backbone
from .kernels import triton_available
from .masked_read import READS


# What `auto` reads the caches with, per mixer and compile setting, at batch 1 and at larger batches: the
# reads in order of speed as measured on an H200 at `base` with a 4096-token context, the first one that can
# run here (the Triton read needs CUDA and the triton package). Tokens/s, for the Transformer from
# results/bench/nvidia-h200-decode-transformer-2026-11-30.md (lease 17, commit da534a2: the per-step memo of
# RoPE angles and masks), for Sessa from nvidia-h200-decode-2026-12-01.md (lease 18, commit 8a2495f; every read
# in one run):
AUTO_READ = {
    # batch 1: sdpa 497, triton 444, reduce 203; batch 16: sdpa 4,659, triton 2,439, reduce 583
    ("attention", False): (("sdpa",), ("sdpa",)),
    # compiled sdpa 713 and 5,951, compiled reduce 507 and 3,753 (compiled triton not yet measured)
    ("attention", True): (("sdpa",), ("sdpa",)),
    # Sessa (attention by sdpa, its one wide feedback head by cuBLAS GEMVs): batch 1: sdpa+matmul 375, triton
    # 307, reduce 170, sdpa 70; batch 16: sdpa+matmul 2,741, triton 1,680, sdpa 1,026, reduce 427; matmul (the
    # attention caches by cuBLAS too, lease 20: nvidia-h200-decode-matmul-2026-12-01.md) 299 and 1,336
    ("sessa", False): (("sdpa+matmul",), ("sdpa+matmul",)),
    # compiled: batch 1: sdpa+matmul 511, reduce 449, triton 375, sdpa 75; batch 16: sdpa+matmul 2,332, reduce
    # 2,100, triton 1,479, sdpa 1,101; matmul 397 and 1,254 (lease 20)
    ("sessa", True): (("sdpa+matmul",), ("sdpa+matmul",)),
}


def resolve_read(read: str, batch_size: int, mixer: str = "sessa", compile: bool = False,
                 triton: bool = False) -> str:
    """`auto`: the fastest read AUTO_READ gives for this mixer, compile setting and batch size (a mixer
    without an entry: Sessa's) that can run (`triton`: the Triton read can); otherwise the read given, checked:
    one of READS for every cache, or "A+B": attention's caches read with A, Sessa's feedback caches with B."""
    if read == "auto":
        one, more = AUTO_READ.get((mixer, bool(compile)), AUTO_READ[("sessa", bool(compile))])
        return next(r for r in (one if batch_size == 1 else more) if triton or r != "triton")
    parts = read.split("+") if isinstance(read, str) else [read]
    if len(parts) > 2 or any(p not in READS for p in parts):
        raise ValueError(f"decode read={read!r} must be 'auto', one of {READS} (every cache), or "
                         f"'A+B' (attention's caches read with A, Sessa's feedback caches with B, each of {READS})")
    return read


def cache_reads(read: str) -> tuple[str, str]:
    """(attention's read, the feedback's read) of a resolved read: "A+B", or one read for both."""
    attn, _, fb = read.partition("+")
    return attn, fb or attn


# The caches' length is max_len rounded up to a multiple of this. The step reads every position of a cache
# (masked past pos), so a few more cost a few more bytes, but a length of many 2s keeps the reads' batch
# strides aligned: at a 4096-token context lease 27's profile timed Sessa's feedback read (cuBLAS GEMVs over
# (B, L, D) caches) at 105 us a layer with L = 4105, where the reads bench timed it at 68 us with L = 4096
# (results/bench/README.md). That the alignment is the difference is untimed: the decode bench's
# `cache_multiple: 1` row beside the default measures it.
CACHE_MULTIPLE = 64


class StaticDecoder:
    """Caches, the position tensor and the step for greedy decoding of `batch_size` sequences of at most
    `max_len` tokens (prompt included); the caches hold max_len rounded up to a multiple of `cache_multiple`
    positions (`cache_len`)."""

    def __init__(self, model: Backbone, batch_size: int, max_len: int, cuda_graph: bool = True,
                 compile: bool = False, read: str = "auto", cache_multiple: int = CACHE_MULTIPLE):
        if not isinstance(cache_multiple, int) or isinstance(cache_multiple, bool) or cache_multiple < 1:
            raise ValueError(f"cache_multiple must be a positive integer, got {cache_multiple!r}")
        if model.cfg.head != "lm":
            raise ValueError("greedy decoding needs model.head='lm'")
        if not model.supports_static_decode:
            raise ValueError("static decoding needs step_static in every mixer; use Backbone.generate")
        p = next(model.parameters())
        self.model, self.device, self.max_len = model, p.device, max_len
        self.read = read = resolve_read(read, batch_size, model.cfg.mixer, compile,
                                        triton=p.device.type == "cuda" and triton_available())
        attn_read, fb_read = cache_reads(read)
        if "triton" in (attn_read, fb_read) and triton_available():  # the op registered before a compile traces it
            from .kernels import split_read_triton  # noqa: F401
        self.cache_len = -(-max_len // cache_multiple) * cache_multiple
        self.caches = model.init_cache(batch_size, self.cache_len, device=p.device, dtype=p.dtype)
        for c in self.caches:  # how the step reads the caches (models/masked_read.py)
            c.read, c.feedback_read = attn_read, fb_read
        self.pos = torch.zeros(1, dtype=torch.long, device=p.device)    # next position to write
        self.tok = torch.zeros(batch_size, 1, dtype=torch.long, device=p.device)  # last token, fed back
        self._step_fn = torch.compile(model.decode_step, fullgraph=True) if compile else model.decode_step
        self.graph = None
        if cuda_graph and p.device.type == "cuda":
            self._capture()

    @torch.no_grad()
    def _advance(self) -> None:
        """Decode self.tok at self.pos; leave the argmax in self.tok and move pos on (all on the device)."""
        logits = self._step_fn(self.tok, self.caches, self.pos)
        self.tok.copy_(logits.argmax(-1, keepdim=True))
        self.pos.add_(1)

    def _capture(self) -> None:
        # Warm up on a side stream (lazy inits, cuBLAS handles, Triton compilation), capture, then empty the
        # caches: warm-up and capture wrote to them.
        s = torch.cuda.Stream(self.device)
        s.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(s):
            for _ in range(3):
                self._advance()
        torch.cuda.current_stream(self.device).wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._advance()
        self.reset()

    def reset(self) -> None:
        for c in self.caches:
            c.reset()
        self.pos.zero_()
        self.tok.zero_()

    @torch.no_grad()
    def prefill(self, prompt: torch.Tensor) -> None:
        """Run the prompt (B, P) through the parallel forward into empty caches; its greedy next token goes
        to self.tok."""
        if prompt.shape[1] >= self.max_len:
            raise ValueError(f"prompt of {prompt.shape[1]} tokens leaves no room in max_len={self.max_len}")
        logits = self.model(prompt, self.caches)
        self.tok.copy_(logits[:, -1].argmax(-1, keepdim=True))
        self.pos.fill_(prompt.shape[1])

    def advance(self) -> None:
        """One greedy token: replays the captured graph when there is one."""
        if self.graph is not None:
            self.graph.replay()
        else:
            self._advance()


@torch.no_grad()
def greedy(model: Backbone, prompt: torch.Tensor, n_new: int, cuda_graph: bool = True,
           compile: bool = False, read: str = "auto") -> torch.Tensor:
    """Greedy continuation of prompt (B, P) by n_new tokens -> (B, P + n_new). cuda_graph: capture the step
    in a CUDA graph (CUDA only; ignored on CPU). compile: torch.compile the step first (fullgraph). read: how
    the step reads the caches ("reduce", "sdpa", "triton", "auto" or "A+B": see resolve_read; models/masked_read.py)."""
    if n_new < 1:
        raise ValueError(f"greedy n_new must be >= 1, got {n_new}")
    if not model.supports_static_decode:
        return model.generate(prompt, n_new)
    dec = StaticDecoder(model, prompt.shape[0], prompt.shape[1] + n_new, cuda_graph=cuda_graph, compile=compile,
                        read=read)
    dec.prefill(prompt.to(dec.device))
    out = [prompt.to(dec.device), dec.tok.clone()]
    for _ in range(n_new - 1):
        dec.advance()
        out.append(dec.tok.clone())  # a device copy: no host sync inside the loop
    return torch.cat(out, dim=1)
