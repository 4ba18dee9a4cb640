"""scripts/gpu_session.sh: what can be checked without a GPU, so a typo cannot waste a lease."""

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_session.sh"


def test_refuses_a_call_longer_than_the_device_allows(tmp_path):
    # the device tool kills a call at 600 s before the script packs what comes back: refuse at once
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path), "640"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "SECONDS=640" in r.stderr and "at most 580" in r.stderr
    assert not any(tmp_path.iterdir())  # nothing started


def test_syntax():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


BIBLE = SCRIPT.parent / "bible_tables.sh"


def _bible_args_of_makefile() -> list[str]:
    for line in (SCRIPT.parent.parent / "Makefile").read_text().splitlines():
        if line.startswith("BIBLE_ARGS"):
            return line.split("?=", 1)[1].split()
    raise AssertionError("no BIBLE_ARGS in the Makefile")


def run_bible(tmp_path, seconds: str, *overrides: str) -> subprocess.CompletedProcess:
    """bible_tables.sh with a stub python3 first on PATH that appends its arguments to tmp_path/calls."""
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python3").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n')
    (stub / "python3").chmod(0o755)
    return subprocess.run(["bash", str(BIBLE), "/r", "/o", seconds, *overrides], capture_output=True, text=True,
                          timeout=30, env={"PATH": f"{stub}:/usr/bin:/bin"})


def test_bible_tables_runs_table2_then_the_ablation_with_the_makefiles_settings(tmp_path):
    """scripts/bible_tables.sh (a lease's BESIDE): both tables, each with what is left of its time as
    --time-limit, the Makefile's BIBLE_ARGS and no probe. A stub python3 records each call."""
    r = run_bible(tmp_path, "1000", "trainer=cpu", "budget=tiny")
    assert r.returncode == 0, r.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[2] for c in calls] == ["table2", "ablation"]
    for c in calls:
        args = c.split()
        assert args[:4] == ["-m", "sessa_bench.tables", args[2], "--run"]
        limit = int(args[args.index("--time-limit") + 1])
        assert 900 <= limit <= 970  # SECONDS less the 30 s to write the table
        assert args[args.index("--results-dir") + 1] == "/r" and args[args.index("--out-dir") + 1] == "/o"
        assert all(a in args for a in _bible_args_of_makefile()) and "probe=false" in args
        assert args[-2:] == ["trainer=cpu", "budget=tiny"]  # the caller's overrides come last: they win
    assert "bible_tables: ablation exit 0" in r.stdout


def test_bible_tables_starts_no_table_without_time_for_it(tmp_path):
    r = run_bible(tmp_path, "80")
    assert r.returncode == 0 and "table2 not started" in r.stdout
    assert not (tmp_path / "calls").exists()
    assert subprocess.run(["bash", "-n", str(BIBLE)]).returncode == 0


BENCH = SCRIPT.parent / "bench_session.sh"


def test_bench_session_runs_each_gpus_part_pinned_and_refuses_long_calls(tmp_path):
    """scripts/bench_session.sh: one bench process per GPU given, pinned to it, under the call's limit, each
    writing to its own folder; a call over 580 s is refused before anything starts."""
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python3").write_text(f'#!/bin/sh\necho "$CUDA_VISIBLE_DEVICES $@" >> {tmp_path}/calls\n')
    (stub / "python3").chmod(0o755)
    env = {"PATH": f"{stub}:/usr/bin:/bin", "BENCH0": "--parts blocks", "BENCH1": "--parts train --families sessa"}
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(BENCH), str(out), "100"], capture_output=True, text=True, timeout=30, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    calls = sorted((tmp_path / "calls").read_text().splitlines())
    assert calls == [f"0 -m sessa_bench.bench --preset gpu --parts blocks --out-dir {out}/gpu0",
                     f"1 -m sessa_bench.bench --preset gpu --parts train --families sessa --out-dir {out}/gpu1"]
    assert "## GPU 0 (BENCH0): exit 0" in r.stdout and "## GPU 1 (BENCH1): exit 0" in r.stdout
    (tmp_path / "calls").unlink()
    r = subprocess.run(["bash", str(BENCH), str(out), "590"], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 2 and "at most 580" in r.stderr and not (tmp_path / "calls").exists()
    assert subprocess.run(["bash", "-n", str(BENCH)]).returncode == 0


def test_snapshot_tree_is_a_copy_a_detached_step_can_run_from(tmp_path):
    """device_call.sh `snapshot_tree` (gpu_session.sh runs its detached table step, BESIDE and TAIL from it,
    since the device tool sends the tree again at every call): the code, configs and scripts without .git and
    the venv, and the package imported there composes its configs from the copy's conf/."""
    import os
    import sys

    root = SCRIPT.parent.parent
    dest = tmp_path / "tree"
    r = subprocess.run(["bash", "-c", f'source scripts/device_call.sh && snapshot_tree "{dest}"'], cwd=root,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for f in ("conf/train.yaml", "sessa_bench/tables.py", "scripts/gpu_busy.py", "models/backbone.py"):
        assert (dest / f).is_file(), f
    assert not (dest / ".git").exists() and not (dest / ".venv").exists()
    probe = ("import sessa_bench.compose as c; c.compose_train(['model=sessa']); print(c.CONF_DIR)")
    env = {**os.environ, "PYTHONPATH": f"{dest}:{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=dest, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str(dest / "conf")


def dry_run(tmp_path, seed_root=None, seconds: int = 60, **env_more):
    """The first call of a lease without a GPU: stubs for python3 (records its folder and arguments) and
    nvidia-smi, the session under SESSION_ROOT (seed_root(root) fills it first). Returns (the call, root,
    out, calls file)."""
    import os

    root, out, stub = tmp_path / "root", tmp_path / "out", tmp_path / "bin"
    for d in (root, out, stub):
        d.mkdir(parents=True)
    if seed_root:
        seed_root(root)
    calls = tmp_path / "calls"
    (stub / "python3").write_text(f'#!/bin/sh\necho "$PWD|$PYTHONPATH|$*" >> {calls}\n')
    (stub / "nvidia-smi").write_text("#!/bin/sh\necho '0, NVIDIA H200, 143771 MiB'\n")
    for f in stub.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "SESSION_ROOT": str(root), "LEASE": "100",
           "PER_GPU": "1", "DDP_CHECK": "0", "SEED_FROM": "", "SESSA_BENCH_GIT_COMMIT": "abc",
           "EXPERIMENTS": "table1_diffuse_mqar", "PYTHONPATH": "/orig", **env_more}
    r = subprocess.run(["bash", str(SCRIPT), str(out), str(seconds), "first"], cwd=SCRIPT.parent.parent, env=env,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    return r, root, out, calls


def test_a_lease_call_dry_run_starts_the_table_step_from_its_copy_of_the_tree(tmp_path):
    """The whole first call of a lease without a GPU (dry_run). The detached table step (LEASE) and BESIDE
    run in the session's copy of the tree with the copy first on PYTHONPATH, the step is the table command
    under gpu_busy.py, and the bundle leaves the copy out."""
    import tarfile

    def a_run_saving_its_checkpoint(root):
        # a run caught mid-save: Lightning writes .last.ckpt.tmp, then renames it (sessa_bench/callbacks.py);
        # lease 23's second call packed one (228 MB) and the device tool dropped the whole bundle
        ckpts = root / "paper_runs" / "t" / "run" / "checkpoints"
        ckpts.mkdir(parents=True)
        for name in ("last.ckpt", ".last.ckpt.tmp", "best.ckpt"):
            (ckpts / name).write_bytes(b"weights")
        (ckpts.parent / "summary.json").write_text("{}")

    r, root, out, calls = dry_run(tmp_path, seed_root=a_run_saving_its_checkpoint, BESIDE="python3 beside.py")
    tree = root / "session" / "tree"
    assert (tree / "conf" / "train.yaml").is_file() and not (tree / ".git").exists()
    lines = [line.split("|", 2) for line in calls.read_text().splitlines()]
    step = [(cwd, pp, args) for cwd, pp, args in lines if "scripts/gpu_busy.py" in args]
    assert len(step) == 1, lines
    cwd, pythonpath, args = step[0]
    assert cwd == str(tree) and pythonpath.split(":")[0] == str(tree)
    assert "-m sessa_bench.tables table1 --run --experiments table1_diffuse_mqar --jobs-per-gpu 1" in args
    assert f"--results-dir {root}/paper_runs" in args
    assert [(c, a) for c, _, a in lines if a == "beside.py"] == [(str(tree), "beside.py")]
    assert "the table step runs from its copy of the tree" in (out / "summary.md").read_text()
    with tarfile.open(out / "bundle.tar.gz") as t:
        names = t.getnames()
    assert "session/logs/tables.log" in names and not any(n.startswith("session/tree") for n in names)
    assert "paper_runs/t/run/summary.json" in names and not any("checkpoints" in n for n in names), names


def test_a_failed_before_with_the_gate_starts_no_table_step(tmp_path):
    """BEFORE_GATE=1 and a BEFORE that fails (GPU tests of code the runs use): the table step does not
    start, the log says why, and the call ends normally."""
    r, root, out, calls = dry_run(tmp_path, BEFORE="exit 3", BEFORE_GATE="1")
    assert "exit 3" in (out / "before.log").read_text()
    lines = calls.read_text().splitlines() if calls.exists() else []
    assert not any("scripts/gpu_busy.py" in line for line in lines)
    log = (root / "session" / "logs" / "tables.log").read_text()
    assert "BEFORE failed (exit 3) and BEFORE_GATE=1: the table step was not started" in log


def test_before_and_after_logs_say_how_much_of_the_call_they_had(tmp_path):
    """BEFORE and AFTER write the seconds of the call left when they started (lease 27's AFTER was cut with
    ~60 s and its log said only "exit 124"), then their output and exit status."""
    import re
    _, _, out, _ = dry_run(tmp_path, BEFORE="echo ran-before", AFTER="echo ran-after")
    for name, ran in (("before", "ran-before"), ("after", "ran-after")):
        text = (out / f"{name}.log").read_text()
        assert re.match(rf"{name.upper()} started with \d+ s of this call left\n{ran}\nexit 0\n$", text), text


def test_after_quiet_waits_for_beside_and_after_alone_does_not(tmp_path):
    """AFTER_QUIET=1 (one GPU: control runs BESIDE, then the bench): AFTER starts only once BESIDE has ended, in
    the same call. Without it AFTER runs as soon as the table step has finished, BESIDE still running (two
    GPUs, each pinned), and the call still waits for BESIDE before it packs."""
    for quiet in ("1", "0"):
        done = tmp_path / f"beside-done-{quiet}"
        beside = f"sleep 12; mkdir {done}"  # AFTER alone starts within ~5 s (the call's 5 s polls)
        after = f'test -d {done} && echo "after saw beside done" || echo "after ran beside beside"'
        _, _, out, _ = dry_run(tmp_path / quiet, seconds=90, BESIDE=beside, AFTER=after, AFTER_QUIET=quiet)
        text = (out / "after.log").read_text()
        assert ("after saw beside done" if quiet == "1" else "after ran beside beside") in text, text
        assert done.is_dir()  # either way the call returned after BESIDE


def test_an_mps_client_beside_keeps_the_daemon_until_it_ends_and_the_call_waits_for_it(tmp_path):
    """BESIDE_MPS=1: BESIDE runs as a client of the table step's MPS daemon (its pipe in the environment),
    the daemon is told to quit only after BESIDE has ended although the table step ended first, and the
    call waits for BESIDE so that what it trained is in this call's bundle. Without BESIDE_MPS, BESIDE is no
    client. A stub nvidia-cuda-mps-control records its starts and quits in the order they come."""
    order = tmp_path / "order"

    def stub_mps(root):  # beside dry_run's other stubs
        mps = root.parent / "bin" / "nvidia-cuda-mps-control"
        mps.write_text(f'#!/bin/sh\nif [ "$1" = -d ]; then echo start >> {order}; else read c; echo "$c" >> {order}; fi\n')
        mps.chmod(0o755)

    trained = tmp_path / "trained"
    beside = f'sleep 3; echo "beside pipe=$CUDA_MPS_PIPE_DIRECTORY" >> {order}; mkdir {trained}'
    r, root, out, calls = dry_run(tmp_path / "a", seed_root=stub_mps, MPS="1", BESIDE_MPS="1", BESIDE=beside)
    assert order.read_text().splitlines() == ["start", "beside pipe=/tmp/mps-pipe", "quit"]
    assert trained.is_dir()  # the call returned after BESIDE, not before
    log = (root / "session" / "logs" / "beside.log").read_text()
    assert "an MPS client" in log and "beside exit 0" in log

    order.unlink()
    dry_run(tmp_path / "b", seed_root=stub_mps, MPS="1", BESIDE=f'echo "beside pipe=$CUDA_MPS_PIPE_DIRECTORY" >> {order}')
    lines = order.read_text().splitlines()
    assert "start" in lines and "beside pipe=" in lines  # the daemon ran; BESIDE was not its client
