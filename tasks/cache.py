"""On-disk cache for generated or tokenised data, keyed by the config that produced it.

Files are written to a temporary name and renamed, so an interrupted build never leaves a file that a
later run would trust. They hold plain data only (dicts and lists of tensors, ints, strings) and are read
with `torch.load(weights_only=True)`: a crafted file cannot run code, it is rebuilt like a corrupt one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch

from .base import config_key

log = logging.getLogger("sessa_bench")


def cache_dir() -> Path:
    return Path(os.environ.get("SESSA_BENCH_CACHE", Path.home() / ".cache" / "sessa_bench"))


def atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def cached(kind: str, cfg: dict, build: Callable[[], object]):
    """Return build() for this config, computing and saving it once."""
    path = cache_dir() / kind / f"{config_key(cfg)}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception as e:  # a corrupt or crafted cache file is rebuilt, never trusted
            log.warning("cache file %s is unreadable as plain data (%s); rebuilding it", path, type(e).__name__)
            path.unlink(missing_ok=True)
    obj = build()
    atomic_save(obj, path)
    return obj
