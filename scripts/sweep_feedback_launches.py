"""Launch settings of the feedback solve's three logit kernels, each timed alone on a GPU (models/kernels/NOTES.md,
"Kept block inverses"): the lse pass (`_lse_part_kernel`, timed inside `_prep` with the chunks' inverses),
alpha's strips (`_alpha_kernel`: every strip a dense forward and backward compute, the blocks' own alpha
included) and dl (`_dl_kernel`, timed inside `_qk_grads` with its two cuBLAS products, which no setting
changes), at the block bench's shape, for num_warps x num_stages and the K step of the logits (BK). Each
setting's results are checked against the solve's own launch in the same process before it is timed. Prints one
markdown table; the solve's settings are restored after.

    python scripts/sweep_feedback_launches.py [--B 4] [--T 4096] [--D 768] [--R 1024]
"""

from __future__ import annotations

import argparse

import torch
import triton

import sessa_bench.models.kernels.feedback_triton as ft

# (num_warps, num_stages, BK); the solve's own launch: the _Config's warps (8 for the 128-tiles of the lse pass,
# the strips and dl), Triton's default stages, BK = 64
SETTINGS = [(4, 2, 64), (4, 3, 64), (4, 4, 64), (8, 2, 64), (8, 3, 64), (8, 4, 64), (8, 2, 128), (8, 3, 128)]
LAUNCH_KEY = {"prep (lse pass)": "lse", "strips (alpha)": "strip", "dl + dq, dk products": "dl"}  # ft.LAUNCH's


def kernels(B: int, T: int, D: int, R: int, device: str = "cuda"):
    """name -> a function running that kernel (or kernels) once, which with check=True also returns what it wrote
    (the strips' reads are kept out of the timed runs: seven small reductions between the launches), and the _Config
    (device "cpu": under TRITON_INTERPRET=1, the CPU test's, in float16: the interpreter's dots lack bfloat16)."""
    gen = torch.Generator(device=device).manual_seed(0)
    dt = torch.bfloat16 if device == "cuda" else torch.float16
    q, k = (torch.randn(B, T, D, device=device, generator=gen).to(dt) for _ in range(2))
    g = 0.99 * torch.tanh(torch.randn(B, T, device=device, generator=gen))
    cfg = ft._Config(dt, D, 64, None, None, strip_tile=128, strip_diag=True, dense_blocks=True)
    lse = ft._prep(q, k, g, cfg)[0]
    u, s = (torch.randn(B, T, D, device=device, generator=gen) for _ in range(2))
    v = (g[..., None] * u).to(dt)  # gamma u as the dense adjoint hands it to dl
    delta = torch.randn(B, T, device=device, generator=gen)
    scratch = ft._scratch(B, T, cfg, R, q.dtype, q.device)
    nb = T // R
    own = ft._strip_buffer(B * nb, R, R, cfg, q)

    def strips(check: bool = False):
        read = (lambda x: x.float().sum()) if check else (lambda x: x)
        out = [read(ft._strip(q.view(B * nb, R, D), k.view(B * nb, R, D), lse.view(B * nb, R), 0, R, 0, R, own,
                              cfg))]  # the blocks' own alpha, all at once
        for c0, m in ft._blocks(T, cfg, R):
            r0, r1 = c0 * cfg.BC, min((c0 + m) * cfg.BC, T)
            if r0:  # forward: the block's rows, the columns before it
                out.append(read(ft._strip(q, k, lse, r0, r1, 0, r0, scratch, cfg)))
            if r1 < T:  # backward: the rows after the block, its columns
                out.append(read(ft._strip(q, k, lse, r1, T, r0, r1, scratch, cfg)))
        return torch.stack(out) if check else None

    return {"prep (lse pass)": lambda check=False: ft._prep(q, k, g, cfg)[0],
            "strips (alpha)": strips,
            "dl + dq, dk products": lambda check=False: torch.cat(
                [x.flatten() for x in ft._qk_grads(q, k, u, s, g, lse, delta, cfg, v)])}, cfg


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("B", 4), ("T", 4096), ("D", 768), ("R", 1024)):
        ap.add_argument(f"--{name}", type=int, default=default)
    args = ap.parse_args(argv)
    if args.T % args.R:
        raise SystemExit("--T must be a whole number of blocks of --R rows")
    fns, cfg = kernels(args.B, args.T, args.D, args.R)
    bk, saved = cfg.BK, {k: dict(v) for k, v in ft.LAUNCH.items()}
    print(f"# {torch.cuda.get_device_name()}, B={args.B} T={args.T} D={args.D} R={args.R}, bf16; median ms "
          f"(triton.testing.do_bench); `own`: the solve's launch; err: max |x - own| / max |own|\n")
    print("| kernel | own ms | " + " | ".join(f"w{w} s{st} k{b}" for w, st, b in SETTINGS) + " |")
    print("|---|---|" + "---|" * len(SETTINGS))
    for name, fn in fns.items():
        ft.LAUNCH.update({k: dict(v) for k, v in saved.items()})
        cfg.BK = bk
        ref = fn(check=True).float()
        own = triton.testing.do_bench(fn, return_mode="median")
        cells = []
        for warps, stages, k_step in SETTINGS:
            ft.LAUNCH[LAUNCH_KEY[name]] = {"num_warps": warps, "num_stages": stages}
            cfg.BK = k_step
            try:
                err = float((fn(check=True).float() - ref).abs().max() / ref.abs().max())
                ms = triton.testing.do_bench(fn, return_mode="median")
                cells.append(f"{ms:.3f}" + (f" (err {err:.0e})" if err > 1e-2 else ""))
            except Exception as e:  # e.g. out of shared memory: the setting does not fit
                cells.append(f"failed: {type(e).__name__}")
        print(f"| {name} | {own:.3f} | " + " | ".join(cells) + " |", flush=True)
    ft.LAUNCH.update(saved)
    cfg.BK = bk


if __name__ == "__main__":
    main()
