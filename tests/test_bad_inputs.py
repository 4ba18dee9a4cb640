"""Issue 19: bad, careless or hostile input ends in one clear line, nothing is executed, nothing is lost."""

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sessa_bench.compose import compose_train
from sessa_bench.run_folder import RunFolder, RunInUse
from sessa_bench.train import run

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from test_harness import overrides  # noqa: E402  (the tiny-run overrides shared with the harness tests)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))


class WritesMarker:
    """Unpickling this calls Path.touch(marker): what a crafted checkpoint or cache file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# ---- in-process: (overrides, the one-line message) --------------------------------------------------------
BAD_RUNS = [
    (["model=sessa", "model.mixer_kwargs.gamma_max=1.0"],
     "model.mixer_kwargs (sessa): sessa gamma_max=1.0 must lie strictly between 0 and 1"),
    (["model=sessa", "model.mixer_kwargs.gamma_max=0"], "model.mixer_kwargs (sessa): sessa gamma_max=0 must lie"),
    (["model=sessa", "model.mixer_kwargs.impl=foo"], "model.mixer_kwargs (sessa): sessa impl='foo' is not one of"),
    (["model=transformer", "model.mixer_kwargs.backend=foo"],
     "model.mixer_kwargs (transformer): attention backend='foo' is not one of"),
    (["model=mamba2", "model.mixer_kwargs.backend=foo"], "model.mixer_kwargs (mamba2): mamba2 backend='foo'"),
    (["model.block=foo"], "model.block='foo' is not one of ['gated', 'prenorm_mlp']"),
    (["run_name=../../../x"], "run_name='../../../x' must be one folder name"),
    (["experiment_name=a/b"], "experiment_name='a/b' must be one folder name"),
    (["experiment_name=.."], "experiment_name='..' must be one folder name"),
    (["task.n_val=0"], "the val split of task symbol_soup is empty: task.n_val=0 must be >= 1"),
    (["task.n_train=0"], "the train split of task symbol_soup is empty: task.n_train=0 must be >= 1"),
    (["data.num_workers=-1"], "data.num_workers=-1 must be >= 0"),
    (["trainer.precision=foo"], "trainer: "),
    (["trainer=gpu"], "trainer: "),
]


@pytest.mark.parametrize("bad, message", BAD_RUNS, ids=[" ".join(b) for b, _ in BAD_RUNS])
def test_bad_run_is_one_clear_error_and_writes_nothing(tmp_path, bad, message):
    if bad == ["trainer=gpu"] and torch.cuda.is_available():
        pytest.skip("a CUDA machine can run trainer=gpu")
    with pytest.raises(ValueError) as err:
        run(compose_train(overrides(tmp_path, *bad)))
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
    assert not (tmp_path / "runs").exists()  # not even a folder holding config.yaml
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


def test_header_only_tsv_split_is_refused_before_training(tmp_path):
    data = tmp_path / "soup"
    data.mkdir()
    row = "Text\tAnswer\n" + "".join(f"\"<bos>\\n ab \\n<sep1>\\n cd \\n<sep2>\\n ef \\n<sep1>\\n gh \\n<sep2>"
                                     f"\\n ij \\n<sep>\"\tCLASS_{k}\n" for k in range(3))
    (data / "train.tsv").write_text(row)
    (data / "val.tsv").write_text("Text\tAnswer\n")
    (data / "test.tsv").write_text(row)
    with pytest.raises(ValueError, match=r"the val split .* is empty: .*val.tsv \(task.data_dir\) holds no"):
        run(compose_train(overrides(tmp_path, f"task.data_dir={data}")))
    assert not (tmp_path / "runs").exists()


# ---- untrusted files are never executed -------------------------------------------------------------------
def test_crafted_checkpoint_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    folder = RunFolder(tmp_path / "runs" / "default" / "transformer-symbol_soup-tiny-s0")
    folder.checkpoint.parent.mkdir(parents=True)
    torch.save({"global_step": 2, "evil": WritesMarker(marker)}, folder.checkpoint)
    with pytest.raises(RuntimeError, match="not plain data"):
        run(compose_train(overrides(tmp_path, "model=transformer")))
    assert not marker.exists()
    from sessa_bench.evaluate import load_run
    folder.config.write_text("seed: 0\n")
    with pytest.raises(RuntimeError, match="not plain data"):
        load_run(folder.path)
    assert not marker.exists()


def test_crafted_cache_file_is_not_executed(tmp_path):
    from sessa_bench.tasks.base import config_key
    from sessa_bench.tasks.cache import cached, cache_dir
    marker = tmp_path / "pwned"
    path = cache_dir() / "kind" / f"{config_key({'a': 1})}.pt"
    path.parent.mkdir(parents=True)
    with path.open("wb") as f:
        pickle.dump(WritesMarker(marker), f)
    assert cached("kind", {"a": 1}, lambda: {"x": torch.arange(3)})["x"].tolist() == [0, 1, 2]  # rebuilt
    assert not marker.exists()
    assert torch.load(path, weights_only=True)["x"].tolist() == [0, 1, 2]


def test_every_load_of_a_file_in_the_code_refuses_pickled_code():
    """Every torch.load, load_from_checkpoint and Lightning fit/validate/test from a checkpoint in the package
    and the scripts passes weights_only=True (a literal), and no np.load allows pickles: a crafted file in a run
    folder or the task cache is then an error, never code that runs (the two tests above show it for each)."""
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    seen, bad = 0, []
    for f in [*root.glob("sessa_bench/**/*.py"), *root.glob("models/**/*.py"), *root.glob("tasks/**/*.py"),
              *root.glob("scripts/*.py")]:
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            kw = {k.arg: k.value for k in node.keywords}
            name = node.func.attr
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            checkpoint = name in ("fit", "validate", "test") and "ckpt_path" in kw
            if (name == "load" and owner == "torch") or name == "load_from_checkpoint" or checkpoint:
                seen += 1
                w = kw.get("weights_only")
                if not (isinstance(w, ast.Constant) and w.value is True):
                    bad.append(f"{f.relative_to(root)}:{node.lineno}")
            if name == "load" and owner == "np" and "allow_pickle" in kw:
                bad.append(f"{f.relative_to(root)}:{node.lineno} (allow_pickle)")
    assert seen >= 6 and not bad, bad


# ---- metrics.jsonl, summaries ---------------------------------------------------------------------------------
def test_torn_last_metrics_line_is_dropped_corrupt_middle_line_is_named(tmp_path, caplog):
    folder = RunFolder(tmp_path)
    folder.metrics.write_text('{"step": 0, "a": 1}\n{"step": 1, "a": 2}\n{"step": 2, "a"')
    with caplog.at_level("WARNING", logger="sessa_bench"):
        assert [r["step"] for r in folder.read_metrics()] == [0, 1]
    assert "half-written last line" in caplog.text
    folder.truncate_metrics(2)
    assert folder.metrics.read_text() == '{"step": 0, "a": 1}\n{"step": 1, "a": 2}\n'
    folder.metrics.write_text('{"step": 0}\n{"step": 1,\n{"step": 2}\n')
    with pytest.raises(ValueError, match=rf"{folder.metrics} line 2 is not JSON"):
        folder.read_metrics()


def test_report_names_every_corrupt_or_incomplete_summary(tmp_path):
    from sessa_bench.report.collect import REQUIRED, collect
    exp = tmp_path / "demo"
    good = {k: 0 for k in REQUIRED}
    for name, text in [("a", json.dumps(good)), ("b", "{not json"), ("c", json.dumps({"final": {}})),
                       ("d", None)]:
        (exp / name).mkdir(parents=True)
        if text is not None:
            (exp / name / "summary.json").write_text(text)
    with pytest.raises(ValueError) as err:
        collect(tmp_path, "demo")
    msg = str(err.value)
    assert "2 run folder(s)" in msg and f"{exp / 'b'} (summary.json unreadable" in msg
    assert f"{exp / 'c'} (summary.json lacks experiment" in msg and f"{exp / 'a'}" not in msg
    (exp / "b" / "summary.json").unlink()
    (exp / "c" / "summary.json").unlink()
    # unfinished folders (no summary.json) are not reports; a summary without startup_seconds gets it derived
    # from its (here absent) metrics.jsonl, for the time limit's estimates
    assert collect(tmp_path, "demo") == [{**good, "startup_seconds": 0.0}]


def test_committed_summaries_are_all_reportable():
    from sessa_bench.report.collect import collect
    for exp in (ROOT / "results" / "runs").iterdir():
        if exp.is_dir():
            collect(ROOT / "results" / "runs", exp.name)


# ---- the run-folder lock ------------------------------------------------------------------------------------
def test_lock_refuses_a_second_holder_and_is_released_by_the_os(tmp_path):
    a, b = RunFolder(tmp_path / "r"), RunFolder(tmp_path / "r")
    a.lock()
    with pytest.raises(RunInUse, match=rf"in use by another process \(pid {os.getpid()}\)"):
        b.lock()
    a.unlock()
    b.lock()
    b.unlock()
    # a process that dies holding the lock leaves it free (no stale lock to clean up)
    code = f"from sessa_bench.run_folder import RunFolder; RunFolder({str(tmp_path / 'r')!r}).lock(); import os; os._exit(9)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 9
    a.lock()
    a.unlock()


def _env(tmp_path):
    return {**os.environ, "SESSA_BENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1"}


def test_two_processes_with_one_run_name(tmp_path):
    # The first run is far longer than the second's start-up, so the second always meets a held lock (with 30
    # steps the first could finish before the second started, and the second then skipped the finished run).
    args = [sys.executable, "-m", "sessa_bench.train", *overrides(tmp_path, "model=transformer",
                                                                  "trainer.max_steps=100000")]
    first = subprocess.Popen(args, cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    lock = tmp_path / "runs" / "default" / "transformer-symbol_soup-tiny-s0" / ".lock"
    try:
        for _ in range(600):  # the first process holds the lock once its pid is in the lock file
            if lock.exists() and lock.read_text().strip() == str(first.pid):
                break
            assert first.poll() is None, first.communicate()
            time.sleep(0.1)
        second = subprocess.run(args, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
        assert first.poll() is None, first.communicate()[1][-2000:]
    finally:
        first.kill()
        first.communicate(timeout=600)
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        f"python -m sessa_bench.train: error: run folder {lock.parent} is in use by another process "
        f"(pid {first.pid}); wait for it to finish, or choose another experiment_name or run_name"]
    steps = [r["step"] for r in RunFolder(lock.parent).read_metrics() if "train/loss" in r]
    assert steps and len(steps) == len(set(steps))  # one writer: no step logged twice


# ---- every entry point: one line on stderr, exit code 2 -------------------------------------------------------
CLI = [
    (["-m", "sessa_bench.cli", "train", "model=gpt5"],
     "sessa-bench train: error: In 'train': Could not find 'model/gpt5'; Available options in 'model': "),
    (["-m", "sessa_bench.cli", "train", "trainer.max_steps=["], "sessa-bench train: error: no viable alternative"),
    (["-m", "sessa_bench.cli", "train", "trainer.no_such_key=1"],
     "sessa-bench train: error: Could not override 'trainer.no_such_key'"),
    (["-m", "sessa_bench.train", "trainer.max_steps=many"], "python -m sessa_bench.train: error: "),
    (["-m", "sessa_bench.cli", "eval", "/no/such/run"],
     "sessa-bench eval: error: /no/such/run is not a run folder (no config.yaml)"),
    (["-m", "sessa_bench.cli", "eval", "x", "--split", "train"],
     "sessa-bench eval: error: argument --split: invalid choice: 'train' (choose from 'val', 'test')"),
    (["-m", "sessa_bench.cli", "params", "--budget", "huge"],
     "sessa-bench params: error: budget='huge' is unknown; available: ['base', 'small', 'tiny']"),
    (["-m", "sessa_bench.cli", "report", "demo", "--results-dir", "/no/such"],
     "sessa-bench report: error: no finished runs under /no/such/demo"),
    (["-m", "sessa_bench.cli", "probe", "/no/such/run"], "sessa-bench probe: error: "),
    (["-m", "sessa_bench.cli", "frobnicate"], "sessa-bench: error: unknown command 'frobnicate'"),
    (["-m", "sessa_bench.tables", "table9"], "python -m sessa_bench.tables: error: argument table: invalid choice"),
    (["-m", "sessa_bench.tables", "all", "--experiments", "table1_symbol_soup"],
     "python -m sessa_bench.tables: error: --experiments names columns of one table"),
    (["-m", "sessa_bench.tables", "table1", "--run", "--time-limit", "-5"],
     "python -m sessa_bench.tables: error: time_limit=-5 (--time-limit): must be > 0 (seconds from the start of"),
    (["-m", "sessa_bench.calibrate", "--candidates", "zz"],
     "python -m sessa_bench.calibrate: error: candidate='zz': must be one of ['c0', 'c1', 'c2', 'c3', 'c4', 'c5']"),
    (["-m", "sessa_bench.calibrate", "--sweep", "zz"],
     "python -m sessa_bench.calibrate: error: argument --sweep: invalid choice: 'zz'"),
    (["-m", "sessa_bench.demo", "trainer.max_steps=x"],
     "python -m sessa_bench.demo: error: trainer.max_steps='x' must be an int >= 1"),
    (["-m", "sessa_bench.evaluate", "/no/such/run"],
     "python -m sessa_bench.evaluate: error: /no/such/run is not a run folder (no config.yaml)"),
]


def test_every_module_entry_point_ends_user_errors_in_one_line():
    """`python -m sessa_bench.<module>` (what the Makefile runs) wraps main in user_errors, as `sessa-bench
    <command>` does: a module's `__main__` block without it printed a traceback for a bad override."""
    import ast
    missing = []
    for path in sorted((ROOT / "sessa_bench").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) \
                    and "user_errors(" not in ast.unparse(node):
                missing.append(str(path.relative_to(ROOT)))
    assert missing == ["sessa_bench/cli.py"]  # its main() wraps every command in user_errors (the cases above)


# Runs every CLI case as `python -m <module> <args>` would, each in a process of its own forked from one
# interpreter that imported torch, Lightning and Hydra once (17 fresh interpreters spent ~30 s of the suite
# importing them); sessa_bench itself is imported fresh in each child, in its own working directory.
DRIVER = r"""
import json, os, runpy, sys
import torch, lightning, hydra  # noqa: F401  (what every case imports; only this)
cases, root = json.loads(sys.argv[1]), sys.argv[2]
children = []
for i, (module, args) in enumerate(cases):
    d = os.path.join(root, f"cli{i}")
    os.makedirs(d, exist_ok=True)
    pid = os.fork()
    if pid == 0:
        fd = os.open(os.path.join(d, "stderr"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 2)
        os.chdir(d)
        os.environ["SESSA_BENCH_CACHE"] = os.path.join(d, "cache")
        sys.argv, code = [module, *args], 0
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # what a fresh interpreter would print, and its exit status
            import traceback
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        os._exit(code)
    children.append(pid)
print(json.dumps([os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in children]))
"""


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """(exit status, stderr) of every CLI case."""
    root = tmp_path_factory.mktemp("cli")
    cases = [(argv[1], argv[2:]) for argv, _ in CLI]  # every case is `-m <module> ...`
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cases), str(root)], cwd=root, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    codes = json.loads(res.stdout.strip().splitlines()[-1])
    return [(code, (root / f"cli{i}" / "stderr").read_text()) for i, code in enumerate(codes)]


@pytest.mark.parametrize("case", range(len(CLI)), ids=[" ".join(a[1:]) for a, _ in CLI])
def test_entry_points_end_a_user_error_in_one_line(cli_runs, case):
    (code, stderr), start = cli_runs[case], CLI[case][1]
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(start), stderr[-3000:]


def test_lightning_misconfiguration_is_a_user_error_without_importing_lightning_first(capsys):
    """errors.py no longer imports Lightning (3 s of every command's start); a MisconfigurationException,
    which only a loaded Lightning can raise, still ends in one line."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from sessa_bench.errors import user_errors
    with pytest.raises(SystemExit) as e, user_errors("prog"):
        raise MisconfigurationException("`Trainer(devices=3)` is not\nvalid here")
    assert e.value.code == 2 and capsys.readouterr().err == "prog: error: `Trainer(devices=3)` is not; valid here\n"
    res = subprocess.run([sys.executable, "-c", "import sys, sessa_bench.errors, sessa_bench.cli; "
                          "print(any(m.startswith('lightning') for m in sys.modules))"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.stdout.strip() == "False", res.stderr[-2000:]


def test_debug_flag_shows_the_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "sessa_bench.cli", "eval", "/no/such/run"], cwd=tmp_path,
                         env={**_env(tmp_path), "SESSA_BENCH_DEBUG": "1"}, capture_output=True, text=True)
    assert res.returncode == 1 and "Traceback" in res.stderr and "FileNotFoundError" in res.stderr


# ---- adding a model as the README says ---------------------------------------------------------------------------
def test_readme_recipe_mixer_in_the_working_directory(tmp_path):
    """`-P` keeps the working directory off sys.path, as for the installed `sessa-bench` script."""
    pkg = tmp_path / "my_package"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "my_module.py").write_text((Path(__file__).parent / "toy_mixer.py").read_text()
                                      .replace("RunningMeanMixer", "MyMixer"))
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "my_mixer.yaml").write_text(
        "defaults:\n  - model_schema\n  - _self_\nfamily: my_mixer\nmixer: my_package.my_module.MyMixer\n"
        "mixer_kwargs: {scale: 0.5}\nblock: gated\n")
    res = subprocess.run([sys.executable, "-P", "-m", "sessa_bench.cli", "train", "model=my_mixer",
                          f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                          *overrides(tmp_path, "trainer.max_steps=2", "trainer.val_check_interval=2")],
                         cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "decode state: not declared (my_package.my_module.MyMixer defines neither state_per_token" \
        in res.stdout
    summary = RunFolder(tmp_path / "runs" / "default" / "my_mixer-symbol_soup-tiny-s0").read_summary()
    assert summary["model"]["mixer"] == "my_package.my_module.MyMixer"
    assert summary["cost"]["state_per_token"] is None


# ---- a rerun after the last checkpoint only evaluates; the console stays quiet ----------------------------------
def test_rerun_after_the_last_step_only_evaluates_and_keeps_every_log(tmp_path):
    common = ["model=transformer", "trainer.max_steps=4", "trainer.val_check_interval=2", "logger=csv",
              "callbacks.throughput.warmup=0"]

    def train(*extra):
        return subprocess.run([sys.executable, "-m", "sessa_bench.train", *overrides(tmp_path, *common, *extra)],
                              cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=600)

    full = train("experiment_name=full")
    assert full.returncode == 0, full.stderr[-2000:]
    # the console: the parameter table and one final line; none of Lightning's banners, tips or notices
    assert full.stderr.strip() == "", full.stderr
    assert full.stdout.strip().splitlines()[-1].startswith(f"finished {tmp_path}/runs/full/")
    assert train("experiment_name=cut", "debug.kill_at_step=4").returncode == 17  # killed after the last ckpt
    again = train("experiment_name=cut")
    assert again.returncode == 0 and "training is done: evaluating only" in again.stdout, again.stderr[-2000:]
    a = RunFolder(tmp_path / "runs" / "full" / "transformer-symbol_soup-tiny-s0")
    b = RunFolder(tmp_path / "runs" / "cut" / "transformer-symbol_soup-tiny-s0")
    keys = lambda rows: [(r["step"], r.get("epoch"), sorted(k for k in r if "/" in k)) for r in rows]  # noqa: E731
    # the lines logged after the checkpoint of step 4 (step 3's train and val lines) died with the process
    assert keys(b.read_metrics()) == [k for k in keys(a.read_metrics()) if k[0] != 3]
    assert keys(b.read_metrics())[-2:] == [(4, 1.0, ["val/acc", "val/loss"]), (4, 1.0, ["test/acc", "test/loss"])]
    assert b.read_summary()["throughput_tokens_per_s"] > 0  # the sums from before the kill, from the checkpoint
    csv_rows = (b.path / "csv" / "metrics.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 1 + len(b.read_metrics())  # header + every row, the pre-kill ones included
