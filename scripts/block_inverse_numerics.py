"""How accurate is a feedback solve by dense blocks in bfloat16? (models/kernels/NOTES.md, "Dense blocks")

The two-level Triton solve walks each block of R rows with a wavefront of R / C chunk steps. The dense
alternative inverts a whole block instead: W_R = (I - diag(gamma) alpha_bb)^{-1}, built from the chunks'
inverses W_c (as `_prep` has them) by block doubling, [[W11, 0], [W22 N21 W11, W22]] for m = C, 2C, ... rows,
then s_b = W_R (f_b + gamma_b alpha_{b,<b} s_{<b}): matrix products only. This prints the relative error of s
against the float64 dense solve (feedback_dense) on bfloat16 inputs, with W_R and the right-hand side rounded
to bfloat16 for the product (float32 accumulation, as on tensor cores), with the doubling's own products
in float32 or bfloat16, for both regimes of the GPU tests and gains of both signs or positive only (the
slowest-decaying memory). The GPU tests' bfloat16 tolerance is 2e-2; the Triton solve's error is ~2e-3.

    python scripts/block_inverse_numerics.py [--T 4096] [--D 64] [--R 1024]

The doubling is the solve's own (`_block_inverse` of feedback_triton.py, plain PyTorch; importing that module
needs the triton package, not a GPU).
"""

from __future__ import annotations

import argparse

import torch

from sessa_bench.models.kernels.feedback_dense import feedback_dense, routing_dense
from sessa_bench.models.kernels.feedback_triton import _block_inverse  # the solve's own doubling

CHUNK = 64


def rounded(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype).float()


def dense_blocks(f, q, k, gamma, R: int, product_dtype: torch.dtype) -> torch.Tensor:
    """s by blocks of R rows inverted whole: the chunks' inverses in float32 (as `_prep` has them), the
    doubling by feedback_triton's `_block_inverse` with its operands in product_dtype, then W_R and the
    right-hand side rounded to bfloat16 for the block's product."""
    T = f.shape[0]
    A = routing_dense(q.float()[None], k.float()[None])[0]
    s = torch.zeros(f.shape)
    low, eye = torch.bfloat16, torch.eye(CHUNK)
    for b0 in range(0, T, R):
        b1 = min(b0 + R, T)
        g = gamma[b0:b1].float()
        n_cc = torch.stack([g[c:c + CHUNK, None] * A[b0 + c:b0 + c + CHUNK, b0 + c:b0 + c + CHUNK]
                            for c in range(0, b1 - b0, CHUNK)])
        w_chunks = torch.linalg.solve_triangular(eye - n_cc, eye.expand_as(n_cc), upper=False, unitriangular=True)
        w = _block_inverse(g[None], A[None, b0:b1, b0:b1].to(product_dtype), w_chunks[None], CHUNK)[0]
        rhs = f[b0:b1].float() + g[:, None] * (rounded(A[b0:b1, :b0], low) @ rounded(s[:b0], low))
        s[b0:b1] = rounded(w, low) @ rounded(rhs, low)
    return s


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=4096)
    ap.add_argument("--D", type=int, default=64)
    ap.add_argument("--R", type=int, default=1024)
    args = ap.parse_args(argv)
    if args.R % CHUNK or args.T % args.R:
        raise SystemExit(f"--R must be a multiple of {CHUNK} and divide --T")
    torch.manual_seed(0)
    print(f"T={args.T} D={args.D} R={args.R}, bfloat16 inputs; relative Frobenius error of s against float64")
    print("| regime | gains | doubling in float32 | doubling in bfloat16 |\n|---|---|---|---|")
    for regime, q_scale in (("peaked", 4.0), ("flat", 0.01)):
        for signs in ("both signs", "positive"):
            f, q, k = (torch.randn(args.T, args.D) for _ in range(3))
            gamma = 0.999 * torch.tanh(4.0 * torch.randn(args.T))
            gamma = gamma.abs() if signs == "positive" else gamma
            f, q, k = (x.bfloat16() for x in (f, q * q_scale, k))
            ref = feedback_dense(*(x.double()[None] for x in (f, q, k, gamma)))[0]
            errs = [float((dense_blocks(f, q, k, gamma, args.R, dt).double() - ref).norm() / ref.norm())
                    for dt in (torch.float32, torch.bfloat16)]
            print(f"| {regime} | {signs}, max 0.999 | {errs[0]:.2e} | {errs[1]:.2e} |")


if __name__ == "__main__":
    main()
