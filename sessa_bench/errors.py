"""How every entry point ends on bad input: one line on stderr, `<prog>: error: <what, and what is allowed>`,
exit code 2. SESSA_BENCH_DEBUG=1 re-raises instead, with the full traceback.

    with user_errors("sessa-bench eval"):
        main()

Hydra's own errors (an unknown group option, bad override syntax, a key missing from a schema) count:
Hydra is told to re-raise them (HYDRA_FULL_ERROR) instead of printing its multi-line report, and argparse's
usage-plus-error exit becomes the same one line.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from contextlib import contextmanager

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

DEBUG_ENV = "SESSA_BENCH_DEBUG"
EXIT_USAGE = 2  # what argparse and most Unix tools exit with on bad usage


class UsageError(ValueError):
    """A command-line error found by an entry point itself (an unknown command, an argparse error)."""


# What a user can cause with a config, a flag or a file; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, RuntimeError, HydraException,
               OmegaConfBaseException)


def user_error_types() -> tuple[type[BaseException], ...]:
    """USER_ERRORS, and Lightning's MisconfigurationException once Lightning is loaded (it cannot have been
    raised before; importing Lightning here cost every command 3 s of start-up, its error lines included)."""
    lightning = sys.modules.get("lightning.fabric.utilities.exceptions")
    return USER_ERRORS + ((lightning.MisconfigurationException,) if lightning else ())


# Lines of Hydra/OmegaConf reports that say where, not what (the search path, OmegaConf's node types).
_NOISE = re.compile(r"^(object_type|reference_type|value_type|provider)=|^Config search path:|"
                    r"^Set the environment variable HYDRA_FULL_ERROR")


def debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0", "false")


def one_line(message: str) -> str:
    """A multi-line report as one line: a header ending in ':' takes the indented lines below it as a comma
    list (Hydra's "Available options in 'model':" then one option per line); other lines join with '; '."""
    parts: list[str] = []
    header: int | None = None  # index in parts of the open header, whose indented items follow
    items: list[str] = []
    skipping = False
    for raw in str(message).splitlines():
        line = raw.strip()
        if not line:
            header = None
            continue
        indented = raw[0] in "\t "
        if skipping and indented:
            continue
        skipping = False
        if _NOISE.search(line):
            skipping = line.endswith(":")  # drop a noisy section with its items
            continue
        if header is not None and indented:
            items.append(line)
            parts[header] = f"{parts[header].split(':')[0]}: {', '.join(items)}"
            continue
        header, items = (len(parts), []) if line.endswith(":") else (None, [])
        parts.append(line)
    return "; ".join(p.rstrip(":") for p in parts)


def describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    cause = e.__cause__
    if isinstance(e, HydraException) and isinstance(cause, OmegaConfBaseException):
        text = f"{text}: {cause}"  # Hydra's "Error merging override x=y" says where; OmegaConf says what
    if isinstance(e, (FileNotFoundError, NotADirectoryError)) and e.filename and e.filename not in text:
        text = f"{text}: {e.filename}"
    return one_line(text)


def _argparse_error(self: argparse.ArgumentParser, message: str):
    raise UsageError(message)


@contextmanager
def user_errors(prog: str):
    """Run an entry point: a user error ends in one line and exit code 2 (a traceback under SESSA_BENCH_DEBUG)."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra re-raises; the one line is printed here
    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = _argparse_error  # usage + error over two lines -> our one line
    try:
        yield
    except user_error_types() as e:  # evaluated when an exception arrives, so Lightning's is in by then
        if debug():
            raise
        print(f"{prog}: error: {describe(e)}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USAGE) from None
    finally:
        argparse.ArgumentParser.error = original
