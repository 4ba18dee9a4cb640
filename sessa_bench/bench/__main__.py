"""`make bench`: python -m sessa_bench.bench [--preset gpu|cpu] [--parts blocks train decode reads profile]
[--families ...] [--budgets NAME ...]

--budgets times only those of the preset's training shapes (e.g. `--budgets small`: Table 1's shapes on GPU);
--families sessa sessa_wavefronts with --parts train: Sessa's two Triton solves side by side in one run;
--decode-variants only these decode variants instead of the preset's (a short lease: READ:eager|compiled[:M]).
Writes results/bench/<device>.md, .csv and .png (block time and memory versus T)."""

from __future__ import annotations

import argparse
import datetime
import functools
import re
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from sessa_bench.bench.block_profile import profile_blocks
from sessa_bench.bench.block_profile import section as block_profile_section
from sessa_bench.bench.blocks import GRAPHED, bench_blocks, profile_lengths, profiled
from sessa_bench.bench.decode_profile import profile_decoding
from sessa_bench.bench.decode_profile import section as decode_profile_section
from sessa_bench.bench.decoding import bench_decoding, with_batch_ratio
from sessa_bench.bench.harness_loop import window
from sessa_bench.bench.harness_profile import harness_section
from sessa_bench.bench.profile import profile_training
from sessa_bench.bench.reads import bench_reads
from sessa_bench.bench.training import bench_training, side_by_side
from sessa_bench.compose import compose_file
from sessa_bench.files import atomic_write_text
from sessa_bench.models.generate import resolve_read
from sessa_bench.report.markdown import csv_text, md_table, number
from sessa_bench.run_folder import git_commit

FAMILIES = ("sessa", "transformer", "mamba2")
# model configs timed by the train part only, beside the families (a solve setting of Sessa's as its own model)
TRAIN_ONLY = ("sessa_wavefronts",)
PARTS = ("blocks", "train", "decode", "reads", "profile")
PRESETS = ("gpu", "cpu")  # conf/bench/<preset>.yaml


def load_preset(name: str) -> dict:
    p = OmegaConf.to_container(compose_file(f"bench/{name}"))
    p["dtype"] = getattr(torch, p["dtype"])
    return p


def device_slug(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def md_rows(rows, cols, specs=None) -> str:
    specs = specs or {}
    return md_table(cols, [[number(r.get(c), specs.get(c, ".2f")) for c in cols] for r in rows])


def block_table(rows) -> str:
    """One line per (impl, T): fwd+bwd and fwd-only side by side."""
    merged = {}
    for r in rows:
        m = merged.setdefault((r["impl"], r["T"]), {"impl": r["impl"], "T": r["T"], "batch": r["batch"]})
        key = "fb" if r["mode"] == "fwd+bwd" else "f"
        m[f"{key}_ms"], m[f"{key}_x"], m[f"{key}_gib"] = r["ms"], r["x_attention"], r["peak_gib"]
        m[f"{key}_xmin"] = r.get("x_minimal")
        if "graph_ms" in r:
            m[f"{key}_graph_ms"], m[f"{key}_graph_xmin"] = r["graph_ms"], r.get("x_minimal_graph")
        if "err" in r:
            m["err"] = r["err"]
    cols = ["impl", "T", "batch", "fb_ms", "fb_x", "fb_xmin", "fb_gib", "f_ms", "f_x", "f_xmin", "f_gib"]
    cols += [c for c in ("fb_graph_ms", "fb_graph_xmin", "f_graph_ms", "f_graph_xmin", "err")
             if any(c in m for m in merged.values())]
    return md_rows(sorted(merged.values(), key=lambda m: (m["impl"], m["T"])), cols, {"err": ".1e"})


def plot(rows, path: Path, title: str):
    from sessa_bench.report.plots import save  # atomic PNG write; imported first, it selects the Agg backend

    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for impl in sorted({r["impl"] for r in rows}):
        pts = sorted((r["T"], r["ms"], r["peak_gib"]) for r in rows
                     if r["impl"] == impl and r["mode"] == "fwd+bwd" and isinstance(r["ms"], float))
        style = "-" if impl.startswith("sessa") else "--" if impl.startswith("attention") else ":"
        a.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=impl)
        b.plot([p[0] for p in pts], [p[2] for p in pts], style, marker="o", label=impl)
    has_mem = any(isinstance(r["peak_gib"], float) and r["peak_gib"] > 0 for r in rows)  # NaN on CPU: no allocator statistics there
    for ax, ylabel in ((a, "fwd+bwd time per block (ms)"), (b, "peak memory (GiB)" if has_mem else
                                                             "peak memory (not measured on CPU)")):
        ax.set_xscale("log", base=2)
        if ax is a or has_mem:
            ax.set_yscale("log")
        ax.set_xlabel("sequence length T (tokens per batch fixed)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    a.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save(fig, path)


PARTIAL = "\n_Partial: the run was cut before this part finished; the rows above are complete measurements._\n"


LOOP_COLS = ("loop_eager_tok_s", "loop_eager_x", "loop_compiled_tok_s", "loop_compiled_x", "loop_graphed_tok_s",
             "loop_graphed_x")
GRAPHED_COLS = ("graphed_tok_s", "graphs_speedup", "graphed_mfu")


def harness_text(t) -> str:
    """What the harness-loop columns measure (the preset's train.harness)."""
    w = window(t["steps"], t["warmup"])
    compiled = "eager and compiled (`compile=true`: inductor)" if "inductor" in t["compile_backends"] else \
        "eager only (its `compile=true` is inductor, not the bare rows' backend here)"
    if "cuda_graphs" in t["compile_backends"]:
        compiled += " and graphed (`cuda_graphs=true`, on CUDA)"
    return (f" `loop_*`: the real training loop of `sessa-bench train` at the same shapes, {compiled}: the "
            f"Lightning Trainer (`trainer=gpu`: bf16-mixed, on GPU; `trainer=cpu` on CPU), LitSequenceModel, "
            f"the data module (MQAR rows of exactly T tokens at the shape's vocabulary) and the callbacks, "
            f"gradient clipping 1.0 and its AdamW (fused on GPU, as the bare step's); tokens/s from the run's own "
            f"Throughput callback over {w} steps after a first window of {w} "
            f"(compilation excluded); validation and the checkpoint in one more step after them. `loop_*_x` = "
            f"harness / bare step of the same compile setting; the goal is >= 0.9.")


def compiler(t) -> str | None:
    """The torch.compile backend of the compiled rows (cuda_graphs is no compiler)."""
    return next((b for b in reversed(t["compile_backends"]) if b not in (None, "cuda_graphs")), None)


def error_list(rows, what) -> str:
    """The rows that failed, one list line each (`what`(row): which measurement), after a section's table."""
    lines = [f"- {what(r)}: {r['error']}" for r in rows if r.get("error")]
    return "\n" + "\n".join(lines) + "\n" if lines else ""


def table_section(heading: str, caption: str, table, columns, formats, rows, what) -> str:
    """A timed part's section: its heading, its caption, the table of `table` (md_rows), then the rows of
    `rows` that failed (error_list)."""
    return f"## {heading}\n\n{caption}\n\n" + md_rows(table, columns, formats) + "\n" + error_list(rows, what)


def train_section(rows, t) -> str:
    shapes = "; ".join(f"`{x['budget_name']}` T={x['seq_len']} batch {x['batch']} vocab {x['vocab']}"
                       for x in t["shapes"])
    merged = side_by_side(rows)
    loop_cols = [c for c in LOOP_COLS if any(c in m for m in merged)]
    graphed_cols = [c for c in GRAPHED_COLS if any(c in m for m in merged)]
    caption = (f"{shapes}; bf16 autocast on GPU, AdamW (fused on GPU); {t['steps']} timed steps "
            f"after {t['warmup']} warm-up steps (compilation and Triton autotuning excluded; `compile_s` is the "
            f"time of those warm-up steps). Compiled = `model.compile(backend={compiler(t)!r})` in "
            f"place, `graph_breaks` counted by Dynamo"
            + ("; graphed = the blocks' forward and backward captured in CUDA graphs and replayed "
               "(sessa_bench/cuda_graphs.py: eager's kernels; `graphs_speedup` = graphed / eager)"
               if graphed_cols else "") + ". MFU = tokens/s x training FLOPs per token "
            f"(sessa_bench/flops.py) / dense bf16 peak (989 TFLOP/s on H100/H200)."
            + (harness_text(t) if t.get("harness") else ""))
    return table_section(
        "Training", caption, merged,
        ["family", "budget", "seq_len", "batch", "params", "eager_tok_s", "compiled_tok_s", "speedup",
         *graphed_cols[:2], *loop_cols, "eager_mfu", "compiled_mfu", *graphed_cols[2:], "graph_breaks",
         "compile_s", "backends"],
        {"eager_tok_s": ",.0f", "compiled_tok_s": ",.0f", "params": ",", "eager_mfu": ".3f", "compiled_mfu": ".3f",
         "compile_s": ".0f", "loop_eager_tok_s": ",.0f", "loop_compiled_tok_s": ",.0f", "graphed_tok_s": ",.0f",
         "graphed_mfu": ".3f", "loop_graphed_tok_s": ",.0f"},
        rows, lambda r: f"harness loop, {r['family']} `{r['budget']}` T={r['seq_len']} {r['compile_backend']}")


def decode_section(rows, d, dtype_name) -> str:
    caption = (f"Budget `{d['budget_name']}`, {dtype_name}; {d['steps']} greedy steps after a context "
            f"of the given length through models/generate.py (static caches; the step replayed from a CUDA "
            f"graph on GPU), one untimed pass first; `read`: how the step reads the caches "
            f"(models/masked_read.py), `compile`: the step through torch.compile, `cache_len`: the caches' "
            f"positions (read whole every step, masked past the context), the steps' end rounded up to a "
            f"multiple of `cache_multiple`. Cache bytes per token of context, plus a fixed state per sequence; "
            f"`x_batch1`: tokens/s over the batch-1 row of the same family, read, compile, cache multiple and "
            f"context (issue 13's goal: >= 8 at batch 16).")
    return table_section(
        "Decoding", caption, with_batch_ratio(rows),
        ["family", "read", "compile", "cache_multiple", "context", "cache_len", "batch", "path", "tokens_per_s",
         "x_batch1", "ms_per_step", "cache_bytes_per_token", "cache_fixed_bytes_per_seq", "cache_gib"],
        {"tokens_per_s": ",.1f", "ms_per_step": ".3f"},
        rows, lambda r: f"{r['family']} read={r['read']} compile={r['compile']} cache_multiple="
                        f"{r.get('cache_multiple')} context {r['context']} batch {r['batch']}")


def reads_section(rows, r, dtype_name) -> str:
    caption = (f"The decode step's read alone (sessa_bench/bench/reads.py): each implementation "
            f"of models/masked_read.py at the shapes budget `{r['budget_name']}`'s decode step reads (`cache`: "
            f"attention's heads, or Sessa's one D-wide feedback head; `layers`: how many read it), one query per "
            f"head over {r['context']} positions, {dtype_name}; on CUDA at least {r['calls']} reads replayed from one "
            f"CUDA graph, cycling through copies of the cache too large together for the L2 cache, the median of "
            f"{r['reps']} replays. `gb_s`: bytes of K and V over the read's time; `x_sdpa`: "
            f"time over the eager sdpa read's (< 1: faster); `step_ms`: all `layers` reads; `triton/S`: the Triton "
            f"read at S splits of the cache (`triton`: its own choice); `rel_err`: against the float64 reduce "
            f"read.")
    return table_section(
        "Cache reads", caption, rows,
        ["family", "cache", "H", "Hkv", "d", "layers", "context", "batch", "read", "compile", "us", "gb_s",
         "x_sdpa", "step_ms", "rel_err"],
        {"us": ".1f", "gb_s": ",.0f", "step_ms": ".3f", "rel_err": ".1e"},
        rows, lambda x: f"{x['family']} {x['cache']} batch {x['batch']} read={x['read']} compile={x['compile']}")


def write(out: Path, slug: str, sections: list[str], csv_rows: list[dict]) -> None:
    atomic_write_text(out / f"{slug}.md", "\n".join(sections))
    keys = sorted({k for r in csv_rows for k in r}, key=lambda k: (k != "part", k))
    atomic_write_text(out / f"{slug}.csv", csv_text(keys, csv_rows, lineterminator="\r\n"))


def decode_variant(text: str) -> dict:
    """A decode variant from READ:eager|compiled[:M] (the read checked as the decoder checks it)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[1] not in ("eager", "compiled"):
        raise ValueError(f"{text!r}: expected READ:eager|compiled[:M], e.g. sdpa+matmul:compiled")
    resolve_read(parts[0], 1)
    out = {"read": parts[0], "compile": parts[1] == "compiled"}
    if len(parts) == 3:
        if not parts[2].isdigit() or int(parts[2]) < 1:
            raise ValueError(f"{text!r}: M (cache_multiple) must be a positive integer, got {parts[2]!r}")
        out["cache_multiple"] = int(parts[2])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=PRESETS, default="gpu" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES + TRAIN_ONLY,
                    help=f"default: {' '.join(FAMILIES)}; {' '.join(TRAIN_ONLY)}: with --parts train only")
    ap.add_argument("--out-dir", default="results/bench")
    # the allowed names depend on --preset, so they are checked after parsing
    budgets = {name: [s["budget_name"] for s in load_preset(name)["train"]["shapes"]] for name in PRESETS}
    ap.add_argument("--budgets", nargs="+", metavar="NAME",
                    help="train part: time only these budgets' shapes (default: all; "
                         + "; ".join(f"{k}: {' '.join(v)}" for k, v in budgets.items()) + ")")
    ap.add_argument("--lengths", nargs="+", type=int, metavar="T",
                    help="blocks part: time only these T (a short lease), and skip its largest-T search")
    ap.add_argument("--impls", nargs="+", metavar="NAME",
                    help="blocks part: time only these blocks (e.g. sessa/triton2-r1024-t128-dense), beside the two "
                         "attention references and sessa/dense (the reference of the err column)")
    ap.add_argument("--decode-variants", nargs="+", metavar="READ:eager|compiled[:M]",
                    help="decode part: time only these variants, in this order, instead of the preset's (READ as "
                         "decode's read=, e.g. sdpa+matmul; M: the caches' cache_multiple, default the decoder's)")
    args = ap.parse_args(argv)
    try:
        decode_variants = [decode_variant(v) for v in args.decode_variants or []]
    except ValueError as e:
        ap.error(f"argument --decode-variants: {e}")
    only = [f for f in args.families if f in TRAIN_ONLY]
    if only and set(args.parts) != {"train"}:
        ap.error(f"argument --families: {only[0]} is timed by the train part only; give --parts train")
    if args.impls and "blocks" not in args.parts:
        ap.error("argument --impls: names blocks of the blocks part, which --parts leaves out")
    if any(t < 1 for t in args.lengths or []):
        ap.error(f"argument --lengths: each T must be a positive integer, got {args.lengths}")
    bad = [b for b in args.budgets or [] if b not in budgets[args.preset]]
    if bad:
        ap.error(f"argument --budgets: invalid choice: {bad[0]!r} (--preset {args.preset} has: "
                 f"{', '.join(budgets[args.preset])})")
    families = tuple(args.families)
    p = load_preset(args.preset)
    if args.lengths:
        p.update(lengths=list(args.lengths), fit_lengths=[])
    device = torch.device("cuda" if args.preset == "gpu" else "cpu")
    if args.preset == "gpu" and not torch.cuda.is_available():
        sys.exit("--preset gpu needs a CUDA device")
    log = lambda s: print(s, flush=True)  # noqa: E731
    slug = device_slug(device)
    try:
        import triton
        triton_v = triton.__version__
    except ImportError:
        triton_v = "not installed"
    dtype_name = str(p["dtype"]).replace("torch.", "")
    header = (f"# Benchmark: {slug}\n\n"
              f"- device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}; "
              f"torch {torch.__version__}; triton {triton_v}; commit {git_commit()}; "
              f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
              f"- rerun: `python -m sessa_bench.bench --preset {args.preset} --parts {' '.join(args.parts)}"
              f"{' --families ' + ' '.join(families) if families != FAMILIES else ''}"
              f"{' --budgets ' + ' '.join(args.budgets) if args.budgets else ''}"
              f"{' --lengths ' + ' '.join(map(str, args.lengths)) if args.lengths else ''}"
              f"{' --impls ' + ' '.join(args.impls) if args.impls else ''}"
              f"{' --decode-variants ' + ' '.join(args.decode_variants) if args.decode_variants else ''}` "
              f"(`make bench` runs every part)\n")
    sections, csv_rows = [header], []

    if "blocks" in args.parts:
        log("== blocks")
        rows, fits = bench_blocks(device, p["dtype"], p["d_model"], p["n_heads"], p["tokens"], p["lengths"],
                                  p["mamba"], p["reps"], p["fit_lengths"], log, families, args.impls)
        sections.append(
            f"## Block level\n\nGated block around each mixer implementation; D={p['d_model']}, "
            f"{p['n_heads']} heads, {dtype_name}, {p['tokens']} tokens per batch (batch = tokens // T), "
            f"Mamba2 {p['mamba']}. Median of {p['reps']} after 2 warm-ups. `fb` = forward+backward, `f` = "
            f"forward only; `_x` = time / our SDPA attention block's (attention/sdpa) at the same T; `_xmin` = "
            f"time / the bench's minimal attention block's (attention/minimal: SDPA and a RoPE table in a few "
            f"lines, sessa_bench/bench/minimal_attention.py); `_gib` = peak memory above inputs; "
            f"sessa/triton2 is the two-level solve at R = 512 rows, sessa/triton2-r<R> at other R, "
            f"sessa/triton2-r1024-t<S> its strip kernels in tiles of S (the others: the chunk's 64), `d`: its "
            f"wavefronts reading each block's own alpha tiles from the strip (the mixer's default until lease 33: "
            f"r1024-t128d), `-dense`: each block inverted whole, no wavefront (the mixer's default since: "
            f"r1024-t128-dense; models/kernels/NOTES.md)."
            + (f" `_graph_`: the same step replayed from CUDA graphs (as `cuda_graphs=true` trains: eager's "
               f"kernels without the gaps between their launches; {', '.join(GRAPHED)}), `_graph_xmin` against "
               f"the graphed minimal block; `failed`: the capture failed (the log says why)."
               if any("graph_ms" in r for r in rows) else "")
            + (f" `err`: each Sessa block checked before it is timed (sessa_bench/bench/block_check.py): the "
               f"largest relative error (max |a - ref| / max |ref|) of its output and input gradient against the "
               f"same block (same {dtype_name} weights, input and output gradient) with the dense solve in "
               f"{'float64' if device.type == 'cpu' else 'float32'}; the dense solve's own row is the floor "
               f"that {dtype_name} rounding sets."
               if any("err" in r for r in rows) else "")
            + f"\n\n{block_table(rows)}\n\n"
            + (f"Largest single sequence (batch 1) that trains (forward+backward), trying T in "
               f"{p['fit_lengths']}:\n\n{md_rows(fits, ['impl', 'largest_T_fwd_bwd', 'tried_up_to'])}\n\n"
               if p["fit_lengths"] else "")
            + f"![block time and memory](./{slug}.png)\n")
        csv_rows += [{"part": "blocks", **r} for r in rows] + [{"part": "fits", **r} for r in fits]
        write(Path(args.out_dir), slug, sections, csv_rows)
        plot(rows, Path(args.out_dir) / f"{slug}.png",
             f"{slug}: gated block fwd+bwd, D={p['d_model']}, {dtype_name}, {p['tokens']} tokens/batch")
        bp = p.get("block_profile") or {}
        which = profiled(bp.get("impls", []), families, args.impls)  # which kernels hold the time (issue 14)
        for T in profile_lengths(bp.get("T", []), args.lengths) if which else []:
            profiles = profile_blocks(device, p["dtype"], p["d_model"], p["n_heads"], p["tokens"], p["mamba"],
                                      T, which, log=log)
            sections[-1] += "\n" + block_profile_section(profiles, T, max(1, p["tokens"] // T),
                                                          device.type == "cuda")
            write(Path(args.out_dir), slug, sections, csv_rows)

    def so_far(part: str, section):
        """on_row for a part: the tables so far plus this part's rows, marked partial until the part ends, so a
        run cut at a lease's limit still leaves what it measured."""
        return lambda rows: write(Path(args.out_dir), slug, sections + [section(rows) + PARTIAL],
                                  csv_rows + [{"part": part, **r} for r in rows])

    def run_part(part: str, title: str, section, bench) -> None:
        """One part: bench(on_row) measures its rows, written as they come (so_far), then as its section."""
        log(f"== {title}")
        rows = bench(so_far(part, section))
        sections.append(section(rows))
        csv_rows.extend({"part": part, **r} for r in rows)
        write(Path(args.out_dir), slug, sections, csv_rows)

    if "train" in args.parts:
        t = p["train"]
        if args.budgets:  # only these shapes are timed, and only they are named in the section
            t = {**t, "shapes": [s for s in t["shapes"] if s["budget_name"] in args.budgets]}
        run_part("train", "training", functools.partial(train_section, t=t),
                 lambda on_row: bench_training(device, families, log=log, on_row=on_row, **t))

    if "decode" in args.parts:
        d = {**p["decode"], **({"variants": decode_variants} if decode_variants else {})}
        run_part("decode", "decoding", functools.partial(decode_section, d=d, dtype_name=dtype_name),
                 lambda on_row: bench_decoding(device, p["dtype"], families, log=log, on_row=on_row, **d))

    if "reads" in args.parts:
        r = p["reads"]
        run_part("reads", "cache reads", functools.partial(reads_section, r=r, dtype_name=dtype_name),
                 lambda on_row: bench_reads(device, p["dtype"], families, log=log, on_row=on_row, **r))

    if "profile" in args.parts:
        log("== profile")
        q = dict(p["profile"])
        loops = q.pop("harness", None) or []  # the training loop's profile too, at this shape (or these)
        loops = [dict(x) for x in (loops if isinstance(loops, list) else [loops])]
        dec = dict(q.pop("decode", None) or {})  # a decode step's profile too (its `families`; default: all)
        tables = profile_training(device, families, log=log, **q)
        loop_sections = []
        # of these families at each shape (`families` in its entry; default: all the bench's); an entry for none
        # of the asked families writes no section (lease 26's `--families mamba2` left two empty headings)
        def asked(entry: dict) -> list:
            wanted = entry.pop("families", families)
            return [f for f in families if f in wanted]

        for shape in loops:
            if fams := asked(shape):
                loop_sections.append(harness_section(device, fams, shape, log=log))
        if dec and (fams := asked(dec)):
            profiles = profile_decoding(device, p["dtype"], fams, log=log, **dec)
            loop_sections.append(decode_profile_section(profiles, dec, device.type == "cuda"))
        sections.append(
            f"## Profile\n\nOne eager training step (budget `{q['budget_name']}`, T={q['seq_len']}, batch "
            f"{q['batch']}) under torch.profiler, top 15 by self {'CUDA' if device.type == 'cuda' else 'CPU'} "
            f"time.\n\n" + "\n".join(f"### {fam}\n\n```\n{tab}\n```\n" for fam, tab in tables.items())
            + "".join(f"\n{x}" for x in loop_sections))

    write(Path(args.out_dir), slug, sections, csv_rows)
    print("\n".join(sections))
    return sections


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    with user_errors("python -m sessa_bench.bench"):
        main()
