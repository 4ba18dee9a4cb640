"""Mixer names -> classes. A config may also name any class by dotted path (`my_pkg.mixers.MyMixer`),
which is how a new baseline is added without touching this package."""

from __future__ import annotations

import importlib
import os
import sys

MIXERS = {
    "attention": "sessa_bench.models.attention.CausalAttention",
    "sessa": "sessa_bench.models.sessa.SessaMixer",
    "mamba2": "sessa_bench.models.mamba2.Mamba2Mixer",
}


def mixer_class(name: str):
    path = MIXERS.get(name, name)
    module, _, cls = path.rpartition(".")
    if not module:
        raise ValueError(f"model.mixer={name!r} is neither one of {sorted(MIXERS)} nor a dotted class path")
    # A user's mixer package lives in the working directory, which `python -m` puts on the import path but
    # the installed `sessa-bench` script does not: add it, at the end (it never shadows an installed module).
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"model.mixer={name!r}: cannot import {path} ({e}); "
                         f"known mixers: {sorted(MIXERS)} or a dotted class path") from e
