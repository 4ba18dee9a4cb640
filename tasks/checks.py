"""The argument checks every task's `__post_init__` runs: each returns the value normalised (plain int,
float or tuple) or raises one ValueError that names the field and says what is allowed.

`name` is printed as given: tasks pass their Hydra key ("task.seq_len"), so the message says what to set.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _range(lo, hi) -> str:
    return f">= {lo}" if hi is None else f"in [{lo}, {hi}]"


def integer(name: str, value, lo: int, hi: int | None = None) -> int:
    """An int in [lo, hi] (hi=None: no upper bound)."""
    if not _is_int(value) or value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name}={value!r} must be an int {_range(lo, hi)}")
    return int(value)


def optional_integer(name: str, value, lo: int, hi: int | None = None) -> int | None:
    """None, or an int in [lo, hi]."""
    if value is None:
        return None
    if not _is_int(value) or value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name}={value!r} must be null or an int {_range(lo, hi)}")
    return int(value)


def real(name: str, value, lo: float, hi: float, lo_open: bool = False, why: str = "") -> float:
    """A number in [lo, hi], or in (lo, hi] when lo_open; `why` is appended to the message."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = (lo < value if lo_open else lo <= value) and value <= hi
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise ValueError(f"{name}={value!r} must be a number in {interval}{f' ({why})' if why else ''}")
    return value


def int_list(name: str, value, lo: int, length: int | None = None) -> tuple[int, ...]:
    """A non-empty list of ints >= lo (exactly `length` of them if given); a bare int is a list of one
    when no length is required. Hydra hands lists over as ListConfig, which is iterable like a list."""
    if _is_int(value) and length is None:
        value = [value]
    what = f"a list of {length} ints" if length else "a non-empty list of ints"
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"{name}={value!r} must be {what} >= {lo}")
    items = list(value)
    if not items or (length is not None and len(items) != length) \
            or not all(_is_int(v) and v >= lo for v in items):
        raise ValueError(f"{name}={_show(value)} must be {what} >= {lo}")
    return tuple(int(v) for v in items)


def fraction_list(name: str, value) -> tuple[float, ...]:
    """A non-empty list of distinct fractions in [0, 1]; a bare number is a list of one."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        value = [value]
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a list of distinct fractions in [0, 1]") from None
    if not out or not all(0.0 <= d <= 1.0 for d in out) or len(set(out)) != len(out):
        raise ValueError(f"{name}={_show(value)} must be a list of distinct fractions in [0, 1]")
    return out


def one_of(name: str, value, allowed: tuple) -> object:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {allowed}")
    return value


def optional_str(name: str, value) -> str | None:
    """None or a path-like / string, as a str (Hydra may hand over other scalars)."""
    if value is None:
        return None
    if isinstance(value, bool) or isinstance(value, (list, tuple, dict)):
        raise ValueError(f"{name}={value!r} must be null or a string")
    return str(value)


def _show(value) -> str:
    """Lists print as lists whatever container Hydra used."""
    try:
        return repr(list(value))
    except TypeError:
        return repr(value)
