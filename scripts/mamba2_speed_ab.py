"""Where Mamba2's time goes at Table 1's shapes, and whether two execution variants win it back: one GPU, the
table's model (`experiment=table1_symbol_soup model=mamba2`: 25 x 288, class head, batch 32 x 600, bf16
autocast, fused AdamW), in one process so every variant shares the Triton autotuning of the first.

    python scripts/mamba2_speed_ab.py --out DIR [--reps 10] [--variants 1:conv1d 16:conv1d 64:conv1d 16:shift]

Per variant (`<in_proj_align>:<conv_impl>`, models/mamba2.py: padding in_proj's 1289 rows to an aligned
width for the GEMM; the depthwise conv as F.conv1d or as shifted copies): the eager training step (median ms
of --reps after 3 warm-up steps), the loss and gradient-norm differences to the first variant on the same
batch (the variants compute the same function: tests/test_mamba2.py, float64), and the forward of one
evaluation batch under no_grad (what a validation repeats ~63 times over SymbolSoup's 2000 examples). Once:
the first step's seconds (mamba_ssm's Triton compilation and autotuning: what a cold process pays), the
seconds to torch.save the model and optimizer state (what each checkpoint costs), and a profile of one step
of the first and the last variant (top kernels by device time). Writes DIR/mamba2_speed_ab.md as it goes, so
a call cut at its limit still brings back the rows measured by then.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def table_model(device):
    from hydra.utils import instantiate

    from sessa_bench.compose import compose_train
    from sessa_bench.models.backbone import Backbone
    from sessa_bench.train import resolve_model
    cfg = compose_train(["experiment=table1_symbol_soup", "model=mamba2"])
    task = instantiate(cfg.task)  # its facts only: no data is generated
    torch.manual_seed(0)
    model_cfg, _ = resolve_model(cfg, task)
    return Backbone(model_cfg).to(device), task, int(cfg.data.batch_size)


def median_ms(fn, reps: int, cuda: bool) -> float:
    times = []
    for _ in range(reps):
        if not cuda:  # a dry run of the script on CPU
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--seq-len", type=int, default=600)
    ap.add_argument("--batch", type=int, default=None, help="default: the experiment's data.batch_size")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a dry run of the script")
    ap.add_argument("--variants", nargs="+", default=["1:conv1d", "16:conv1d", "64:conv1d", "16:shift"])
    args = ap.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("mamba2_speed_ab.py: no CUDA GPU here (--device cpu: a dry run)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    model, task, batch = table_model(device)
    batch = args.batch or batch
    mixers = list(model.mixers)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, task.vocab_size, (batch, args.seq_len), generator=g).to(device)
    labels = torch.randint(0, task.num_classes, (batch,), generator=g).to(device)
    amp = torch.autocast(args.device, dtype=torch.bfloat16, enabled=cuda)

    def loss_grads():
        with amp:
            logits = model(idx)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        return loss

    def step():
        loss_grads()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def evaluate():
        with torch.no_grad(), amp:
            model(idx)

    t0 = time.perf_counter()
    step()
    sync(cuda)
    first = time.perf_counter() - t0
    from sessa_bench.run_folder import git_commit
    head = ["# Mamba2 at Table 1's shapes: execution variants", "",
            f"- device: {torch.cuda.get_device_name() if cuda else 'cpu (a dry run)'}; torch {torch.__version__}; "
            f"commit {git_commit()}; model {len(model.blocks)} x {model.cfg.d_model}, batch {batch} x "
            f"{args.seq_len}, {'bf16 autocast, fused AdamW' if cuda else 'float32, AdamW'}; backend "
            f"{sorted({str(m.backend_used()) for m in mixers})}",
            f"- rerun: `python scripts/mamba2_speed_ab.py --out DIR --reps {args.reps} --variants "
            f"{' '.join(args.variants)}`"]
    lines: list[str] = []

    def write():
        (out / "mamba2_speed_ab.md").write_text("\n".join(head + lines) + "\n")

    head.append(f"- first step (a cold process: mamba_ssm's Triton compilation and autotuning): "
                f"{first:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, Path(tmp) / "ckpt.pt")
        head.append(f"- torch.save of model + optimizer state ({(Path(tmp) / 'ckpt.pt').stat().st_size / 2**20:.0f} "
                    f"MiB, local disk): {time.perf_counter() - t0:.2f} s")
    head += ["", "| in_proj_align | conv_impl | train step ms | tokens/s | x first | loss diff | grad-norm diff "
             "| eval forward ms (1 batch) | x first |", "|---|---|---|---|---|---|---|---|---|"]
    write()
    ref = None
    weights = {k: v.clone() for k, v in model.state_dict().items()}  # every variant's check starts here
    for v in args.variants:
        align, conv = v.split(":")
        for m in mixers:
            m.in_proj_align, m.conv_impl = int(align), conv
        model.load_state_dict(weights)
        loss = float(loss_grads())  # the same batch and weights for every variant
        gnorm = float(torch.sqrt(sum(p.grad.float().square().sum() for p in model.parameters() if p.grad is not None)))
        opt.zero_grad(set_to_none=True)
        for _ in range(3):
            step()
        ms = median_ms(step, args.reps, cuda)
        ev = median_ms(evaluate, args.reps, cuda)
        ref = ref or (ms, ev, loss, gnorm)
        lines.append(f"| {align} | {conv} | {ms:.2f} | {batch * args.seq_len / ms * 1e3:,.0f} | "
                     f"{ref[0] / ms:.2f} | {abs(loss - ref[2]):.2e} | {abs(gnorm - ref[3]) / ref[3]:.2e} | "
                     f"{ev:.2f} | {ref[1] / ev:.2f} |")
        print(lines[-1], flush=True)
        write()
    lines += ["", "`x first`: the first variant's time / this one's (> 1: faster). Loss and gradient-norm "
              "differences: to the first variant's, on the same batch and weights (bf16 autocast: rounding "
              "differs between kernels; exactness is tests/test_mamba2.py's, in float64)."]
    for v in (args.variants[0], args.variants[-1]):
        align, conv = v.split(":")
        for m in mixers:
            m.in_proj_align, m.conv_impl = int(align), conv
        step()
        sync(cuda)
        kind = torch.profiler.ProfilerActivity.CUDA if cuda else torch.profiler.ProfilerActivity.CPU
        with torch.profiler.profile(activities=[kind]) as prof:
            step()
            sync(cuda)
        table = prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                                          row_limit=14, max_name_column_width=70)
        lines += ["", f"## Profile of one step, variant {v} (top by device time)", "", "```", table, "```"]
        write()
    print(f"wrote {out / 'mamba2_speed_ab.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
