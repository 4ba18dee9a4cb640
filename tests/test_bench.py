"""`make bench` on CPU: the same benchmark code at toy shapes writes its table, CSV and plot."""

import csv

from sessa_bench.bench.__main__ import main


def test_cpu_bench_writes_table_csv_and_plot(tmp_path):
    main(["--preset", "cpu", "--out-dir", str(tmp_path)])
    md = (tmp_path / "cpu.md").read_text()
    for section in ("## Block level", "## Training", "## Decoding", "## Profile", "### mamba2", "commit",
                    "rerun: `python -m sessa_bench.bench", "compiled_tok_s", "static"):
        assert section in md
    rows = list(csv.DictReader((tmp_path / "cpu.csv").open()))
    blocks = [r for r in rows if r["part"] == "blocks"]
    impls = {r["impl"] for r in blocks}
    assert {"sessa/dense", "attention/sdpa", "attention/math", "mamba2/torch"} <= impls
    # the attention/sdpa block is the reference of every ratio
    assert all(float(r["x_attention"]) == 1.0 for r in blocks if r["impl"] == "attention/sdpa")
    decode = [r for r in rows if r["part"] == "decode"]
    assert {r["family"] for r in decode} == {"sessa", "transformer", "mamba2"}
    # both reads side by side for the families that read a cache; Mamba2 (a fixed state) once
    assert {(r["family"], r["read"]) for r in decode} == {
        ("sessa", "sdpa"), ("sessa", "reduce"), ("transformer", "sdpa"), ("transformer", "reduce"), ("mamba2", "-")}
    assert all(float(r["tokens_per_s"]) > 0 for r in rows if r["part"] in ("train", "decode"))
    train = [r for r in rows if r["part"] == "train"]
    # every family eager and compiled (Dynamo alone on CPU), and no graph break in any compiled model
    assert {(r["family"], r["compile_backend"]) for r in train} == {
        (f, b) for f in ("sessa", "transformer", "mamba2") for b in ("none", "eager")}
    assert all(int(r["graph_breaks"]) == 0 for r in train)
    assert (tmp_path / "cpu.png").stat().st_size > 1000


def test_gpu_block_list_has_the_two_level_sessa_beside_the_single_level(monkeypatch):
    """On CUDA `make bench` times sessa/triton (single level) and sessa/triton2 (block_rows) in one run. Only
    the factories are built here (no GPU needed); the two-level one must reach kernels.feedback with R."""
    import torch

    from sessa_bench.bench import blocks
    from sessa_bench.models import kernels
    from sessa_bench.models.kernels.feedback_dense import feedback_dense

    monkeypatch.setattr(kernels, "triton_available", lambda: True)
    impls = blocks.implementations(torch.device("cuda"), 32, 4, {})
    assert {"sessa/triton", "sessa/triton2"} <= set(impls)
    seen = []

    def record(f, q_b, k_b, gamma, impl="auto", triton_ok=None, block_rows=None):
        seen.append((impl, block_rows))
        return feedback_dense(f, q_b, k_b, gamma)

    monkeypatch.setattr(kernels, "feedback", record)
    x = torch.randn(1, 5, 32)
    for name in ("sessa/triton", "sessa/triton2"):
        mixer = impls[name]()
        mixer.impl = "dense"  # CPU: run the same mixer through the reference
        mixer.parallel(x)
    assert seen == [("dense", None), ("dense", blocks.TWO_LEVEL_BLOCK_ROWS)]


def test_a_cut_run_keeps_the_rows_it_measured(tmp_path, monkeypatch):
    """A bench call cut at a lease's limit (here: interrupted at the third decode row) leaves the rows
    measured so far in the table and CSV, marked partial."""
    import pytest

    from sessa_bench.bench import decoding
    real, calls = decoding._time_one, []

    def cut(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(decoding, "_time_one", cut)
    with pytest.raises(KeyboardInterrupt):
        main(["--preset", "cpu", "--parts", "decode", "--families", "sessa", "--out-dir", str(tmp_path)])
    md = (tmp_path / "cpu.md").read_text()
    assert "## Decoding" in md and "_Partial: the run was cut" in md
    assert len([r for r in csv.DictReader((tmp_path / "cpu.csv").open()) if r["part"] == "decode"]) == 2
