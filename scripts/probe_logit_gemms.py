"""Where the dense feedback solve's logits and strip products could go faster, timed on a GPU before anything is
built (models/kernels/NOTES.md, "Which logit pass is slow"): the Triton logit kernels of the forward (the lse
pass `_prep`, in pieces of 2 to 64 strip tiles: `LSE_PIECE`; alpha's strips `_alpha_kernel`) against cuBLAS
computing the same logits q k^T in float32 (what a cuBLAS-plus-normalise path would start from), with one
float32 read+write pass over those logits as the cost of the normalising kernel it would need; the forward's
strip products alpha s[:r0] (cuBLAS, one per block); dl with dq, dk (`_qk_grads`) reading u in float32 or
gamma u in bf16 for its u s^T gram (the dense backward's, since session 39); and the whole op forward and
backward (dense blocks).
Lease 37 ran it with those products also split along their long inner dimension by hand (split-K, commit
6415367: slower at every split, so removed; results/bench/nvidia-h200-logit-gemms-2026-12-03.md). Each timed
as a CUDA graph of its launches (triton.testing.do_bench_cudagraph), at the block bench's two shapes; TFLOP/s
counts the multiply-adds done.

    python scripts/probe_logit_gemms.py [--D 768] [--R 1024] [--out FILE]
"""

from __future__ import annotations

import argparse

import torch
import triton

import sessa_bench.models.kernels.feedback_triton as ft
from sessa_bench.models.bmm_fp32 import bmm_fp32


def probe(B: int, T: int, D: int, R: int, device: str = "cuda", timer=None) -> list[tuple[str, float, float]]:
    """(what, ms, TFLOP/s) rows at one shape. device "cpu" with a timer (fn -> ms): under TRITON_INTERPRET=1, the
    CPU test's run of every row once (float16: the interpreter's dots lack bfloat16)."""
    gen = torch.Generator(device=device).manual_seed(0)
    dt = torch.bfloat16 if device == "cuda" else torch.float16
    q, k, s = (torch.randn(B, T, D, device=device, generator=gen).to(dt) for _ in range(3))
    g = 0.99 * torch.tanh(torch.randn(B, T, device=device, generator=gen))
    cfg = ft._Config(dt, D, 64, None, None, strip_tile=128, strip_diag=True, dense_blocks=True)
    lse, _, _ = ft._prep(q, k, g, cfg)
    nb = T // R
    scratch = ft._scratch(B, T, cfg, R, q.dtype, q.device)
    own = ft._strip_buffer(B * nb, R, R, cfg, q)
    past = [torch.empty(B, R, b * R, device=device, dtype=dt) for b in range(1, nb)]  # the forward's past strips
    full = [torch.empty(B, R, (b + 1) * R, device=device) for b in range(nb)]  # float32 logits, a block's row
    part = [torch.empty(B, R, b * R, device=device) for b in range(nb)]  # the same, the columns before the block
    for b, x in enumerate(past, 1):
        x.copy_(ft._strip(q, k, lse, b * R, (b + 1) * R, 0, b * R, scratch, cfg))
    tri = B * T * T / 2 * 2 * D  # flops of one gram over the causal triangle
    piece = ft.LSE_PIECE

    def strips():
        ft._strip(q.view(B * nb, R, D), k.view(B * nb, R, D), lse.view(B * nb, R), 0, R, 0, R, own, cfg)
        for b in range(1, nb):
            ft._strip(q, k, lse, b * R, (b + 1) * R, 0, b * R, scratch, cfg)

    def logits(with_own: bool):
        def run():
            for b in range(0 if with_own else 1, nb):
                w = (b + 1 if with_own else b) * R
                bmm_fp32(q[:, b * R:(b + 1) * R], k[:, :w].mT, out=(full if with_own else part)[b])
        return run

    def passes():
        for x in full:
            torch.exp(x, out=x)

    xs = [torch.empty(B, R, D, device=device) for _ in past]

    def products():
        for b, a in enumerate(past, 1):
            bmm_fp32(a, s[:, :b * R], out=xs[b - 1])

    own_flops = B * nb * R * R / 2 * 2 * D
    past_flops = sum(B * R * b * R * 2 * D for b in range(1, nb))

    def prep(piece: int):
        def run():
            ft.LSE_PIECE = piece
            ft._prep(q, k, g, cfg)
        return run
    rows = [(f"triton lse pass (_prep: pieces of {p_} tiles)", prep(p_), tri) for p_ in (2, 4, 8, 64)]
    rows += [
            ("triton strips: own (all at once) + past", strips, own_flops + past_flops),
            ("cublas fp32 logits: each block's whole row", logits(True), sum(B * R * (b + 1) * R * 2 * D
                                                                               for b in range(nb))),
            ("cublas fp32 logits: past only", logits(False), past_flops),
            ("fp32 read+write pass over the whole rows", passes, 0.0)]
    rows.append(("strip products alpha s", products, past_flops))
    u = torch.randn(B, T, D, device=device, generator=gen)
    delta = torch.randn(B, T, device=device, generator=gen)
    v = (g[..., None] * u).to(dt)  # gamma u as the dense adjoint hands it to dl
    for what, scaled in (("u (float32)", None), ("gamma u (bf16)", v)):
        rows.append((f"dl + dq, dk (_qk_grads), u s^T reading {what}",  # dl's two grams, the two products
                     lambda scaled=scaled: ft._qk_grads(q, k, u, s, g, lse, delta, cfg, scaled), 4 * tri))
    f = torch.randn(B, T, D, device=device, generator=gen).to(dt)
    leaves = [x.detach().requires_grad_() for x in (f, q, k, g)]
    grad = torch.randn(B, T, D, device=device, generator=gen).to(dt)

    def op():
        s = ft.feedback_triton(*leaves, block_rows=R, strip_tile=128, dense_blocks=True)
        torch.autograd.grad(s, leaves, grad)
    rows.append(("whole op fwd+bwd (dense blocks)", op, 0.0))
    timer = timer or _graphed_ms
    out = []
    for name, fn, flops in rows:
        fn()
        ms = timer(fn)
        out.append((name, ms, flops / ms / 1e9 if flops else float("nan")))
    ft.LSE_PIECE = piece
    return out


def _graphed_ms(fn) -> float:
    torch.cuda.synchronize()
    return triton.testing.do_bench_cudagraph(fn, rep=200, return_mode="median")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--D", type=int, default=768)
    ap.add_argument("--R", type=int, default=1024)
    ap.add_argument("--out", help="also write the table to this file, row by row (a cut run keeps its rows)")
    args = ap.parse_args(argv)
    sink = open(args.out, "w") if args.out else None

    def emit(line: str) -> None:
        print(line, flush=True)
        if sink:
            sink.write(line + "\n")
            sink.flush()

    emit(f"# {torch.cuda.get_device_name()}, D={args.D} R={args.R}, bf16; median ms of a CUDA graph "
         "(triton.testing.do_bench_cudagraph)\n")
    emit("| B | T | what | ms | TFLOP/s |\n|---|---|---|---|---|")
    for B, T in ((4, 4096), (1, 16384)):
        for name, ms, tf in probe(B, T, args.D, args.R):
            emit(f"| {B} | {T} | {name} | {ms:.3f} | {tf:.0f} |")


if __name__ == "__main__":
    main()
