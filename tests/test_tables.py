"""The paper-table pipeline on CPU: fresh tiny runs (2 steps, tiny data) of every table's families, then the
markdown/csv tables and plots. Expected values come from the run folders' own summary.json files (read
here directly) and from the paper (typed in below), never from the table code."""

import csv
import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from hydra.utils import get_class

from sessa_bench.compose import compose_train
from sessa_bench.run_folder import RunFolder
from sessa_bench.tables import build, main, split_overrides

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "simplestories"
TINY = ["probe=false", "budget=tiny", "trainer=cpu", "logger=none", "trainer.max_steps=2", "trainer.val_check_interval=1",
        "callbacks.checkpoint.every_n_steps=2", "trainer.enable_progress_bar=false", "data.batch_size=2", "data.eval_batch_size=64",
        "trainer.log_every_n_steps=1", "sweep.lr=[0.001]"]  # one rate: no sweep here (tests/test_protocol.py sweeps)
CAP = 2  # no extensions here: 2-step runs stay 2-step runs
LM = [f"task.data_dir={FIXTURE}", "task.vocab_size=300", "task.seq_len=32",
      "task.tokenizer=tasks/tokenizers/simplestories-fixture-bpe300.json"]
SOUP = [f"{e}:task.{k}" for e in ("table1_symbol_soup", "table1_symbol_soup_long")
        for k in ("n_train=16", "n_val=4", "n_test=4", "min_len=41", "max_len=61")]
DMQAR = [f"table1_diffuse_mqar:task.{k}" for k in ("n_train=16", "n_val=4", "n_test=8", "key_vocab=8",
                                                   "value_vocab=8", "n_pairs=4", "n_queries=4", "train_lag=[8,31]")]

# The paper's numbers (arXiv 2604.18580), as the tables must print them.
PAPER = {
    "table1": {"sessa": ["0.8601 ± 0.0016", "0.8601 ± 0.0016", "0.1541 ± 0.0071"],
               "transformer": ["0.7921 ± 0.0070", "0.7921 ± 0.0070", "0.1222 ± 0.0003"],
               "mamba2": ["0.0500 ± 0.0000", "0.0500 ± 0.0000", "0.0021 ± 0.0000"]},
    "table2": {"transformer": ["7.6701 ± 0.0313", "50.441 ± 0.059", "78.497 ± 0.062"],
               "mamba2": ["7.7229 ± 0.0207", "50.299 ± 0.046", "78.302 ± 0.043"],
               "sessa": ["8.3700 ± 0.0482", "49.144 ± 0.081", "77.119 ± 0.090"]},
    "ablation": {"sessa": ["8.3700 ± 0.0482", "49.144 ± 0.081"], "sessa_nofb": ["8.0902 ± 0.0192", "49.648 ± 0.026"]},
}
# table -> [(run folder experiment, metric, scale, digits)] per metric column
COLUMNS = {
    "table1": [("table1_symbol_soup", "test/acc", 1, 4), ("table1_symbol_soup_long", "test/acc", 1, 4),
               ("table1_diffuse_mqar", "test/acc", 1, 4)],
    "table2": [("table2_simplestories", "test/ppl", 1, 4), ("table2_simplestories", "test/acc", 100, 3),
               ("table2_simplestories", "test/top5", 100, 3)],
    "ablation": [("table2_simplestories", "test/ppl", 1, 4), ("table2_simplestories", "test/acc", 100, 3)],
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tables")
    mp = pytest.MonkeyPatch()
    mp.setenv("SESSA_BENCH_CACHE", str(tmp / "cache"))
    # the --jobs 2 workers below (each a `python -m sessa_bench.train` with this environment) side by side on a
    # 2-core machine: one thread each, as the other tests' subprocesses, not two each fighting over the cores
    mp.setenv("OMP_NUM_THREADS", "1")
    base = [f"results_dir={tmp / 'runs'}", *TINY]
    out = {"tmp": tmp, "base": base}
    out["table2"] = build("table2", [0], base + LM, run=True, out_dir=tmp, max_steps_cap=CAP)
    out["ablation_before"] = build("ablation", [0], base + LM, run=False, out_dir=tmp / "before")["md"].read_text()
    out["ablation"] = build("ablation", [0], base + LM, run=True, out_dir=tmp, max_steps_cap=CAP)
    out["table1"] = build("table1", [0], base + SOUP + DMQAR, run=True, out_dir=tmp, max_steps_cap=CAP)
    yield out
    mp.undo()


def hand_converged(run_dir: Path, metric: str, best: bool) -> bool:
    """The caption's rule, written out: validations of the last quarter of training and the one before
    it (the training's lines only: the final evaluation comes after fit_metrics_lines) moved < 0.01 absolute
    (accuracy, ending above the task's trivial level + 0.01) or 1 % relative (perplexity); best-checkpoint
    runs judged on the best-so-far curve."""
    s = json.loads((run_dir / "summary.json").read_text())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()[:s["fit_metrics_lines"]]
    pts = {}
    for r in map(json.loads, lines):
        if metric in r:
            pts[r["step"]] = r[metric]
    pts = sorted(pts.items())
    if best:
        pts = [(st, min(v for _, v in pts[:i + 1])) for i, (st, _) in enumerate(pts)]
    n = s["steps"]
    ref = [v for st, v in pts if st <= 0.75 * n][-1:]
    vals = ref + [v for st, v in pts if 0.75 * n < st <= n]
    if len(vals) < 2:
        return False
    moved = max(vals) - min(vals)
    if metric.endswith("ppl"):
        return moved / vals[-1] < 0.01
    facts = s["task_facts"]  # a flat accuracy at the baseline (else chance) + 0.01 is a plateau
    trivial = facts.get("baseline") if facts.get("baseline") is not None else facts.get("chance")
    return moved < 0.01 and (trivial is None or vals[-1] > trivial + 0.01)


def rows(md: str) -> dict[str, list[str]]:
    """family -> cells of the first markdown table (the metric table)."""
    first = md.split("\n\n")[2]
    return {cells[0]: cells[1:] for line in first.splitlines()[2:]
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}


def summary(tmp: Path, experiment: str, family: str) -> dict:
    (path,) = (tmp / "runs" / experiment).glob(f"{family}-*-tiny-lr0.001-s0/summary.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize("table", ["table1", "table2", "ablation"])
def test_rows_means_and_paper_column(built, table):
    got = rows(built[table]["md"].read_text())
    refs = {"chance", "baseline", "ceiling"} if table == "table1" else {"chance", "bigram"}
    assert set(got) == set(PAPER[table]) | refs
    for fam in PAPER[table]:
        ours, paper = got[fam][0::2], got[fam][1::2]
        assert paper == PAPER[table][fam]
        for (exp, metric, scale, digits), cell in zip(COLUMNS[table], ours):
            (d,) = (built["tmp"] / "runs" / exp).glob(f"{fam}-*-tiny-lr0.001-s0")
            mark = "" if hand_converged(d, "val/acc" if table == "table1" else "val/ppl", table != "table1") else "*"
            assert cell == f"{summary(built['tmp'], exp, fam)['final'][metric] * scale:.{digits}f}{mark}"


def test_validation_curves_are_the_runs_metrics(built):
    """Table 1's curve table: a row per run at the chosen rate, its val/acc at each quarter of the grid's steps
    (here 2 steps: every step; the last validation of the half-interval before it) from its metrics.jsonl,
    and its test/acc."""
    section = built["table1"]["md"].read_text().split("## Validation curves", 1)[1]
    for exp in ("table1_symbol_soup", "table1_diffuse_mqar"):
        table = section.split(f"`{exp}`", 1)[1].split("\n\n")[1]
        assert table.splitlines()[0] == "| family | lr | seed | 1 | 2 | test/acc |"
        for fam in PAPER["table1"]:
            (d,) = (built["tmp"] / "runs" / exp).glob(f"{fam}-*-tiny-lr0.001-s0")
            s = summary(built["tmp"], exp, fam)
            lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()][:s["fit_metrics_lines"]]
            val = {r["step"]: r["val/acc"] for r in lines if "val/acc" in r}
            want = [f"{val[m]:.3f}" if m in val else "" for m in (1, 2)]
            assert any(want), val  # the check below compares numbers
            assert f"| {fam} | 0.001 | 0 | {' | '.join(want)} | {s['final']['test/acc']:.3f} |" in table, table


def test_reference_rows(built):
    """chance, the baseline and the ceiling come from the runs' own task facts: SymbolSoup's symbol-count
    baseline and Bayes ceiling; Diffuse MQAR's key-blind guess by elimination and its ceiling of 1 (exact-key
    recall)."""
    got = rows(built["table1"]["md"].read_text())
    tmp = built["tmp"]
    soup, long = (summary(tmp, e, "sessa")["task_facts"] for e in ("table1_symbol_soup", "table1_symbol_soup_long"))
    mqar = summary(tmp, "table1_diffuse_mqar", "sessa")["task_facts"]
    assert got["chance"][0::2] == ["0.0500", "0.0500", f"{mqar['chance']:.4f}"]
    assert got["ceiling"][0::2] == [f"{soup['ceiling']:.4f}", f"{long['ceiling']:.4f}", "1.0000"]
    assert 0.05 < soup["ceiling"] <= 1 and mqar["ceiling"] == 1.0
    assert got["baseline"][0::2] == [f"{soup['baseline']:.4f}", f"{long['baseline']:.4f}", f"{mqar['baseline']:.4f}"]
    assert soup["baseline"] is not None and mqar["chance"] < mqar["baseline"] < 1


@pytest.mark.parametrize("table", ["table2", "ablation"])
def test_lm_reference_rows(built, table):
    """Table 2 and the ablation: the uniform guess and the Kneser-Ney bigram, per column, from the runs' task
    facts (tasks/lm_reference.py, tested against a dense formula in test_lm_reference.py)."""
    got = rows(built[table]["md"].read_text())
    refs = summary(built["tmp"], "table2_simplestories", "sessa")["task_facts"]["references"]
    metrics = ["test/ppl", "test/acc", "test/top5"][:len(got["chance"]) // 2]
    for name in ("chance", "bigram"):
        want = [f"{refs[name][m]:.4f}" if m == "test/ppl" else f"{100 * refs[name][m]:.3f}" for m in metrics]
        assert got[name][0::2] == want, (name, got[name])
    assert refs["chance"]["test/ppl"] > refs["bigram"]["test/ppl"]  # the bigram beats the uniform guess


@pytest.mark.parametrize("table", ["table1", "table2", "ablation"])
def test_csv_means_equal_summaries(built, table):
    with built[table]["csv"].open() as f:
        recs = list(csv.DictReader(f))
    assert len(recs) == len(PAPER[table]) * len(COLUMNS[table])
    assert {r["lr"] for r in recs} == {"0.001"} and {r["lr_grid"] for r in recs} == {"0.001"}
    for i, r in enumerate(recs):  # family-major, columns in table order
        exp, metric, scale, _ = COLUMNS[table][i % len(COLUMNS[table])]
        assert r["metric"] == metric
        s = summary(built["tmp"], exp, r["family"])
        assert float(r["mean"]) == pytest.approx(s["final"][metric] * scale, rel=1e-12)
        assert r["std"] == "" and r["n_seeds"] == "1"  # one seed: no std
        assert int(r["params_total"]) == s["params"]["total"]


def test_missing_family_prints_not_run(built):
    got = rows(built["ablation_before"])
    assert got["sessa_nofb"][0::2] == ["not run", "not run"]
    # the ablation shares Table 2's run folder: its Sessa row is Table 2's Sessa run
    ppl = summary(built["tmp"], "table2_simplestories", "sessa")["final"]["test/ppl"]
    assert got["sessa"][0].rstrip("*") == f"{ppl:.4f}"  # (* when unconverged: test_rows_means_and_paper_column)


def test_parameter_table_and_caption(built):
    md = built["table1"]["md"].read_text()
    for exp in ("table1_symbol_soup", "table1_symbol_soup_long", "table1_diffuse_mqar"):
        for fam in ("sessa", "transformer", "mamba2"):
            p = summary(built["tmp"], exp, fam)["params"]
            (line,) = [ln for ln in md.splitlines() if ln.startswith(f"| {fam} | {exp} |")]
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert cells[4] == f"{p['total']:,}" and cells[5] == "1,000,000"
            assert abs(float(cells[6].rstrip("%"))) <= 2.0
    # tokens = steps x batch x training length: Diffuse MQAR trains on 1 + 4 pairs x 3 + lag 31 = 44 tokens,
    # rounded up to 64 -> 2 x 2 x 64 = 256; SymbolSoup's bound is its longest sequence, 2 x 2 x 61 = 244.
    assert "2 steps of batch 2 x 64 tokens = 256 training tokens" in md
    assert "2 steps of batch 2 x 61 tokens = at most 244 training tokens" in md
    wall = sum(summary(built["tmp"], "table1_diffuse_mqar", f)["wall_seconds_this_process"]
               for f in ("sessa", "transformer", "mamba2"))
    assert f"time {wall:,.0f} s" in md and "device CPU x" in md and "budget `tiny`" in md
    assert "; execution eager; " in md
    # the init each column trained with: SymbolSoup keeps its committed runs' (conf/experiment), MQAR the default
    assert md.count("embedding init N(0, 0.02), class head; ") == 2 and "embedding init N(0, 1), LM head untied; " in md
    from sessa_bench.report.paper import init
    assert init([{"model": {"head": "lm", "tie_embeddings": True}}]) == "embedding init N(0, 0.02), LM head tied"
    # each experiment's extension cap, from its config
    assert ("up to their experiment's cap (`table1_symbol_soup` 16000 steps; `table1_symbol_soup_long` 4000 steps; "
            "`table1_diffuse_mqar` 16000 steps; `tables --max-steps-cap` overrides them when it trains)") in md
    from sessa_bench.report.paper import execution
    assert execution([{"family": "sessa", "compile": True}, {"family": "sessa", "compile": False},
                      {"family": "mamba2"}]) == ("sessa 1/2 runs compiled (torch.compile), the rest eager; "
                                                 "without that check: 1")
    checked = {"family": "mamba2", "compile": True, "compile_check": {"grad_rel_diff": 0.0123}}
    assert execution([checked, {"family": "sessa", "compile": True}]) == (
        "mamba2 1/1 runs, sessa 1/1 runs compiled (torch.compile), the rest eager; checked against eager on "
        "their first batch: 1, gradients within 0.012 relative; without that check: 1")
    graphed = {"family": "sessa", "cuda_graphs": True, "compile_check": {"grad_rel_diff": 0.001}}
    assert execution([checked, graphed, {"family": "sessa"}]) == (
        "mamba2 1/1 runs compiled (torch.compile); sessa 1/2 runs in CUDA graphs (eager's kernels), the rest "
        "eager; checked against eager on their first batch: 2, gradients within 0.012 relative")
    again = {**graphed, "compile_check": {"grad_rel_diff": 0.0012, "grad_repeat": 0.0011}}
    assert execution([again, {**again, "compile_check": {"grad_rel_diff": 1e-7}}]).endswith(
        "checked against eager on their first batch: 2, gradients within 0.0012 relative (eager against itself: "
        "within 0.0011, 1 runs)")
    # device time: each run's wall time over the runs sharing its device (one at a time here)
    shares = [(s["wall_seconds_this_process"], s.get("concurrent_runs") or 1)
              for s in (summary(built["tmp"], "table1_diffuse_mqar", f) for f in ("sessa", "transformer", "mamba2"))]
    hours = f"{sum(w / k for w, k in shares) / 3600:.2f} device-hours"
    assert (f"so it was busy for less: these runs' share of it is about {hours}" in md
            if max(k for _, k in shares) > 1 else f"; {hours}" in md), md
    lm = built["table2"]["md"].read_text()
    assert "2 steps of batch 2 x 32 tokens = 128 training tokens" in lm
    assert "these runs are on" not in lm  # the fixture is SimpleStories itself


def test_title_names_the_task_the_runs_used_when_it_is_not_the_papers():
    from types import SimpleNamespace

    from sessa_bench.report.paper import TABLES, table_title
    t2 = TABLES["table2"]
    assert table_title(t2, {"table2_simplestories": SimpleNamespace(task="simplestories")}) == t2.title
    assert table_title(t2, {"table2_simplestories": SimpleNamespace(task=None)}) == t2.title  # no runs yet
    bible = table_title(t2, {"table2_simplestories": SimpleNamespace(task="bible")})
    assert bible.startswith(t2.title) and "our runs on `bible`" in bible and "`simplestories`" in bible


def test_plots_exist(built):
    tmp = built["tmp"]
    for name in ("table1_symbol_soup_val", "table1_symbol_soup_long_val", "table1_diffuse_mqar_val", "table1_diffuse_mqar_lags",
                 "table2_simplestories_val", "ablation_simplestories_val"):
        assert (tmp / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not (tmp / "table1_symbol_soup_lags.png").exists()  # SymbolSoup has no lag buckets


def test_task_facts_in_the_summary(built):
    """What the reports read about a task comes from the run's own summary.json, written by the run."""
    (d,) = (built["tmp"] / "runs" / "table1_diffuse_mqar").glob("sessa-*-s0")
    facts = json.loads((d / "summary.json").read_text())["task_facts"]
    assert facts["ood_above"] == 31  # train_lag=[8,31]: buckets 32-63 and 64-127 are out of distribution
    assert facts["ood_slices"] == ["lag=32-63", "lag=64-127"]
    assert facts["chance"] == 1.0 / OmegaConf.load(d / "config.yaml").task.value_vocab
    assert (facts["train_len"], facts["train_len_exact"]) == (64, True)
    (soup,) = (built["tmp"] / "runs" / "table1_symbol_soup").glob("sessa-*-s0")
    facts = json.loads((soup / "summary.json").read_text())["task_facts"]
    assert facts["ood_above"] is None and facts["chance"] == 0.05 and facts["train_len_exact"] is False


def test_cli_rebuild_from_folders_only(built, capsys):
    tmp = built["tmp"]
    before = (tmp / "table2.md").read_text()
    main(["table2", "--seeds", "0", "--results-dir", str(tmp / "runs"), "--out-dir", str(tmp / "again"),
          "--max-steps-cap", str(CAP), *TINY, *LM])
    assert capsys.readouterr().out.strip() == before.strip()


def test_scoped_overrides():
    got = split_overrides(["a=1", "table1_diffuse_mqar:task.n_pairs=4", "table2_simplestories:x=2", "p=q:r"],
                          ["table1_symbol_soup", "table1_diffuse_mqar"])
    assert got == {"table1_symbol_soup": ["a=1", "p=q:r"], "table1_diffuse_mqar": ["a=1", "task.n_pairs=4", "p=q:r"]}
    with pytest.raises(ValueError, match="neither an experiment nor a model"):
        split_overrides(["nosuch:task.n=1"], ["table1_symbol_soup"])
    # family scopes stay until the cell of that family takes them (execution settings such as compile)
    got = split_overrides(["mamba2:compile=false", "table1_symbol_soup:sessa:compile=true"], ["table1_symbol_soup"])
    assert got == {"table1_symbol_soup": ["mamba2:compile=false", "sessa:compile=true"]}
    from sessa_bench.report.protocol import cell, for_family
    ov = ["compile=true", "mamba2:compile=false", "x=a:b"]
    assert for_family(ov, "mamba2") == ["compile=true", "compile=false", "x=a:b"]
    assert for_family(ov, "sessa") == ["compile=true", "x=a:b"]
    c = cell("table1_symbol_soup", "mamba2", ["mamba2:sweep.lr=[0.01]", "sessa:sweep.lr=[0.02]"], "val/acc")
    assert c.grid == [0.01] and c.overrides == ["sweep.lr=[0.01]"]
    with pytest.raises(ValueError, match="table"):
        build("table3")


@pytest.mark.parametrize("exp", ["table1_symbol_soup", "table1_diffuse_mqar", "table2_simplestories", "ablation"])
def test_families_differ_only_in_model(exp):
    cfgs = [compose_train([f"experiment={exp}", f"model={m}"]) for m in ("sessa", "transformer", "mamba2", "sessa_nofb")]
    for c in cfgs:
        assert c.budget.name == "small" and c.trainer.accelerator == "gpu" and list(c.logger) == ["csv"]
        for key in ("optim", "trainer", "data", "task", "budget", "experiment_name"):
            assert c[key] == cfgs[0][key], key
    assert cfgs[0].experiment_name == ("table2_simplestories" if exp == "ablation" else exp)


def test_launchers_compose():
    slurm = compose_train(["experiment=table1_symbol_soup", "hydra/launcher=submitit_slurm"]).hydra.launcher
    assert slurm.gpus_per_node == 1 and slurm.tasks_per_node == 1 and slurm.partition is None
    assert get_class(slurm._target_).__name__ == "SlurmLauncher"
    local = compose_train(["hydra/launcher=local"]).hydra.launcher
    assert get_class(local._target_).__name__ == "BasicLauncher"


def test_jobs_train_in_worker_processes(built):
    """--jobs 2: the missing seed-1 runs of the ablation train in two worker processes; the finished seed-0
    runs are skipped, and the table's caption says that runs shared the device."""
    tmp, base = built["tmp"], built["base"]
    seed0 = summary(tmp, "table2_simplestories", "sessa")
    paths = build("ablation", [0, 1], base + LM, run=True, out_dir=tmp / "jobs", jobs=2, max_steps_cap=CAP)
    for fam in ("sessa", "sessa_nofb"):
        (path,) = (tmp / "runs" / "table2_simplestories").glob(f"{fam}-*-tiny-lr0.001-s1/summary.json")
        s = json.loads(path.read_text())
        assert s["concurrent_runs"] == 2 and s["seed"] == 1 and s["steps"] == 2
        assert (path.parent.parent / "logs" / f"{path.parent.name}.log").exists()
    assert summary(tmp, "table2_simplestories", "sessa") == seed0  # finished: not retrained
    md = paths["md"].read_text()
    assert "up to 2 runs shared the device at once" in md
    assert "mean ± std over seeds 0, 1" in md


def test_jobs_bad_config_fails_before_any_worker(built):
    with pytest.raises(ValueError, match="data.batch_size"):
        build("ablation", [3], built["base"] + LM + ["data.batch_size=0"], run=True, out_dir=built["tmp"] / "bad",
              jobs=2, max_steps_cap=CAP)
    assert not list((built["tmp"] / "runs" / "table2_simplestories").glob("*-s3"))


def test_jobs_report_every_failed_run(built):
    """Both workers crash (debug.kill_at_step exits with 17 after step 1): one error names both runs."""
    with pytest.raises(RuntimeError, match="2 of 2 runs failed") as e:
        build("ablation", [2], built["base"] + LM + ["debug.kill_at_step=1"], run=True,
              out_dir=built["tmp"] / "fail", jobs=2, max_steps_cap=CAP)
    assert str(e.value).count("exit 17") == 2


def test_reference_levels_only_where_all_runs_agree():
    from sessa_bench.report.plots import reference_levels
    same = [{"task_facts": {"chance": 0.05, "baseline": 0.31, "ceiling": None}}] * 2
    assert reference_levels(same) == {"chance": (0.05, ":"), "baseline (test)": (0.31, "-.")}
    mixed = [{"task_facts": {"chance": 0.05, "ceiling": 0.81}}, {"task_facts": {"chance": 0.05, "ceiling": 0.95}}]
    assert reference_levels(mixed) == {"chance": (0.05, ":")}  # two lengths: no single ceiling to draw


def test_val_curve_of_seeds_of_different_lengths_is_split_where_the_shorter_ends():
    """Mamba2's Diffuse MQAR seeds at 16000 and 8000 steps: one mean line jumped from 0.69 (seed 1's final
    validation at 8000, alone) to 0.97 (seed 0 alone). The mean of both ends at the last step both logged;
    the rest, seed 0 alone, is a second (dashed) part that starts there."""
    from sessa_bench.report.plots import coverage_split
    steps = [249, 499, 7999, 8000, 8249, 8499]
    counts = [2, 2, 2, 1, 1, 1]
    assert coverage_split(steps, counts, 2, 8000) == ([0, 1, 2], [2, 4, 5])
    assert coverage_split(steps[:3], counts[:3], 2, 7999) == ([0, 1, 2], [])  # equal lengths: one solid line
    assert coverage_split([10, 20], [1, 1], 2, 10) == ([], [1])  # nothing common: the longer run past the end  # no step common to both: all of it partial


def test_a_val_curve_stops_at_the_training_and_leaves_out_the_best_checkpoints_final_evaluation(tmp_path):
    """The Bible's Table 2 (2026-11-30): a run that keeps its best checkpoint logs, after training, that
    checkpoint's validation at the last step (val/ppl 28.6 at 600, where training's own was 73.0); the plot
    drew it as the curve's last point, a drop from 73 to 28 at step 600."""
    from sessa_bench.report.plots import mean_curve
    d = tmp_path / "run"
    f = RunFolder(d)
    for row in ({"step": 299, "val/ppl": 27.3}, {"step": 599, "val/ppl": 73.0}, {"step": 600, "val/ppl": 28.6},
                {"step": 600, "test/ppl": 29.5}):
        f.append_metrics(row)
    f.write_summary({"fit_metrics_lines": 2})
    assert mean_curve([d], "val/ppl")[:2] == ([299, 599], [27.3, 73.0])
    (d / "summary.json").unlink()  # still training: every line so far is its training's
    assert mean_curve([d], "val/ppl")[0] == [299, 599, 600]


def test_probe_chosen_finds_the_chosen_runs_and_keeps_existing_probes(built, capsys):
    """scripts/probe_chosen.py (a lease's last step): the runs at each family's chosen rate, found with the
    table's own overrides; a folder that has probe.json is left as it is."""
    import sys
    sys.path.insert(0, str(ROOT / "scripts"))
    import probe_chosen

    tmp = built["tmp"]
    ov = [o for o in TINY + SOUP if not o.startswith("results_dir=")]
    found = probe_chosen.chosen_runs(str(tmp / "runs"), "table1", ["table1_symbol_soup"], [0], ov)
    names = [f"{f}-symbol_soup-tiny-lr0.001-s0" for f in ("mamba2", "sessa", "transformer")]
    assert sorted(p.name for p in found) == names
    assert probe_chosen.chosen_runs(str(tmp / "runs"), "table1", ["table1_symbol_soup"], [1], ov) == []  # no seed 1
    for p in found:  # each run's own probe: it records the run's step count and the weights it reports
        steps = json.loads((p / "summary.json").read_text())["steps"]
        (p / "probe.json").write_text(json.dumps({"run": {"steps": steps, "checkpoint": RunFolder(p).reported()[1]}}))
    assert probe_chosen.main([str(tmp / "runs"), "--experiments", "table1_symbol_soup", "--device", "cpu", *ov]) == 0
    assert capsys.readouterr().out.count("has probe.json") == 3
    # a probe of another step count (written before the run was extended) is measured again
    (found[0] / "probe.json").write_text(json.dumps({"run": {"steps": 1}}))
    assert probe_chosen.main([str(tmp / "runs"), "--experiments", "table1_symbol_soup", "--device", "cpu", *ov]) == 0
    out = capsys.readouterr().out
    assert out.count("has probe.json") == 2 and "probing again" in out and RunFolder(found[0]).probe_current()
    # a run whose checkpoint is not here (trained on an earlier lease's machine) is skipped, not a failure
    (found[0] / "probe.json").write_text(json.dumps({"run": {"steps": 1}}))
    ckpt = RunFolder(found[0]).reported()[0]
    ckpt.rename(ckpt.with_suffix(".away"))
    try:
        assert probe_chosen.main([str(tmp / "runs"), "--experiments", "table1_symbol_soup", "--device", "cpu",
                                  *ov]) == 0
    finally:
        ckpt.with_suffix(".away").rename(ckpt)
    assert f"{found[0].name}: no {ckpt.name} on this machine (trained elsewhere): not probed" in capsys.readouterr().out
    for p in found:
        (p / "probe.json").unlink()


def test_fit_section_is_the_runs_losses(built):
    """The Fit table: per run at the chosen rate, train/loss over its last tenth of steps and val/loss at its
    minimum and end, from its metrics.jsonl (the training lines)."""
    section = built["table2"]["md"].read_text().split("## Fit", 1)[1]
    exp = "table2_simplestories"
    table = section.split(f"`{exp}`", 1)[1].split("\n\n")[1]
    for fam in PAPER["table2"]:
        (d,) = (built["tmp"] / "runs" / exp).glob(f"{fam}-*-tiny-lr0.001-s0")
        s = summary(built["tmp"], exp, fam)
        lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()][:s["fit_metrics_lines"]]
        train = [r["train/loss"] for r in lines if "train/loss" in r and r["step"] >= s["steps"] - 1]  # 2 steps
        val = {r["step"]: r["val/loss"] for r in lines if "val/loss" in r}
        low = min(val, key=lambda k: (val[k], k))
        row = (f"| {fam} | 0.001 | 0 | {s['steps']} | {sum(train) / len(train):.3f} | {val[low]:.3f} | {low} | "
               f"{val[max(val)]:.3f} |")
        assert row in table, (row, table)


def test_a_baseline_added_to_a_table_gets_the_same_protocol(built):
    """--families adds a model config the paper did not run (here the pre-norm control) as a row: trained by
    the same protocol (only its Diffuse MQAR column here), its paper cells say so, the paper's rows stay."""
    fams = ["sessa", "transformer", "mamba2", "transformer_prenorm"]
    out = built["tmp"] / "with_baseline"
    md = build("table1", [0], built["base"] + SOUP + DMQAR, run=True, out_dir=out, max_steps_cap=CAP,
               only=["table1_diffuse_mqar"], families=fams, plots=False)["md"].read_text()
    acc = summary(built["tmp"], "table1_diffuse_mqar", "transformer_prenorm")["final"]["test/acc"]
    assert re.search(rf"\| transformer_prenorm \| not run \| not in the paper \| not run \| not in the paper \| "
                     rf"{acc:.4f}\*? \| not in the paper \|", md)  # `*`: a 2-step run is not converged
    assert "`not in the paper`: a family the paper did not run (transformer_prenorm)." in md
    soup = summary(built["tmp"], "table1_symbol_soup", "sessa")["final"]["test/acc"]
    assert re.search(rf"\| sessa \| {soup:.4f}\*? \| 0\.8601 ± 0\.0016 \|", md)
    with pytest.raises(ValueError, match=r"families=\['sessa', 'gpt5'\]: give distinct model configs from .*"
                                         r"\(\['gpt5'\] unknown\)"):
        build("table1", [0], built["base"], out_dir=out, families=["sessa", "gpt5"])


def test_a_cell_with_seeds_still_to_train_says_how_many(built, capsys):
    """Rebuilt asking for seeds 0 and 7 where only seed 0 has trained: each cell says `(1 of 2 seeds)` beside
    its value (Diffuse MQAR asks for three with sweep.seeds and had one or two); the CSV has both counts.
    (Seed 7: another test trains seed 1 in the same folders.)"""
    tmp = built["tmp"]
    main(["table2", "--seeds", "0", "7", "--results-dir", str(tmp / "runs"), "--out-dir", str(tmp / "asked"),
          "--max-steps-cap", str(CAP), *TINY, *LM])
    capsys.readouterr()
    md = (tmp / "asked" / "table2.md").read_text()
    assert "`(k of n seeds)`: n seeds asked for, k of them finished so far" in md
    from sessa_bench.report.paper import TABLES
    got = rows(md)
    for fam in TABLES["table2"].families:  # not the reference rows (chance, bigram): no seeds there
        assert got[fam][0].endswith(" (1 of 2 seeds)"), (fam, got[fam][0])
    with open(tmp / "asked" / "table2.csv", newline="") as fh:
        assert {(r["n_seeds"], r["seeds_asked"]) for r in csv.DictReader(fh)} == {("1", "2")}
    assert "seeds)" not in rows((tmp / "table2.md").read_text())["sessa"][0]  # asked for seed 0 only: none
