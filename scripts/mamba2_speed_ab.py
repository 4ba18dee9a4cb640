"""Where Mamba2's time goes at Table 1's shapes, and whether two execution variants win it back: one GPU, the
table's model (`experiment=table1_symbol_soup model=mamba2`: 25 x 288, class head, batch 32 x 600, bf16
autocast, fused AdamW), in one process so every variant shares the Triton autotuning of the first.

    python scripts/mamba2_speed_ab.py --out DIR [--reps 10] [--graphs]
                                      [--variants 1:conv1d 64:conv1d 1:shift 64:shift] [--override K=V ...]

Per variant (`<in_proj_align>:<conv_impl>`, models/mamba2.py: padding in_proj's 1289 rows to an aligned
width for the GEMM; the depthwise conv as F.conv1d, as shifted copies or as our fused Triton kernel), on a
fresh model of the same seed:
the training step (median ms of --reps after 5 warm-up steps; eager, or with --graphs its blocks in CUDA
graphs as the table runs train), its device time (the kernels of one profiled step: an eager step on the
H200 is host-bound, so its wall time says little about a graphed one), the loss and gradient-norm
differences to the first variant on the same batch and initial weights (the variants compute the same
function: tests/test_mamba2.py, float64), and the forward of one evaluation batch under no_grad (what a
validation repeats ~63 times over SymbolSoup's 2000 examples; eager in the runs). Once: the first forward
and backward's seconds (mamba_ssm's Triton compilation and autotuning: what a cold process pays) and the
seconds to torch.save the model and optimizer state (what each checkpoint costs). Writes
DIR/mamba2_speed_ab.md as it goes, so a call cut at its limit still brings back the rows measured by then.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from sessa_bench.bench.timing import measure  # noqa: E402
from sessa_bench.bench.training import sync  # noqa: E402
from sessa_bench.models.mamba2 import CONV_IMPLS  # noqa: E402


def table_model(device, overrides=()):
    from hydra.utils import instantiate

    from sessa_bench.compose import compose_train
    from sessa_bench.models.backbone import Backbone
    from sessa_bench.train import resolve_model
    cfg = compose_train(["experiment=table1_symbol_soup", "model=mamba2", *overrides])
    task = instantiate(cfg.task)  # its facts only: no data is generated
    torch.manual_seed(0)
    model_cfg, _ = resolve_model(cfg, task)
    return Backbone(model_cfg).to(device), task, int(cfg.data.batch_size)


def variant(text: str) -> str:
    align, sep, conv = text.partition(":")
    if not (sep and align.isdigit() and int(align) > 0 and conv in CONV_IMPLS):
        raise argparse.ArgumentTypeError(f"{text!r}: must be <in_proj_align>:<conv_impl>, align a positive "
                                         f"integer and conv_impl one of {', '.join(CONV_IMPLS)} (e.g. 64:conv1d)")
    return text


def device_ms(step, cuda: bool) -> float | None:
    """The device time of one step (the sum of its kernels' self time): what a graphed step costs, since CUDA
    graphs take the host out of the loop."""
    if not cuda:
        return None
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    return sum(e.self_device_time_total for e in prof.key_averages()) / 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--seq-len", type=int, default=600)
    ap.add_argument("--batch", type=int, default=None, help="default: the experiment's data.batch_size")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a dry run of the script")
    ap.add_argument("--graphs", action="store_true",
                    help="each variant's blocks replayed in CUDA graphs (sessa_bench/cuda_graphs.py), as the "
                         "table runs train")
    ap.add_argument("--variants", nargs="+", default=["1:conv1d", "64:conv1d", "1:shift", "64:shift"],
                    type=variant, help="<in_proj_align>:<conv_impl>, e.g. 64:conv1d")
    ap.add_argument("--override", action="append", default=[], dest="overrides",
                    help="a Hydra override of the composed run config (a CPU dry run: budget=tiny); repeatable")
    args = ap.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("mamba2_speed_ab.py: no CUDA GPU here (--device cpu: a dry run)", file=sys.stderr)
        return 2
    if args.graphs and not cuda:
        print("mamba2_speed_ab.py: --graphs needs CUDA", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    amp = torch.autocast(args.device, dtype=torch.bfloat16, enabled=cuda)
    from sessa_bench.run_folder import git_commit
    head: list[str] = []
    lines: list[str] = []

    def write():
        (out / "mamba2_speed_ab.md").write_text("\n".join(head + lines) + "\n")

    ref = None
    for n, v in enumerate(args.variants):
        align, conv = v.split(":")
        model, task, batch = table_model(device, args.overrides)  # the same seed: the same weights each time
        batch = args.batch or batch
        for m in model.mixers:
            m.in_proj_align, m.conv_impl = int(align), conv
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
        g = torch.Generator().manual_seed(0)
        idx = torch.randint(0, task.vocab_size, (batch, args.seq_len), generator=g).to(device)
        labels = torch.randint(0, task.num_classes, (batch,), generator=g).to(device)

        def loss_grads():
            with amp:
                logits = model(idx)
            loss = F.cross_entropy(logits.float(), labels)
            loss.backward()
            return loss.detach()

        def step():
            loss_grads()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def evaluate():
            with torch.no_grad(), amp:
                model(idx)

        t0 = time.perf_counter()
        loss = float(loss_grads())  # eager, at the initial weights: the variants' check
        sync(device)
        first = time.perf_counter() - t0
        gnorm = float(torch.sqrt(sum(p.grad.float().square().sum() for p in model.parameters()
                                     if p.grad is not None)))
        opt.zero_grad(set_to_none=True)
        if n == 0:
            head += ["# Mamba2 at Table 1's shapes: execution variants", "",
                     f"- device: {torch.cuda.get_device_name() if cuda else 'cpu (a dry run)'}; torch "
                     f"{torch.__version__}; commit {git_commit()}; model {len(model.blocks)} x {model.cfg.d_model}, "
                     f"batch {batch} x {args.seq_len}, {'bf16 autocast, fused AdamW' if cuda else 'float32, AdamW'}"
                     f"; backend {sorted({str(m.backend_used()) for m in model.mixers})}; "
                     f"{'blocks in CUDA graphs' if args.graphs else 'eager'}",
                     f"- rerun: `python scripts/mamba2_speed_ab.py --out DIR --reps {args.reps}"
                     f"{' --graphs' if args.graphs else ''} --variants {' '.join(args.variants)}`",
                     f"- first forward and backward (a cold process: mamba_ssm's Triton compilation and "
                     f"autotuning): {first:.1f} s"]
            table_head = ["", "| in_proj_align | conv_impl | step ms | tokens/s | x first | device ms per step | "
                     "x first | loss diff | grad-norm diff | eval forward ms (1 batch) | x first |",
                     "|---|---|---|---|---|---|---|---|---|---|---|"]
        if args.graphs:
            from sessa_bench.cuda_graphs import GraphedBlocks
            GraphedBlocks(model.blocks)  # captured in the warm-up steps, as in training
        for _ in range(5):
            step()
        if n == 0:  # after optimizer steps, so the state holds AdamW's moments, as a run's checkpoint does
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, Path(tmp) / "ckpt.pt")
                head.append(f"- torch.save of model + optimizer state "
                            f"({(Path(tmp) / 'ckpt.pt').stat().st_size / 2**20:.0f} MiB, local disk): "
                            f"{time.perf_counter() - t0:.2f} s")
            head += table_head
        ms = measure(step, device, warmup=0, reps=args.reps)["ms"]  # median
        dev = device_ms(step, cuda)
        ev = measure(evaluate, device, warmup=1, reps=args.reps)["ms"]
        ref = ref or (ms, dev, ev, loss, gnorm)
        x_dev = f"{ref[1] / dev:.2f}" if dev else "-"
        lines.append(f"| {align} | {conv} | {ms:.2f} | {batch * args.seq_len / ms * 1e3:,.0f} | {ref[0] / ms:.2f} | "
                     f"{'-' if dev is None else f'{dev:.2f}'} | {x_dev} | {abs(loss - ref[3]):.2e} | "
                     f"{abs(gnorm - ref[4]) / ref[4]:.2e} | {ev:.2f} | {ref[2] / ev:.2f} |")
        print(lines[-1], flush=True)
        write()
        del model, opt
    lines += ["", "`step ms`: the training step's wall time (median of --reps); `device ms`: the sum of its "
              "kernels' time in one profiled step, what a step costs once the host is out of the loop (CUDA "
              "graphs); `x first`: the first variant's / this one's (> 1: faster). Loss and gradient-norm "
              "differences: to the first variant's, on the same batch at the same initial weights (eager bf16 "
              "autocast: rounding differs between kernels; exactness is tests/test_mamba2.py's, in float64)."]
    write()
    print(f"wrote {out / 'mamba2_speed_ab.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
