"""The Triton kernels compile for the GPUs we lend (sm_90: H100, H200), checked on this CPU: the interpreter
runs a kernel's arithmetic but not Triton's compiler, which is where lease 31 lost two bench rows (a
`return` inside a constexpr `if` made Triton compile the float32 product after it on bf16 operands). Each
launch a kernel module makes (the feedback solve forward and backward at the mixer's default settings and the
bench's other variants; RoPE; the split-KV decode read; Mamba2's fused conv, forward and backward) is recorded
with its real arguments and constexprs by running the launching code on CPU tensors, then compiled to a cubin
for sm_90 with Triton's own toolchain (no GPU, no driver)."""

import pytest
import torch

triton = pytest.importorskip("triton")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from sessa_bench.models.kernels import causal_conv_triton, rope_triton, split_read_triton  # noqa: E402
from sessa_bench.models.kernels import feedback_triton as ft  # noqa: E402

KERNELS = ("_lse_part_kernel", "_prep_kernel", "_solve_kernel", "_adjoint_kernel", "_dl_kernel", "_alpha_kernel",
           "_pair_product_kernel", "_rowdot_kernel")
TYPES = {torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.float32: "*fp32", torch.int32: "*i32",
         torch.uint8: "*u8"}
TARGET = GPUTarget("cuda", 90, 32)
LAUNCH = ("num_warps", "num_stages")


class Recorder:
    """Stands in for one kernel: `kernel[grid](*args, **constexprs)` records the signature Triton would see."""

    def __init__(self, fn, seen: dict):
        self.fn, self.seen = fn, seen

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            sig = {}
            for name, a in zip(self.fn.arg_names, args):
                if isinstance(a, torch.Tensor):
                    sig[name] = TYPES[a.dtype]
                elif isinstance(a, float):
                    sig[name] = "fp32"
                else:
                    sig[name] = "i64" if abs(int(a)) >= 2 ** 31 else "i32"
            consts = {k: v for k, v in kwargs.items() if k not in LAUNCH}
            sig.update({k: "constexpr" for k in consts})
            key = (self.fn.__name__, tuple(sorted(sig.items())), tuple(sorted((k, str(v)) for k, v in consts.items())))
            self.seen.setdefault(key, (self.fn, sig, consts, kwargs.get("num_warps", 4)))
        return launch


def recorded(monkeypatch, kernels: dict, run) -> list:
    """(kernel, signature, constexprs, num_warps) of every distinct launch of the kernels (module -> names)
    while run() executes the launching code."""
    seen = {}
    for module, names in kernels.items():
        for name in names:
            monkeypatch.setattr(module, name, Recorder(getattr(module, name), seen))
    run()
    return list(seen.values())


def compile_all(launches: list) -> None:
    for fn, sig, consts, warps in launches:
        compiled = triton.compile(ASTSource(fn, sig, constexprs=consts), target=TARGET, options={"num_warps": warps})
        assert compiled.asm.get("cubin"), fn.__name__


def feedback_launches(monkeypatch, dtype, **settings) -> list:
    """Every distinct launch of one forward and backward of the feedback solve."""
    def run():
        B, T, D = 1, 300, 128
        f, q, k = (torch.randn(B, T, D).to(dtype) for _ in range(3))
        g = 0.5 * torch.rand(B, T)
        s, lse, W, h, WR = ft.forward_kernels(f, q, k, g, 64, None, None, **settings)
        ft.forward_kernels(f, q, k, g, 64, None, None, need_h=False, **settings)  # inference: no h
        ft.backward_kernels(torch.randn_like(s), q, k, g, lse, W, s, h, WR, 64, None, None, **settings)
    monkeypatch.setattr(ft, "_pair_prec", lambda x, cfg: cfg.PV_PREC)  # the dense blocks' CUDA path on the CPU
    return recorded(monkeypatch, {ft: KERNELS}, run)


SETTINGS = {  # the mixer's default (dense blocks, 128-tiles; since lease 33), the wavefronts' one before it (two-level,
    # 128-tiles, strips read by the wavefronts) and the bench's others
    "wavefronts-t128d": dict(block_rows=128, strip_tile=128, strip_diag=True),
    "single-level": dict(),
    "two-level-chunk-tiles": dict(block_rows=128),
    "dense-blocks": dict(block_rows=128, strip_tile=128, strip_diag=True, dense_blocks=True),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_feedback_kernels_compile_for_sm90(monkeypatch, setting, dtype):
    launches = feedback_launches(monkeypatch, dtype, **SETTINGS[setting])
    names = {fn.__name__ for fn, *_ in launches}
    # forward (the lse pass in pieces, the chunks' inverses) and backward ran
    assert {"_lse_part_kernel", "_prep_kernel", "_dl_kernel", "_rowdot_kernel"} <= names
    assert ("_pair_product_kernel" in names) == (setting == "dense-blocks")
    # dl's u s^T reads gamma u in q's dtype where the dense adjoint holds it for every row, u otherwise
    assert {c["SCALED"] for fn, _, c, _ in launches if fn.__name__ == "_dl_kernel"} <= {setting == "dense-blocks"}
    # the strips take the gains only in the dense blocks' forward without h (inference)
    gains = {c["GAINS"] for fn, _, c, _ in launches if fn.__name__ == "_alpha_kernel"}
    assert gains == ({False, True} if setting == "dense-blocks" else {False} if gains else set())
    compile_all(launches)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_rope_read_and_conv_kernels_compile_for_sm90(monkeypatch, dtype):
    """RoPE and the split read at a Transformer's 12 heads of 64 and Sessa's one 768-wide head (8 warps for
    the read); the fused conv forward and backward."""
    def run():
        for H, d in ((12, 64), (1, 768)):
            x = torch.randn(2, 16, H, d).to(dtype)
            cos, sin = torch.randn(16, d // 2), torch.randn(16, d // 2)
            rope_triton._launch(x, cos, sin, 1)
            L = 200
            q = torch.randn(2, H, d).to(dtype)
            K, V = torch.randn(2, L, H, d).to(dtype), torch.randn(2, L, H, d).to(dtype)
            split_read_triton.split_read(q, K, V, torch.ones(L, dtype=torch.uint8))
        x, w, b = torch.randn(2, 40, 96).to(dtype), torch.randn(96, 4).to(dtype), torch.randn(96).to(dtype)
        causal_conv_triton.conv_silu_fwd(x, w, b)
        causal_conv_triton.conv_silu_bwd(torch.randn_like(x), x, w, b)

    kernels = {rope_triton: ["_rope_kernel"], split_read_triton: ["_partial_kernel", "_combine_kernel"],
               causal_conv_triton: ["_fwd_kernel", "_grad_kernel", "_dx_kernel"]}
    launches = recorded(monkeypatch, kernels, run)
    assert {fn.__name__ for fn, *_ in launches} == {n for names in kernels.values() for n in names}
    compile_all(launches)
