import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


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
    """Every file under the committed run folders with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()} if root.is_dir() else {}


@pytest.fixture(autouse=True)
def _committed_runs_untouched():
    """The committed run folders are results: a test that reopens, extends or writes into them (e.g. the
    tables protocol run without --results-dir) fails here rather than corrupting them for the tests after it."""
    before = _state(RUNS)
    yield
    after = _state(RUNS)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the test changed committed run folders under results/runs: {changed[:5]}"
