"""scripts/mamba2_speed_ab.py on CPU (its dry run), so a typo cannot waste a GPU lease: the table's model,
one row per variant, and the variants' loss and gradients equal on the same batch and weights."""

import re
import sys

import pytest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))


def test_dry_run_writes_a_row_per_variant(tmp_path, monkeypatch):
    import mamba2_speed_ab
    import torch

    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))
    model, task, batch = mamba2_speed_ab.table_model(torch.device("cpu"))  # the table's model, as trained
    assert (len(model.blocks), model.cfg.d_model, task.num_classes, batch) == (25, 288, 20, 32)
    assert mamba2_speed_ab.main(["--out", str(tmp_path), "--device", "cpu", "--batch", "1", "--seq-len", "8",
                                 "--reps", "1", "--variants", "1:conv1d", "64:shift", "--override", "budget=tiny"]) == 0
    text = (tmp_path / "mamba2_speed_ab.md").read_text()
    assert "torch.save of model + optimizer state" in text
    rows = re.findall(r"^\| (\d+) \| (\w+) \| .*$", text, re.M)
    assert [r for r in rows] == [("1", "conv1d"), ("64", "shift")]
    last = text.splitlines()[[i for i, l in enumerate(text.splitlines()) if l.startswith("| 64 | shift")][0]]
    loss_diff, grad_diff = (float(v) for v in last.split("|")[8:10])
    assert loss_diff < 1e-5 and grad_diff < 1e-5  # float32 on CPU: the same function, rounded differently
    assert mamba2_speed_ab.main(["--out", str(tmp_path), "--device", "cpu", "--graphs"]) == 2  # graphs: CUDA
    with pytest.raises(SystemExit):  # a malformed variant: argparse's one line
        mamba2_speed_ab.main(["--out", str(tmp_path), "--device", "cpu", "--variants", "64-shift"])
