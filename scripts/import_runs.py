"""Copy the finished run folders out of a GPU lease's bundle.tar.gz (scripts/gpu_session.sh) into a results
directory, so the tables can be rendered and committed:

    .venv/bin/python scripts/import_runs.py BUNDLE.tar.gz results/runs [--dry-run]   (needs omegaconf: the venv)

A run folder is finished when it holds summary.json (the run-folder contract); unfinished ones (a run stopped
by the call's time limit) stay out, as do checkpoints, locks and the worker logs. An existing folder is
never overwritten by another run: one with the same summary.json is skipped, one whose run the bundle holds
extended (the same config but for more trainer.max_steps, as the tables protocol extends runs; its
metrics.jsonl, or metrics.prev.jsonl for a retrained one, has the shorter run's training lines) is replaced,
and any other difference is an error. With --restore-interrupted, a folder whose extension was killed by the
lease's end (summary.prev.json, no summary.json; its checkpoint stayed on the machine) is imported as the
finished shorter run it was (RunFolder.restore_previous: the killed extension's lines are kept in
metrics.interrupted.jsonl), instead of being lost with it; one that cannot be restored stays out, with the
reason. Members are read as data (no links, no absolute paths, no `..`), since a bundle is an untrusted file.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # sessa_bench from the checkout

SKIP_SUFFIXES = (".ckpt", ".lock")


Members = dict[PurePosixPath, "tarfile.TarInfo | Path"]  # path inside a run folder -> its member (or file)


SUMMARY, PREVIOUS = PurePosixPath("summary.json"), PurePosixPath("summary.prev.json")


def run_members(tar: tarfile.TarFile, root: str = "paper_runs") -> dict[PurePosixPath, Members]:
    """experiment/run -> {path inside the run folder: member}, for every run folder under root/ in the bundle
    (finished: holding summary.json, or not); checkpoints, locks and logs/ are left out."""
    runs: dict[PurePosixPath, Members] = {}
    for m in tar.getmembers():
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError(f"bundle member {m.name!r}: absolute or parent path; refusing the bundle")
        parts = p.parts[1:] if p.parts[:1] == (".",) else p.parts
        if len(parts) < 4 or parts[0] != root or parts[2] == "logs" or not m.isfile():
            continue  # root/experiment/run/file...: nothing else belongs to a run folder
        if m.name.endswith(SKIP_SUFFIXES):
            continue
        runs.setdefault(PurePosixPath(parts[1], parts[2]), {})[PurePosixPath(*parts[3:])] = m
    return runs


def restored(tar: tarfile.TarFile, run: PurePosixPath, files: Members, work: Path) -> Members:
    """The interrupted run's folder restored to its finished shorter run (in `work`), as a members dict
    whose entries are files there (write_folder reads either)."""
    from sessa_bench.run_folder import RunFolder
    folder = work / run
    for rel, m in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(tar.extractfile(m).read())
    RunFolder(folder).restore_previous()
    return {p.relative_to(folder): p for p in folder.rglob("*") if p.is_file()}


def import_runs(bundle: Path, dest: Path, dry_run: bool = False, skip: tuple[str, ...] = (),
                restore_interrupted: bool = False) -> list[str]:
    """Copy the finished run folders of `bundle` under `dest`; returns what was done, one line per run.
    skip: run names (experiment/run or run) left in the bundle, e.g. a run found invalid after it finished.
    restore_interrupted: also import each killed extension's folder as its finished shorter run."""
    done = []
    with tarfile.open(bundle, "r:gz") as tar, tempfile.TemporaryDirectory() as work:
        runs = {}
        for run, files in run_members(tar).items():
            if SUMMARY in files:
                runs[run] = (files, "")
            elif restore_interrupted and PREVIOUS in files and str(run) not in skip and run.name not in skip:
                try:  # an extension killed before it finished
                    runs[run] = (restored(tar, run, files, Path(work)), " restored from its killed extension")
                except ValueError as e:
                    done.append(f"leave  {run} (not restorable: {e})")
        for run, (files, how) in sorted(runs.items()):
            if str(run) in skip or run.name in skip:
                done.append(f"skip   {run}")
                continue
            target = dest / run
            new = read(tar, files[SUMMARY])
            replace = False
            if (target / "summary.json").is_file():
                if (target / "summary.json").read_bytes() == new:
                    done.append(f"same   {run}")
                    continue
                steps = extended_steps(target, tar, files)
                if steps is None:
                    raise FileExistsError(f"{target} already holds a different finished run; move it away first")
                done.append(f"extend {run} (to {steps} steps){how}")
                replace = True
            elif target.exists():
                raise FileExistsError(f"{target} exists without summary.json; move it away first")
            else:
                done.append(f"import {run} ({len(files)} files){how}")
            if not dry_run:
                write_folder(target, tar, files, replace)
    return done


def read(tar: tarfile.TarFile, member: tarfile.TarInfo | Path) -> bytes:
    """A run file's bytes: a bundle member, or a file of a restored folder."""
    return member.read_bytes() if isinstance(member, Path) else tar.extractfile(member).read()


def extended_steps(target: Path, tar: tarfile.TarFile, files: Members) -> int | None:
    """The bundle's step count when its run extends the one in `target`, else None."""
    from omegaconf import OmegaConf

    from sessa_bench.run_folder import extension_of
    cfg = files.get(PurePosixPath("config.yaml"))
    if cfg is None or not (target / "config.yaml").is_file():
        return None
    try:
        new = OmegaConf.to_container(OmegaConf.create(read(tar, cfg).decode()))
        old = OmegaConf.to_container(OmegaConf.load(target / "config.yaml"))
        return extension_of(old, new) or None
    except Exception:  # noqa: BLE001 - an unreadable config is not an extension: the caller says so
        return None


def write_folder(target: Path, tar: tarfile.TarFile, files: Members, replace: bool) -> None:
    """Write the run's files to a fresh sibling folder, then put it in place (the old one out of the way
    first when replacing), so an interrupted import leaves the old folder or the new one, never a mix."""
    tmp = target.with_name(f".{target.name}.importing")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, m in files.items():
        out = tmp / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(read(tar, m))
    if replace:
        old = target.with_name(f".{target.name}.replaced")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(target)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--dry-run", action="store_true", help="say what would be imported, write nothing")
    ap.add_argument("--skip", action="append", default=[], metavar="RUN",
                    help="leave this run (its name, or experiment/name) in the bundle; repeatable")
    ap.add_argument("--restore-interrupted", action="store_true",
                    help="import a run whose extension the lease's end killed as the finished shorter run it was "
                         "(the killed extension's lines kept in metrics.interrupted.jsonl)")
    args = ap.parse_args(argv)
    try:
        for line in import_runs(args.bundle, args.dest, args.dry_run, tuple(args.skip), args.restore_interrupted):
            print(line)
    except (ValueError, FileExistsError, tarfile.TarError, OSError) as e:
        print(f"import_runs: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
