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

On CPU, and while torch.compile traces (a context with set_priority fails there, pytorch#155898), the call is
plain SDPA: the compiler asks PyTorch's chooser at trace time, under the process's order. So that order must
not be left behind as above either: before the process's first context, `_install_default_order` has PyTorch
choose once outside any context (a host-side choice, no kernel; `priority_order_init_` in sdp_utils.cpp), so
every context reads and restores the installed order. Lease 28 timed what happens without it: the compiled
decode step traced after an eager one ran the memory-efficient read, 141 tokens/s at batch 1 where
2026-12-01's took 511.
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
    _install_default_order(q)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel([getattr(SDPBackend, _NAMES[n]) for n in order], set_priority=True):
        return F.scaled_dot_product_attention(q, k, v, **kwargs)


_installed = False


def _install_default_order(q: torch.Tensor) -> None:
    """Have PyTorch install its default kernel order (lazily, at its first choice on CUDA) before our first
    context reads the order it will restore."""
    global _installed
    if not _installed:
        one = q[:1, :1, :1]  # a view: nothing allocated; as query, key and value every backend's shapes agree
        torch._fused_sdp_choice(one, one, one)  # the choice alone runs no kernel: safe under graph capture
        _installed = True

