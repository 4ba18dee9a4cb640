"""Runs side by side outside a paper table's protocol: a control (another block on a table's task) beside the
table's own runs at the same rate. One row per run folder, from its summary.json and metrics.jsonl only:
the architecture, the rate and seed, the validation metric of the reported checkpoint, the first step its
validation curve passed a level (when a model "took off"), the test metric, overall and per slice.

    python -m sessa_bench.report.controls control_diffuse_mqar_16000 table1_diffuse_mqar:transformer:0.0003 \
        --out results/control_diffuse_mqar.md

A selection is EXPERIMENT[:FAMILY[:LR]]: every finished run of the experiment, or only those of one family
(and rate)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sessa_bench.files import atomic_write_text
from sessa_bench.report.collect import collect
from sessa_bench.report.markdown import device, md_table, number, short_commit
from sessa_bench.report.protocol import curve
from sessa_bench.run_folder import RunFolder


def parse_selection(text: str) -> tuple[str, str | None, float | None]:
    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise ValueError(f"selection {text!r}: expected EXPERIMENT[:FAMILY[:LR]]")
    lr = None
    if len(parts) == 3:
        try:
            lr = float(parts[2])
        except ValueError:
            raise ValueError(f"selection {text!r}: LR must be a number, got {parts[2]!r}") from None
    return parts[0], (parts[1] or None) if len(parts) > 1 else None, lr


def select(results_dir: Path, text: str) -> list[dict]:
    """The summaries a selection names, each with its training curve under "_curve" rows."""
    experiment, family, lr = parse_selection(text)
    if not (results_dir / experiment).is_dir():
        raise ValueError(f"selection {text!r}: no folder {results_dir / experiment}")
    out = []
    for s in collect(results_dir, experiment):
        if family is not None and s["family"] != family:
            continue
        if lr is not None and abs(s["optim"]["lr"] - lr) > 1e-12 * max(1.0, lr):
            continue
        out.append(s | {"_rows": RunFolder(results_dir / experiment / s["run_name"]).fit_metrics(s)})
    if not out:
        raise ValueError(f"selection {text!r}: no finished run matches under {results_dir / experiment}")
    return out


def first_step_at(points: list[tuple[int, float]], level: float) -> int | None:
    """The first validation step whose value reached `level` (None if none did)."""
    return next((step for step, v in points if v >= level), None)


def architecture(s: dict) -> str:
    m = s["model"]
    return f"{m['mixer']} {m['n_layers']} x {m['d_model']}, {m.get('block', 'gated')}"


def render(runs: list[dict], metric: str = "val/acc", level: float = 0.5) -> str:
    test = metric.replace("val/", "test/", 1)
    slices = sorted({k[len(test) + 1:] for s in runs for k in s["final"] if k.startswith(test + "/lag=")},
                    key=lambda name: int(name.split("=")[1].split("-")[0]))
    header = ["experiment", "family", "architecture", "params", "lr", "seed", "steps", f"{metric} (reported)",
              "tested", f"first step {metric} >= {level}", test, *(f"{test} {name}" for name in slices)]
    rows = []
    for s in runs:
        points = curve(s["_rows"], metric)
        tested = f"best {s['best_step']}" if s.get("test_from") == "best" else "last"
        took_off = first_step_at(points, level)
        rows.append([s["experiment"], s["family"], architecture(s), f"{s['params']['total']:,}",
                     f"{s['optim']['lr']:g}", s["seed"], s["steps"], number(s["final"].get(metric), ".4f"),
                     tested, "never" if took_off is None else took_off + 1,
                     number(s["final"].get(test), ".4f"),
                     *(number(s["final"].get(f"{test}/{name}"), ".3f") for name in slices)])
    facts = runs[0]["task_facts"]
    refs = ", ".join(f"{k} {facts[k]:.4f}" for k in ("chance", "baseline", "ceiling") if facts.get(k) is not None)
    caption = (f"_One row per run folder (summary.json and metrics.jsonl only). `{metric} (reported)`: at the "
               f"checkpoint the run reports (`tested`: its best-validation step, or its last); `first step`: the "
               f"first validation whose {metric} reached {level} (steps counted from 1). Task `{facts['name']}`"
               f"{': ' + refs if refs else ''}. Devices: {', '.join(sorted({device(s) for s in runs}))}; "
               f"commits: {', '.join(sorted({short_commit(s['git_commit']) for s in runs}))}. Built by "
               f"`python -m sessa_bench.report.controls`._")
    return md_table(header, rows) + "\n\n" + caption + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("selections", nargs="+", metavar="EXPERIMENT[:FAMILY[:LR]]")
    p.add_argument("--results-dir", default="results/runs")
    p.add_argument("--metric", default="val/acc", help="a validation metric of the runs' summaries")
    p.add_argument("--level", type=float, default=0.5, help="the level `first step` looks for")
    p.add_argument("--title", default="Controls")
    p.add_argument("--out", help="write the Markdown here (default: print it)")
    a = p.parse_args(argv)
    if not a.metric.startswith("val/"):
        p.error(f"--metric: a validation metric (val/...), got {a.metric!r}")
    try:
        runs = [s for text in a.selections for s in select(Path(a.results_dir), text)]
    except ValueError as e:
        p.error(str(e))
    text = f"# {a.title}\n\n" + render(runs, a.metric, a.level)
    if a.out:
        atomic_write_text(Path(a.out), text)
        print(f"wrote {a.out} ({len(runs)} runs)")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    with user_errors("python -m sessa_bench.report.controls"):
        raise SystemExit(main())
