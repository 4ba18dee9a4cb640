"""`make memory-tail`: probe the three families' memory tails and write results/memory_tail.md with plots.

    python -m sessa_bench.memory_tail [--runs results/runs/table1_symbol_soup] [--budgets tiny small]

1. At initialisation: for every budget, family and Table 1 column (experiments table1_symbol_soup, 401-599
   tokens, table1_symbol_soup_long, 1801-2047, and table1_diffuse_mqar, its 1088-token val sequences; seed 0)
   a fresh model -> results/memory_tail/init/<experiment>/<run name>/probe.json.
2. Trained: every run folder under --runs (default: Table 1's SymbolSoup and Diffuse MQAR runs) that has a
   checkpoint and no probe.json of its model yet gets one (runs trained with probe=true already have it; one
   that records another step count than the run, written before an extension, is measured again); folders
   with neither are listed as not probed.
3. The report (tables and PNGs) is built from the probe.json files alone. Existing probe files are kept:
   delete one (or pass --force) to measure again.

Probe settings per budget (SETTINGS) keep the init probes to a few minutes on a 2-core CPU; they are written
into every probe.json (method, probes, positions, examples) and the report shows them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on the training machines
import matplotlib.pyplot as plt  # noqa: E402

from sessa_bench.probe import CURVES, FINAL, probe_config, probe_run, write_probe  # noqa: E402
from sessa_bench.run_folder import RunFolder, atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("sessa", "transformer", "mamba2")
RUN_EXPERIMENTS = ("table1_symbol_soup", "table1_diffuse_mqar")  # whose run folders are probed by default
# Table 1's columns: two SymbolSoup lengths, and Diffuse MQAR, the task the families learnt long-lag recall on
INIT_EXPERIMENTS = ("table1_symbol_soup", "table1_symbol_soup_long", "table1_diffuse_mqar")
# CPU-sized (a shared 2-core machine): one val example, a one-per-octave lag grid, 2 Hutchinson probes;
# tiny also probes every layer, small (~20M parameters, 401-599 tokens) only the final state.
SETTINGS = {
    "tiny": dict(n_examples=1, n_positions=4, probes=2, layers=None, lags_per_octave=1),
    "small": dict(n_examples=1, n_positions=2, probes=2, layers=[], lags_per_octave=1),
}
DEFAULT = dict(n_examples=2, n_positions=4, probes=4, layers=[], lags_per_octave=1)


def probe_init(budgets, families, out_dir: Path, force: bool = False,
               experiments=INIT_EXPERIMENTS) -> list[Path]:
    paths = []
    for experiment in experiments:
        for budget in budgets:
            for family in families:
                paths.append(_probe_init_one(experiment, family, budget, out_dir, force))
    return paths


def _probe_init_one(experiment: str, family: str, budget: str, out_dir: Path, force: bool) -> Path:
    from sessa_bench.compose import compose_train
    cfg = compose_train([f"experiment={experiment}", f"model={family}", f"budget={budget}", "seed=0"])
    path = out_dir / experiment / cfg.run_name / "probe.json"  # the run name does not say the length
    if path.exists() and not force:
        print(f"kept {path}", flush=True)
    else:
        t0 = time.time()
        write_probe(path.parent, probe_config(cfg, "init", **SETTINGS.get(budget, DEFAULT)))
        print(f"wrote {path} ({time.time() - t0:.0f} s)", flush=True)
    return path


def probe_trained(runs_dirs, force: bool = False) -> tuple[list[Path], list[str]]:
    """probe.json of every run folder under runs_dirs, measuring it where a checkpoint allows."""
    from omegaconf import OmegaConf
    paths, missing = [], []
    for runs in runs_dirs:
        for d in sorted(Path(runs).iterdir()) if Path(runs).is_dir() else []:
            folder = RunFolder(d)
            if not folder.config.exists():
                continue
            path, prev = d / "probe.json", d / "probe.prev.json"
            ckpt = folder.reported()[0]  # the weights the run reports (best or last)
            if path.exists() and not force and (folder.probe_current() or not ckpt.exists()):
                paths.append(path)  # without that checkpoint a probe of other weights is all there is (labelled)
            elif not path.exists() and prev.exists() and not ckpt.exists():
                paths.append(prev)  # the extension's probe did not finish: its shorter training's (own steps)
            elif ckpt.exists():
                budget = OmegaConf.load(folder.config).budget.name
                paths.append(probe_run(d, **SETTINGS.get(budget, DEFAULT))[0])
                print(f"wrote {path}", flush=True)
            else:
                full = d.resolve()  # --runs may be relative (the Makefile's default is)
                missing.append(str(full.relative_to(ROOT)) if full.is_relative_to(ROOT) else str(d))
    return paths, missing


# --- the report, from probe.json files only ---------------------------------------------------------------
def weights(run: dict) -> str:
    """`init`, or `trained` with the training's length and rate and which of its weights were probed (a
    trained model need not be a converged one; a run keeping its best-validation weights reports those, and
    a probe without `checkpoint` measured the last ones)."""
    if run["weights"] != "trained" or run.get("steps") is None:
        return run["weights"]
    lr = re.search(r"-lr([0-9.e+-]+)-s\d+$", run.get("run_name") or "")  # paper runs name their rate
    which = (f"best, step {run.get('checkpoint_step')}" if run.get("checkpoint") == "best" else "last model")
    return f"trained, {run['steps']} steps ({which})" + (f", lr {lr.group(1)}" if lr else "")


def tokens(r: dict) -> str:
    """The lengths of the probed examples (Table 1's two SymbolSoup columns differ by 4x)."""
    lo, hi = min(r["lengths"]), max(r["lengths"])
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _fmt(v, spec=".3f"):
    return "–" if v is None else format(v, spec)


def rows_of(results: list[dict], curve: str) -> list[str]:
    out = []
    for r in results:
        run, fit = r["run"], r["curves"][curve][FINAL]["fit"]
        p, e = fit["power"] or {}, fit["exponential"] or {}
        tau = e.get("tau")
        out.append(f"| {run['family']} | {run.get('task') or '?'} | {run['budget']} | {tokens(r)} | {weights(run)} | "
                   f"{run['seed']} | "
                   f"{r['model']['n_layers']} x {r['model']['d_model']} | "
                   f"{_fmt(p.get('exponent'))} | {_fmt(p.get('r2'))} | "
                   f"{_fmt(tau, '.1f') if e else '–'}{' (no decay)' if e and tau is None else ''} | "
                   f"{_fmt(e.get('r2'))} | {fit['better'] or 'too few lags'} |")
    return out


def layer_rows(results: list[dict]) -> list[str]:
    out = []
    for r in results:
        run = r["run"]
        for name in r["outputs"]:
            fits = [r["curves"][c][name]["fit"] for c in CURVES]
            if len(r["outputs"]) == 1:
                continue
            cells = []
            for fit in fits:
                p = fit["power"] or {}
                cells += [_fmt(p.get("exponent")), _fmt(p.get("r2")), fit["better"] or "–"]
            out.append(f"| {run['family']} | {run.get('task') or '?'} | {run['budget']} | {tokens(r)} | "
                       f"{weights(run)} | {name} | "
                       + " | ".join(cells) + " |")
    return out


def plot(results: list[dict], curve: str, path: Path) -> Path:
    fams = [f for f in FAMILIES if any(r["run"]["family"] == f for r in results)]
    fams += sorted({r["run"]["family"] for r in results} - set(fams))
    fig, axes = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.6), squeeze=False, sharey=True)
    for ax, fam in zip(axes[0], fams):
        for r in results:
            if r["run"]["family"] != fam:
                continue
            c = r["curves"][curve][FINAL]
            pts = [(L, v) for L, v in zip(r["lags"], c["influence"]) if v]
            run = r["run"]
            ax.plot([L for L, _ in pts], [v for _, v in pts], marker="o", ms=3,
                    ls="-" if run["weights"] == "trained" else "--",
                    label=f"{run.get('task') or '?'} {run['budget']} T={tokens(r)} {weights(run)} s{run['seed']}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(fam)
        ax.set_xlabel("lag L")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16))  # below: the curves stay visible
    axes[0][0].set_ylabel("influence ||dh_t/dx_{t-L}||" if curve == "by_position" else "influence ||dh_{s+L}/dx_s||")
    fig.suptitle(f"memory tail ({curve}, final hidden state)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _key(r: dict):
    run = r["run"]
    fam = FAMILIES.index(run["family"]) if run["family"] in FAMILIES else len(FAMILIES)
    return (run["weights"] != "init", run.get("task") or "", run["budget"] != "tiny", run["budget"], max(r["lengths"]),
            fam, run["family"], run["seed"])


def build_report(paths, out_md: Path, missing=(), notes: Path | None = None) -> str:
    results = sorted((json.loads(Path(p).read_text()) for p in paths), key=_key)
    if not results:
        raise ValueError("memory-tail: no probe.json files to report")
    settings = sorted({(r["run"]["budget"], r["method"], r["probes"], r["n_examples"], r["positions_per_example"],
                        r["source"], r["min_lag"], len(r["lags"]), max(r["lags"]), r["device"], r["dtype"])
                       for r in results})
    lines = [
        "# Memory tail: influence of a token against its lag",
        "",
        "Influence at lag L = root mean square of the Jacobian norm ||d h_t / d x_{t-L}||_F, with x the input "
        "embedding and h the final hidden state (after the last LayerNorm, before the head), on val examples of "
        "each run's task (the task column; `sessa_bench/probe.py`). **by_position**: averaged over output "
        "positions t >= L; **from_source**: from the first token (s = 0) to the output at L. Fits on lags >= "
        "the minimum lag: power law log I = a - p log L (exponent p) and exponential log I = a - L / tau; "
        "`better` is the fit with the higher R^2 (both predict log I from the same points). Weights `init`: a "
        "fresh model of the run's config (seed 0); `trained`: the run's checkpoint, the one its table reports (its "
        "best-validation weights where it kept them; the weights column says which).",
        "",
    ]
    for curve in CURVES:
        lines += [f"## {curve}", "",
                  "| family | task | budget | tokens | weights | seed | layers x width | power exponent p | R^2 "
                  "| exp. tau | R^2 | better |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|", *rows_of(results, curve), "",
                  f"![{curve}](memory_tail_{curve}.png)", ""]
    per_layer = layer_rows(results)
    if per_layer:
        lines += ["## Per layer (input embedding to the output of block l)", "",
                  "| family | task | budget | tokens | weights | output | p (by_position) | R^2 | better "
                  "| p (from_source) | R^2 | better |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|", *per_layer, ""]
    lines += ["## Probe settings", "",
              "| budget | method | probes | examples | positions/example | source | min lag | lags | max lag | device | dtype |",
              "|---|---|---|---|---|---|---|---|---|---|---|",
              *[f"| {' | '.join('–' if v is None else str(v) for v in s)} |" for s in settings], ""]
    if missing:
        lines += ["Run folders without a checkpoint or probe.json (not probed after training; `sessa-bench "
                  "probe DIR --init` still works on them): " + ", ".join(f"`{m}`" for m in missing), ""]
    commits = sorted({r.get("git_commit", "unknown") for r in results})
    lines += [f"_Built by `python -m sessa_bench.memory_tail` (make memory-tail) from {len(results)} probe.json "
              f"files; probe commits: {', '.join(commits)}._", ""]
    if notes is not None and notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    for curve in CURVES:
        plot(results, curve, out_md.parent / f"memory_tail_{curve}.png")
    text = "\n".join(lines)
    atomic_write_text(out_md, text)
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="*", default=None,
                    help=f"folders of run folders (default: results/runs/{{{','.join(RUN_EXPERIMENTS)}}}, "
                         f"those present)")
    ap.add_argument("--budgets", nargs="*", default=["tiny", "small"], help="budgets probed at init")
    ap.add_argument("--experiments", nargs="*", default=list(INIT_EXPERIMENTS),
                    help="experiments (Table 1's columns) probed at init")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--out", default=str(ROOT / "results" / "memory_tail.md"))
    ap.add_argument("--force", action="store_true", help="measure again even where probe.json exists")
    args = ap.parse_args(argv)
    runs = args.runs if args.runs is not None else \
        [p for e in RUN_EXPERIMENTS if (p := ROOT / "results" / "runs" / e).is_dir()]
    out = Path(args.out)
    paths = probe_init(args.budgets, args.families, out.parent / "memory_tail" / "init", args.force,
                       args.experiments)
    trained, missing = probe_trained(runs, args.force)
    build_report(paths + trained, out, missing, notes=out.parent / "memory_tail_notes.md")
    print(f"wrote {out}")


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    with user_errors("python -m sessa_bench.memory_tail"):
        main()
