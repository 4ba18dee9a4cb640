"""`sessa-bench wandb sync <results dir | experiment folder | run folder>`: upload the offline W&B runs
found under it with `wandb sync`, skipping those wandb already marked as synced (`<file>.wandb.synced`,
the marker `wandb sync` itself writes and checks), so rerunning it uploads only what is new.

Offline runs live at <run folder>/wandb/offline-run-<time>-<id>/run-<id>.wandb (conf/logger/wandb.yaml);
a resumed run folder holds one per process that wrote to it, uploaded in time order into the same W&B run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

OFFLINE_MODES = ("offline", "disabled", "dryrun")


def offline_runs(root: str | Path) -> list[Path]:
    """The offline-run-* folders under root (not wandb's latest-run links), in path order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (give a results dir, an experiment or a run folder)")
    return sorted(p.parent for p in root.rglob("offline-run-*/*.wandb")
                  if p.parent.parent.name == "wandb" and not p.parent.is_symlink())


def is_synced(run: Path) -> bool:
    files = list(run.glob("*.wandb"))
    return bool(files) and all(f.with_suffix(".wandb.synced").exists() for f in files)


def require_login() -> None:
    """One clear error when uploading cannot work: offline mode, or no credentials (no network used)."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in OFFLINE_MODES:
        raise RuntimeError(f"WANDB_MODE={mode}: unset it (or set WANDB_MODE=online) to upload to W&B")
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return
    from wandb.sdk.lib.wbauth.wbnetrc import read_netrc_auth
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    if not read_netrc_auth(host=host):
        raise RuntimeError(f"not logged in to W&B at {host}: run `wandb login` or set WANDB_API_KEY")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="sessa-bench wandb sync", description=__doc__.split("\n\n")[0])
    ap.add_argument("path", help="results dir, experiment folder or run folder")
    ap.add_argument("--project", default=None, help="override the W&B project of every run")
    ap.add_argument("--entity", default=None, help="override the W&B entity of every run")
    ap.add_argument("--dry-run", action="store_true", help="list what would be uploaded")
    args = ap.parse_args(argv)
    runs = offline_runs(args.path)
    todo = [r for r in runs if not is_synced(r)]
    print(f"{len(runs)} offline W&B runs under {args.path}: {len(runs) - len(todo)} already synced, "
          f"{len(todo)} to upload")
    if args.dry_run or not todo:
        for r in todo:
            print(f"  {r}")
        return
    require_login()
    cmd = [sys.executable, "-m", "wandb", "sync", "--skip-synced"]
    cmd += ["--project", args.project] if args.project else []
    cmd += ["--entity", args.entity] if args.entity else []
    if subprocess.run(cmd + [str(r) for r in todo]).returncode:
        raise RuntimeError("wandb sync failed (its output is above); rerun to retry the runs not yet synced")
