"""Training and decoding speed on one GPU (issue 13), in one command of under ~8 minutes on an H200:

    PYTHONPATH=. python3 scripts/gpu_speed.py --out $OUT          # or --out results/bench

1. checks (seconds): on the GPU, greedy decoding through the CUDA-graph path == the eager static path ==
   Backbone.generate, and a compiled (inductor, fullgraph) model == eager, for each family at a toy size;
2. the bench parts `train` (eager vs compiled, `base` T=2048 batch 8 and `small` T=600 batch 32), `decode`
   (context 4096, batch 1 and 16) and `profile` (top 15 kernels of one training step per family).
Writes checks.md, <device>.md and <device>.csv to --out and prints the short tables at the end.
`--parts` / `--families` run a subset (e.g. to split the run in two); `--cpu-smoke` runs everything at toy
sizes on CPU (what tests/test_gpu_speed_script.py does, so a typo cannot waste a GPU lease).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without an install

import torch  # noqa: E402

from sessa_bench.bench import __main__ as bench  # noqa: E402
from sessa_bench.models.backbone import Backbone  # noqa: E402
from sessa_bench.models.config import ModelConfig  # noqa: E402
from sessa_bench.models.generate import greedy  # noqa: E402
from sessa_bench.run_folder import atomic_write_text  # noqa: E402

TOY = {"sessa": ("sessa", {"gamma_max": 0.9}), "transformer": ("attention", {}), "mamba2": ("mamba2", {})}


def toy_model(family: str, device, dtype) -> Backbone:
    mixer, mk = TOY[family]
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, d_model=128, n_layers=2, n_heads=4, mixer=mixer, mixer_kwargs=mk)
    return Backbone(cfg).to(device=device, dtype=dtype)


def checks(device, families, compile_backend: str) -> list[dict]:
    """Correctness of the fast paths on this device, one row per check; never raises."""
    rows = []

    def record(name, family, fn):
        t0 = time.perf_counter()
        try:
            detail = fn()
            ok = True
        except Exception as e:  # recorded, so the speed parts still run
            ok, detail = False, f"{type(e).__name__}: {e}".splitlines()[0][:300]
            traceback.print_exc()
        rows.append({"check": name, "family": family, "ok": ok, "detail": detail,
                     "s": round(time.perf_counter() - t0, 1)})
        print(f"  check {name:28s} {family:12s} {'ok' if ok else 'FAILED'}  {detail}", flush=True)

    for fam in families:
        def decode(fam=fam):
            model = toy_model(fam, device, torch.float32).eval()
            prompt = torch.randint(0, 64, (4, 9), device=device)
            graph = greedy(model, prompt, 16, cuda_graph=True)
            eager = greedy(model, prompt, 16, cuda_graph=False)
            ref = model.generate(prompt, 16)
            if not (torch.equal(graph, eager) and torch.equal(eager, ref)):
                raise AssertionError(f"tokens differ: graph/eager {torch.equal(graph, eager)}, "
                                     f"eager/generate {torch.equal(eager, ref)}")
            return f"backends {sorted({str(m.backend_used()) for m in model.mixers})}"

        def compiled(fam=fam):
            eager, comp = toy_model(fam, device, torch.float32), toy_model(fam, device, torch.float32)
            comp.compile(fullgraph=True, backend=compile_backend)
            if list(comp.state_dict()) != list(eager.state_dict()):
                raise AssertionError("state_dict keys changed")
            idx = torch.randint(0, 64, (2, 256), device=device)
            amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
            outs, grads = [], []
            for m in (eager, comp):
                with amp:
                    out = m(idx)
                out.float().square().mean().backward()
                outs.append(out.float())
                grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
            d_out = (outs[1] - outs[0]).abs().max().item() / outs[0].abs().max().item()
            d_grad = (grads[1] - grads[0]).norm().item() / grads[0].norm().item()
            if d_out > 5e-2 or d_grad > 5e-2:
                raise AssertionError(f"relative difference out {d_out:.2e}, grad {d_grad:.2e}")
            return (f"fullgraph ok; rel diff out {d_out:.1e}, grad {d_grad:.1e} (bf16 autocast); "
                    f"backends {sorted({str(m.backend_used()) for m in eager.mixers})}")

        record("decode: cuda graph == eager", fam, decode)
        record(f"compile fullgraph ({compile_backend})", fam, compiled)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "results/bench")
    ap.add_argument("--parts", nargs="+", default=["checks", "train", "decode", "profile"],
                    choices=["checks", "train", "decode", "profile"])
    ap.add_argument("--families", nargs="+", default=list(bench.FAMILIES), choices=bench.FAMILIES)
    ap.add_argument("--cpu-smoke", action="store_true", help="toy sizes on CPU (tests use it)")
    args = ap.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.exit("scripts/gpu_speed.py needs a CUDA device (or --cpu-smoke)")
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary = []
    if "checks" in args.parts:
        print("== checks", flush=True)
        rows = checks(device, args.families, "eager" if args.cpu_smoke else "inductor")
        text = "# GPU checks\n\n" + bench.md_rows(rows, ["check", "family", "ok", "s", "detail"]) + "\n"
        atomic_write_text(out / "checks.md", text)
        summary.append(text)
    parts = [p for p in args.parts if p != "checks"]
    if parts:
        sections = bench.main(["--preset", "cpu" if args.cpu_smoke else "gpu", "--parts", *parts,
                               "--families", *args.families, "--out-dir", str(out)])
        summary += [s for s in sections if s.startswith(("## Training", "## Decoding"))]
    print(f"\n---- summary ({time.perf_counter() - t0:.0f} s; full results in {out}/) ----\n")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
