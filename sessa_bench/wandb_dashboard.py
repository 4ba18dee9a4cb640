"""`sessa-bench wandb dashboard --project P [--entity E] [--results results/runs] [--dry-run OUT.json]`:
a saved W&B workspace with one section per paper table, and one W&B Report per table with our numbers
beside the paper's, both built with wandb-workspaces from sessa_bench.dashboard.spec (the sections the
offline page shows too).

Runs are addressed as sessa_bench.wandb_run logs them: group = experiment_name, tag `family:<family>`,
the flat config key `model.family` (backend path `model.family.value`), final metrics and
`throughput_tokens_per_s` in the summary. `--dry-run` writes what would be saved as JSON and uploads
nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sessa_bench.dashboard.spec import Panel, Section, sections, table_rows
from sessa_bench.files import atomic_write_text
from sessa_bench.report.markdown import md_table

FAMILY = "model.family.value"   # a flat dotted config key: W&B's backend path ends in .value
WORKSPACE_NAME = "sessa-bench: paper tables"


def panel(p: Panel):
    import wandb_workspaces.reports.v2 as wr

    group = {"groupby": FAMILY, "groupby_aggfunc": "mean", "groupby_rangefunc": "minmax"}
    if p.kind == "curve":
        return wr.LinePlot(title=p.title, x="Step", y=list(p.metrics), title_x="training step", **group)
    if p.kind in ("final", "throughput", "slices"):
        return wr.BarPlot(title=p.title, metrics=list(p.metrics), orientation="v", **group)
    raise ValueError(f"panel kind {p.kind!r}: must be one of curve, final, slices, throughput")


def runset(entity: str, project: str, experiment: str, families: tuple[str, ...]):
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    return wr.Runset(entity=entity, project=project, name=experiment,
                     filters=expr.And(expr.Metric("Group") == experiment,
                                      expr.Tags().isin([f"family:{f}" for f in families])))


def workspace(sections_: list[Section], entity: str, project: str):
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    return ws.Workspace(
        entity=entity, project=project, name=WORKSPACE_NAME,
        sections=[ws.Section(name=s.table.title, panels=[panel(p) for p in s.panels], is_open=True)
                  for s in sections_],
        # a workspace has one run set: group it by experiment and family, so each curve is one of each
        runset_settings=ws.RunsetSettings(groupby=[expr.Metric("Group"), expr.Config(FAMILY)]))


def report(section: Section, entity: str, project: str, results_dir: str | Path):
    import wandb_workspaces.reports.v2 as wr

    table = section.table
    header, rows = table_rows(table, results_dir)
    blocks = [wr.MarkdownBlock(text=(
        f"Ours: mean ± std over the seeds at each family's chosen learning rate, from the run folders under "
        f"`{results_dir}` (the panels below show every run of the sweep); paper: arXiv 2604.18580 "
        f"(mean ± std over 2 seeds). Built by `sessa-bench wandb dashboard` from "
        f"`sessa_bench.report.paper.TABLES['{table.name}']`, the spec of `results/{table.name}.md`.\n\n"
        + md_table(header, rows)))]
    for exp in dict.fromkeys(p.experiment for p in section.panels):
        panels = [p for p in section.panels if p.experiment == exp]
        blocks += [wr.H2(text=exp),
                   wr.PanelGrid(runsets=[runset(entity, project, exp, table.families)],
                                panels=[panel(p) for p in panels])]
    return wr.Report(entity=entity, project=project, title=table.title[:128], description=table.name,
                     blocks=blocks, width="fluid")


def build(entity: str, project: str, results_dir: str | Path = "results/runs"):
    """(workspace, {table name: report}), not saved."""
    secs = sections(results_dir)
    return workspace(secs, entity, project), {s.table.name: report(s, entity, project, results_dir) for s in secs}


def serialise(ws_obj, reports: dict) -> dict:
    """JSON-able dicts: the workspace view as save() sends it, and each report's objects (a report's wire
    form needs the server: its run sets look up the project's internal id)."""
    from pydantic import TypeAdapter
    import wandb_workspaces.reports.v2 as wr

    as_json = TypeAdapter(wr.Report)
    return {"workspace": ws_obj._to_model().model_dump(by_alias=True, mode="json"),
            "reports": {k: as_json.dump_python(r, mode="json") for k, r in reports.items()}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="sessa-bench wandb dashboard", description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", required=True)
    ap.add_argument("--entity", default=None, help="default: the logged-in user's default entity")
    ap.add_argument("--results", default="results/runs", help="run folders for the tables and slice names")
    ap.add_argument("--dry-run", metavar="OUT_JSON", default=None, help="write the specs here, upload nothing")
    args = ap.parse_args(argv)
    if not Path(args.results).is_dir():
        raise FileNotFoundError(f"--results {args.results}: no such folder of run folders")
    if args.dry_run:
        ws_obj, reports = build(args.entity or "ENTITY", args.project, args.results)
        atomic_write_text(args.dry_run, json.dumps(serialise(ws_obj, reports), indent=1, sort_keys=True))
        print(f"wrote {args.dry_run}: 1 workspace, {len(reports)} reports (nothing uploaded)")
        return
    from sessa_bench.wandb_sync import require_login
    require_login()
    import wandb
    ws_obj, reports = build(args.entity or wandb.Api().default_entity, args.project, args.results)
    print(f"workspace: {ws_obj.save().url}")
    for name, r in reports.items():
        print(f"report {name}: {r.save().url}")
