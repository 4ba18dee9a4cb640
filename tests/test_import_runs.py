"""scripts/import_runs.py: only finished run folders leave a bundle, without checkpoints, locks or logs;
nothing is overwritten; a hostile member path refuses the whole bundle."""

import io
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import import_runs  # noqa: E402


def bundle(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_finished_runs_only_and_never_overwrite(tmp_path):
    b = bundle(tmp_path / "b.tar.gz", {
        "./paper_runs/exp/done/summary.json": b"{1}", "./paper_runs/exp/done/metrics.jsonl": b"m",
        "./paper_runs/exp/done/csv/metrics.csv": b"c", "./paper_runs/exp/done/checkpoints/last.ckpt": b"W",
        "./paper_runs/exp/done/.lock": b"", "./paper_runs/exp/half/metrics.jsonl": b"m",
        "./paper_runs/exp/logs/done.log": b"l", "./session/logs/ddp.log": b"d"})
    dest = tmp_path / "runs"
    assert import_runs.import_runs(b, dest, dry_run=True) == ["import exp/done (3 files)"] and not dest.exists()
    assert import_runs.main([str(b), str(dest)]) == 0
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert got == ["exp/done/csv/metrics.csv", "exp/done/metrics.jsonl", "exp/done/summary.json"]
    assert import_runs.import_runs(b, dest) == ["same   exp/done"]  # a rerun is a no-op
    (dest / "exp/done/summary.json").write_bytes(b"{2}")
    with pytest.raises(FileExistsError, match="different finished run"):
        import_runs.import_runs(b, dest)


def test_skipped_runs_stay_in_the_bundle(tmp_path):
    """--skip leaves a finished run out by its name or experiment/name (a run found invalid after it ended)."""
    b = bundle(tmp_path / "b.tar.gz", {"./paper_runs/exp/a/summary.json": b"{1}",
                                       "./paper_runs/exp/b/summary.json": b"{2}"})
    dest = tmp_path / "runs"
    assert import_runs.main([str(b), str(dest), "--skip", "a"]) == 0
    assert not (dest / "exp/a").exists() and (dest / "exp/b/summary.json").read_bytes() == b"{2}"
    assert import_runs.import_runs(b, dest, skip=("exp/b",)) == ["import exp/a (1 files)", "skip   exp/b"]


def test_hostile_member_paths_refuse_the_bundle(tmp_path, capsys):
    b = bundle(tmp_path / "b.tar.gz", {"paper_runs/exp/r/summary.json": b"{}", "../../etc/x": b"x"})
    assert import_runs.main([str(b), str(tmp_path / "runs")]) == 2
    assert "parent path; refusing the bundle" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_a_later_bundle_replaces_a_run_with_its_extension_only(tmp_path):
    """The tables protocol extends a run to more steps on the next lease: that bundle's folder replaces the
    shorter one; the same run name with another config is still an error."""
    def cfg(steps, lr=1e-4):
        return f"trainer:\n  max_steps: {steps}\noptim:\n  schedule: constant\n  lr: {lr}\n".encode()
    dest = tmp_path / "runs"
    first = bundle(tmp_path / "1.tar.gz", {"paper_runs/exp/r/summary.json": b"{1000}",
                                           "paper_runs/exp/r/config.yaml": cfg(1000),
                                           "paper_runs/exp/r/metrics.jsonl": b"short"})
    assert import_runs.import_runs(first, dest) == ["import exp/r (3 files)"]
    later = bundle(tmp_path / "2.tar.gz", {"paper_runs/exp/r/summary.json": b"{2000}",
                                           "paper_runs/exp/r/config.yaml": cfg(2000),
                                           "paper_runs/exp/r/metrics.jsonl": b"long",
                                           "paper_runs/exp/r/metrics.prev.jsonl": b"short"})
    assert import_runs.import_runs(later, dest, dry_run=True) == ["extend exp/r (to 2000 steps)"]
    assert (dest / "exp/r/metrics.jsonl").read_bytes() == b"short"  # a dry run writes nothing
    assert import_runs.import_runs(later, dest) == ["extend exp/r (to 2000 steps)"]
    assert sorted(p.name for p in (dest / "exp").iterdir()) == ["r"]  # no temporary folder left behind
    assert (dest / "exp/r/metrics.jsonl").read_bytes() == b"long" and (dest / "exp/r/metrics.prev.jsonl").exists()
    other = bundle(tmp_path / "3.tar.gz", {"paper_runs/exp/r/summary.json": b"{3000}",
                                           "paper_runs/exp/r/config.yaml": cfg(4000, lr=3e-4)})
    with pytest.raises(FileExistsError, match="different finished run"):
        import_runs.import_runs(other, dest)
    shorter = bundle(tmp_path / "4.tar.gz", {"paper_runs/exp/r/summary.json": b"{1000}",
                                             "paper_runs/exp/r/config.yaml": cfg(1000)})
    with pytest.raises(FileExistsError, match="different finished run"):  # never back to fewer steps
        import_runs.import_runs(shorter, dest)


def test_a_killed_extension_comes_back_as_its_finished_run_only_when_asked(tmp_path):
    """A lease's end killed a 4-step run's extension: without --restore-interrupted the folder stays in the
    bundle (unfinished); with it, the finished 4-step run is imported and the killed lines kept apart."""
    short = b'{"final": {"val/acc": 0.1}, "steps": 4, "fit_metrics_lines": 2}'
    rows = b'{"step": 1}\n{"step": 3}\n{"step": 5}\n'
    b = bundle(tmp_path / "b.tar.gz", {"paper_runs/exp/r/summary.prev.json": short,
                                       "paper_runs/exp/r/metrics.jsonl": rows,
                                       "paper_runs/exp/r/checkpoints/last.ckpt": b"W"})
    dest = tmp_path / "runs"
    assert import_runs.import_runs(b, dest) == [] and not dest.exists()
    assert import_runs.main([str(b), str(dest), "--restore-interrupted"]) == 0
    got = sorted(str(p.relative_to(dest / "exp/r")) for p in (dest / "exp/r").rglob("*") if p.is_file())
    assert got == ["metrics.interrupted.jsonl", "metrics.jsonl", "summary.json"]
    assert (dest / "exp/r/summary.json").read_bytes() == short
    assert (dest / "exp/r/metrics.jsonl").read_bytes() == b'{"step": 1}\n{"step": 3}\n'
    assert (dest / "exp/r/metrics.interrupted.jsonl").read_bytes() == b'{"step": 5}\n'
    assert import_runs.import_runs(b, dest, restore_interrupted=True) == ["same   exp/r"]
    broken = bundle(tmp_path / "c.tar.gz", {"paper_runs/exp/q/summary.prev.json": short,
                                            "paper_runs/exp/q/metrics.jsonl": b'{"step": 1}\n'})
    (line,) = import_runs.import_runs(broken, dest, restore_interrupted=True)
    assert line.startswith("leave  exp/q (not restorable: ") and not (dest / "exp/q").exists()
