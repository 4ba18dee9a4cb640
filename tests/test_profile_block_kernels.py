"""scripts/profile_block_kernels.py on CPU (the dense solve, no GPU): both steps profiled, the glue attributed to
our calling lines, and --chunked really puts the one-product halves back (their gradients then concatenated
in the backward, SplitBackward0), so a lease's A/B of models/split_linear.py cannot compare a run with itself."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import profile_block_kernels as prof  # noqa: E402


@pytest.fixture
def restore_split_linear(monkeypatch):
    """chunk_halves patches modules: put their split_linear back after the test."""
    import importlib
    for name in prof.CHUNKED.values():
        module = importlib.import_module(name)
        monkeypatch.setattr(module, "split_linear", module.split_linear)


def cat_callers(text: str) -> set[str]:
    """The 'called from' of every aten::cat row of the forward+backward step's glue table."""
    step = text.split("## forward (no_grad)")[0]
    return {row.split(" | ")[1] for row in step.splitlines() if row.startswith("| aten::cat |")}


def test_profile_attributes_glue_and_chunked_restores_the_views(restore_split_linear):
    import torch
    kw = dict(impl="sessa/dense", T=32, tokens=64, device=torch.device("cpu"), dtype=torch.float32, warmup=1)
    split = prof.report(**kw)
    assert "## forward+backward:" in split and "## forward (no_grad):" in split
    assert "| aten::mm |" in split                                  # the kernels (CPU ops) table
    assert "models/kernels/feedback_dense.py" in split             # glue named by our calling line
    assert "SplitBackward0" not in cat_callers(split)
    prof.chunk_halves(["W_in", "proj_fb"])
    chunked = prof.report(**kw, chunked=("W_in", "proj_fb"))
    assert "chunked halves: W_in, proj_fb" in chunked
    assert "SplitBackward0" in cat_callers(chunked)
