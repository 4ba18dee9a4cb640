"""F.scaled_dot_product_attention with its CUDA kernels tried in a stated order, set at every call.

    o = sdpa_in_order(("cudnn", "efficient", "math"), q, k, v, attn_mask=mask)

Why every call states its order instead of leaving it to PyTorch's default: on Hopper PyTorch installs a
cuDNN-first order lazily, at the first SDPA call of the process, and `torch.nn.attention.sdpa_kernel(...,
set_priority=True)` restores on exit the order it read on entry. When that context is the first SDPA use of
the process (our training forward), it reads the order from before the lazy install and restores it, so
every later SDPA call without a context runs flash > efficient > math > cuDNN for the life of the process.
Our decode read (one query under a mask, which flash refuses) then fell to the memory-efficient kernel:
260 us a layer at batch 16 and a 4096 context, where the same read in a fresh process took 58 us
(results/bench/README.md, lease 27). The mechanism is read from PyTorch's dispatch code (sdp_utils.cpp,
`priority_order`); lease 27's kernels fit it, and tests/test_gpu_attention.py checks the read's kernels in
a fresh process against those after a training forward. Stating the order makes the kernel independent of
what ran before.

On CPU, and while torch.compile traces (the context can break the graph; the compiler picks the kernel
itself), the call is plain SDPA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_NAMES = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
          "math": "MATH"}


def sdpa_in_order(order: tuple[str, ...], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  **kwargs) -> torch.Tensor:
    """F.scaled_dot_product_attention(q, k, v, **kwargs), on CUDA with only the backends of `order` (names
    of _NAMES) enabled, tried first to last."""
    if not q.is_cuda or torch.compiler.is_compiling():
        return F.scaled_dot_product_attention(q, k, v, **kwargs)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel([getattr(SDPBackend, _NAMES[n]) for n in order], set_priority=True):
        return F.scaled_dot_product_attention(q, k, v, **kwargs)
