"""The cache-read bench (sessa_bench/bench/reads.py) on CPU: the shapes it reads come from the models' configs,
every read is checked against the float64 reference (a wrong read shows in rel_err), and the rates follow
from the times."""

import pytest
import torch

from sessa_bench.bench import reads
from sessa_bench.bench.decoding import decode_model
from sessa_bench.budget import load_budget, load_family, solve


def test_read_shapes_follow_the_solved_configs():
    for fam in ("sessa", "transformer", "mamba2"):
        cfg = solve(load_family(fam), load_budget("tiny"), 64)
        got = reads.read_shapes(decode_model(fam, "tiny", 64, torch.device("cpu"), torch.float32))
        D, H, n = cfg.d_model, cfg.n_heads, cfg.n_layers
        Hkv = getattr(cfg, "n_kv_heads", None) or H
        want = {"mamba2": [],
                "transformer": [{"cache": "attention", "H": H, "Hkv": Hkv, "d": D // H, "layers": n}],
                "sessa": [{"cache": "attention", "H": H, "Hkv": Hkv, "d": D // H, "layers": n},
                          {"cache": "feedback", "H": 1, "Hkv": 1, "d": D, "layers": n}]}[fam]
        assert got == want, (fam, got)


def test_variants():
    assert reads.variants(["sdpa", "triton", "reduce"], ["reduce", "matmul"], [4, 16], triton=False) == [
        ("sdpa", False, 0), ("reduce", False, 0), ("reduce", True, 0)]  # matmul is not among the reads timed
    assert reads.variants(["triton"], ["triton"], [4, 16], triton=True) == [
        ("triton", False, 0), ("triton", True, 0), ("triton", False, 4), ("triton", False, 16)]


def run(**kw):
    return reads.bench_reads(torch.device("cpu"), torch.float32, ["sessa"], "tiny", 64, 48, [1, 3],
                             ["sdpa", "reduce", "matmul"], log=lambda s: None, calls=1, reps=1, **kw)


def test_every_read_is_checked_and_timed():
    rows = run(compiled=["reduce"])
    assert len(rows) == 2 * 2 * 4  # two caches, two batches, three reads eager and reduce compiled
    for r in rows:
        assert r["rel_err"] <= 1e-5, r
        nbytes = 2 * r["batch"] * r["context"] * r["Hkv"] * r["d"] * 4  # K and V, float32
        assert r["gb_s"] == pytest.approx(nbytes / (r["us"] * 1e-6) / 1e9)
        assert r["step_ms"] == pytest.approx(r["us"] * r["layers"] / 1e3)
        if r["read"] == "sdpa":
            assert r["x_sdpa"] == 1.0
    assert {(r["read"], r["compile"]) for r in rows} == {("sdpa", False), ("reduce", False), ("matmul", False),
                                                         ("reduce", True)}


def test_a_wrong_read_shows_in_its_error(monkeypatch):
    real = reads.masked_read

    def wrong(q, K, V, mask, impl="reduce"):
        out = real(q, K, V, mask, impl)
        return out.flip(0) if impl == "matmul" else out  # batch rows swapped

    monkeypatch.setattr(reads, "masked_read", wrong)
    rows = run()
    assert all(r["rel_err"] > 0.1 for r in rows if r["read"] == "matmul" and r["batch"] == 3)
    assert all(r["rel_err"] <= 1e-5 for r in rows if r["read"] != "matmul")


def test_the_triton_read_takes_only_power_of_two_splits():
    from sessa_bench.models.kernels import split_read_triton as sr
    q = torch.zeros(1, 1, 8)
    K = torch.zeros(1, 16, 1, 8)
    for bad in (3, 2 * sr.MAX_SPLITS):
        with pytest.raises(ValueError, match=rf"split_read n_splits={bad}: must be 0 \(chosen by size\) or a power "
                                             rf"of two up to {sr.MAX_SPLITS}"):
            torch.ops.sessa_bench.split_read(q, K, K, torch.ones(16, dtype=torch.uint8), bad)


@pytest.mark.gpu
def test_every_read_runs_graphed_on_cuda():
    """The GPU path: every read replayed from a CUDA graph, the Triton read at its own and at forced split
    counts, `reduce` compiled; bf16 within 1e-2 of the float64 reference."""
    rows = reads.bench_reads(torch.device("cuda"), torch.bfloat16, ["sessa"], "tiny", 64, 256, [2],
                             ["sdpa", "reduce", "triton", "matmul"], compiled=["reduce"], triton_splits=[2, 8],
                             log=lambda s: None, calls=3, reps=2)
    assert {r["read"] for r in rows} == {"sdpa", "reduce", "triton", "matmul", "triton/2", "triton/8"}
    for r in rows:
        assert not r.get("error") and isinstance(r["us"], float) and r["rel_err"] <= 1e-2, r
