"""sessa-bench: Sessa vs Transformer vs Mamba2 under matched budgets."""

from pathlib import Path as _Path

__version__ = "0.1.0"

# models/ and tasks/ live at the top of the repo and install as sessa_bench.models / sessa_bench.tasks.
# When the package is used straight from a checkout (PYTHONPATH=., as on the GPU machine, which has no
# pip access), let the same names resolve to the checkout's folders.
_root = _Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").exists() and (_root / "models" / "__init__.py").exists():
    __path__.append(str(_root))  # noqa: F821 (package __path__)
