import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fresh_compile_caches():
    """Every test compiles from empty TorchDynamo caches, as in a process of its own. Without this, the code
    objects an earlier test compiled (Backbone.forward and the mixers, by the bench's compiled rows, say) keep
    their cache entries and guards, and each later compile of the same code goes through them first: the
    torch.compile tests ran 2-4x slower after tests/test_bench.py than alone."""
    yield
    torch._dynamo.reset()


def pytest_collection_modifyitems(config, items):
    # GPU tests skip themselves when no CUDA device is present (they are deselected by default anyway).
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


RUNS = __import__("pathlib").Path(__file__).resolve().parent.parent / "results" / "runs"


def _state(root):
    """Every file under the committed run folders with its size and modification time (one stat per file:
    this runs twice around every test)."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:  # a dangling link
                continue
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(autouse=True)
def _committed_runs_untouched():
    """The committed run folders are results: a test that reopens, extends or writes into them (e.g. the
    tables protocol run without --results-dir) fails here rather than corrupting them for the tests after it."""
    before = _state(RUNS)
    yield
    after = _state(RUNS)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the test changed committed run folders under results/runs: {changed[:5]}"
