"""The controls report on the committed Diffuse MQAR run folders: every row's numbers against the folders'
own summary.json and metrics.jsonl, read here directly; selections filter; bad selections are one line."""

import json
from pathlib import Path

import pytest

from sessa_bench.report.controls import main

RUNS = Path(__file__).resolve().parent.parent / "results" / "runs"


def rows_of(text: str) -> list[dict]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[1:]]


def by_hand(folder: Path, level: float) -> tuple[dict, int | None]:
    s = json.loads((folder / "summary.json").read_text())
    lines = (folder / "metrics.jsonl").read_text().splitlines()[:s["fit_metrics_lines"]]
    vals = {}
    for r in map(json.loads, lines):
        if "val/acc" in r:
            vals[r["step"]] = r["val/acc"]
    first = next((step + 1 for step, v in sorted(vals.items()) if v >= level), None)
    return s, first


def test_rows_match_the_run_folders(capsys):
    assert main(["control_diffuse_mqar_16000", "table1_diffuse_mqar:transformer:0.0003", "--level", "0.6"]) == 0
    rows = rows_of(capsys.readouterr().out)
    folders = sorted((RUNS / "control_diffuse_mqar_16000").glob("*/summary.json")) + \
        sorted((RUNS / "table1_diffuse_mqar").glob("transformer-*lr0.0003-*/summary.json"))
    assert len(rows) == len(folders) >= 2
    for row, summary_path in zip(rows, folders):
        s, first = by_hand(summary_path.parent, 0.6)
        assert (row["family"], int(row["seed"]), int(row["steps"])) == (s["family"], s["seed"], s["steps"])
        assert float(row["val/acc (reported)"]) == pytest.approx(s["final"]["val/acc"], abs=5e-5)
        assert float(row["test/acc"]) == pytest.approx(s["final"]["test/acc"], abs=5e-5)
        assert float(row["test/acc lag=512-1023"]) == pytest.approx(s["final"]["test/acc/lag=512-1023"], abs=5e-4)
        assert row["first step val/acc >= 0.6"] == ("never" if first is None else str(first))
    assert {r["family"] for r in rows} == {"transformer_prenorm", "transformer"}


def test_a_family_without_rate_takes_every_rate(capsys):
    main(["table1_diffuse_mqar:mamba2"])
    rows = rows_of(capsys.readouterr().out)
    expected = sorted((RUNS / "table1_diffuse_mqar").glob("mamba2-*/summary.json"))
    assert len(rows) == len(expected) and {r["family"] for r in rows} == {"mamba2"}
    assert len({r["lr"] for r in rows}) > 1


@pytest.mark.parametrize("selection, says", [
    ("no_such_experiment", "no folder"),
    ("table1_diffuse_mqar:transformer:fast", "LR must be a number"),
    ("table1_diffuse_mqar:transformer:0.5", "no finished run matches"),
    ("a:b:c:d", "expected EXPERIMENT[:FAMILY[:LR]]"),
])
def test_bad_selection_is_one_line(capsys, selection, says):
    with pytest.raises(SystemExit) as e:
        main([selection])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert says in err[-1] and selection in err[-1] and "Traceback" not in "\n".join(err)
