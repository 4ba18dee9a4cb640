"""The one FLOP count of the harness: model FLOPs per token for a forward pass and a training step, and MFU.

Used by the budget table (`make params`), the bench and (for MFU) the trainer. Conventions: one multiply-add
is 2 FLOPs; D = d_model, T = sequence length, V = vocab, positions t = 1..T, averages taken over t.

forward, per token
  parameter matmuls   2 * N_non_embedding     every weight is used once per token in a multiply-add; biases,
                                              norm scales, conv taps and Mamba2's per-head scalars are
                                              counted the same way (well under 1 % of the total)
  LM head             2 * D * V               tied or not (a tied head is not in N_non_embedding)
  embedding lookup    0
  + per layer, what the mixer does beyond its parameters (Mixer.flops_per_token):
  attention           2 * D * (T + 1)         token t scores t keys (q.k, 2D each over all heads) and sums
                                              t values (2D each): 4D * t, averaged over the causal half
  Sessa feedback      2 * D * (T - 1) + 2D    routing logits q_b.k_b over the t-1 strict-past outputs (2D each)
                                              and the weighted sum of those outputs (2D each), which is the
                                              triangular solve itself; + f + gamma * context
                      (+ the attention term: the forward branch)
  Mamba2 SSD          (Q+1)(G N + H P)        C.B scores inside a chunk of Q = min(chunk, T) tokens and their
                      + 4 H P N + 2 H P N / Q  use on x; writing each token into its chunk state and reading
                                              the entering state; carrying one state per chunk
training = 3 x forward: the backward computes gradients with respect to activations and to weights, each
as costly as the forward. Recomputation inside kernels (the feedback solve re-forms alpha in its backward,
the compiled mamba_ssm path recomputes its scan) is not counted: these are model FLOPs, so MFU compares
families on the work the model defines, not on what an implementation chooses to redo.
"""

from __future__ import annotations

import torch

from sessa_bench.models.backbone import Backbone

# Dense bf16 tensor-core peak (no sparsity) per device name fragment, for MFU.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def forward_flops_per_token(model: Backbone, seq_len: int) -> float:
    """Forward FLOPs per token of `model` (any device, meta included) on sequences of seq_len tokens."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    cfg = model.cfg
    total = sum(p.numel() for p in model.parameters())
    emb = model.embed.weight.numel()
    if cfg.head == "lm" and not cfg.tie_embeddings:
        emb += model.head.weight.numel()
    head = 2 * cfg.d_model * cfg.vocab_size if cfg.head == "lm" else 0
    return 2.0 * (total - emb) + head + sum(m.flops_per_token(seq_len) for m in model.mixers)


def train_flops_per_token(model: Backbone, seq_len: int) -> float:
    """Forward + backward FLOPs per token: 3 x forward."""
    return 3.0 * forward_flops_per_token(model, seq_len)


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak of a CUDA device we know, else None (CPU, unknown GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def mfu(tokens_per_s: float, flops_per_token: float, device: torch.device, world_size: int = 1,
        unknown: float | None = float("nan")) -> float | None:
    """Model FLOPs utilisation: tokens/s (summed over world_size devices like `device`) x FLOPs per token /
    (peak x world_size). The only MFU formula of the harness. `unknown` where the peak is unknown: NaN for
    the bench tables (the default), None for summary.json (NaN is not JSON)."""
    peak = peak_flops(device)
    return tokens_per_s * flops_per_token / (peak * world_size) if peak else unknown
