"""Copy the finished run folders out of a GPU lease's bundle.tar.gz (scripts/gpu_session.sh) into a results
directory, so the tables can be rendered and committed:

    python3 scripts/import_runs.py BUNDLE.tar.gz results/runs [--dry-run]

A run folder is finished when it holds summary.json (the run-folder contract); unfinished ones (a run stopped
by the call's time limit) stay out, as do checkpoints, locks and the worker logs. An existing folder is
never overwritten: one with the same summary.json is skipped, one with a different one is an error. Members
are read as data (no links, no absolute paths, no `..`), since a bundle is an untrusted file.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path, PurePosixPath

SKIP_SUFFIXES = (".ckpt", ".lock")


Members = dict[PurePosixPath, tarfile.TarInfo]  # path inside a run folder -> its member


def run_members(tar: tarfile.TarFile, root: str = "paper_runs") -> dict[PurePosixPath, Members]:
    """experiment/run -> {path inside the run folder: member}, for every run folder under root/ in the bundle
    that holds summary.json (finished); checkpoints, locks and logs/ are left out."""
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
    return {run: files for run, files in runs.items() if PurePosixPath("summary.json") in files}


def import_runs(bundle: Path, dest: Path, dry_run: bool = False) -> list[str]:
    """Copy the finished run folders of `bundle` under `dest`; returns what was done, one line per run."""
    done = []
    with tarfile.open(bundle, "r:gz") as tar:
        for run, files in sorted(run_members(tar).items()):
            target = dest / run
            new = tar.extractfile(files[PurePosixPath("summary.json")]).read()
            if (target / "summary.json").is_file():
                if (target / "summary.json").read_bytes() == new:
                    done.append(f"same   {run}")
                    continue
                raise FileExistsError(f"{target} already holds a different finished run; move it away first")
            if target.exists():
                raise FileExistsError(f"{target} exists without summary.json; move it away first")
            done.append(f"import {run} ({len(files)} files)")
            if dry_run:
                continue
            for rel, m in files.items():
                out = target / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(tar.extractfile(m).read())
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--dry-run", action="store_true", help="say what would be imported, write nothing")
    args = ap.parse_args(argv)
    try:
        for line in import_runs(args.bundle, args.dest, args.dry_run):
            print(line)
    except (ValueError, FileExistsError, tarfile.TarError, OSError) as e:
        print(f"import_runs: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
