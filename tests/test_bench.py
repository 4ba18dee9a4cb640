"""`make bench` on CPU: the same benchmark code at toy shapes writes its table, CSV and plot; the harness
loop is timed at the bare step's shapes."""

import csv
import os
import re

import pytest

from sessa_bench.bench.__main__ import main


@pytest.fixture(scope="module")
def cpu_bench(tmp_path_factory):
    """`make bench` on CPU, once for the tests below: its output folder, and each harness-loop run it made (the
    call's arguments, its result, the shape of every batch its training steps saw, the task cache variable
    before and after)."""
    from sessa_bench.bench import training
    from sessa_bench.lit_module import LitSequenceModel

    out = tmp_path_factory.mktemp("bench")
    loops, shapes = [], []
    real_step, real_loop = LitSequenceModel.training_step, training.harness_throughput

    def record_step(self, batch, batch_idx):
        shapes.append(tuple(batch["input_ids"].shape))
        return real_step(self, batch, batch_idx)

    def record_loop(fam, shape, mode, device, steps, warmup):
        shapes.clear()
        cache = os.environ.get("SESSA_BENCH_CACHE")
        result = real_loop(fam, shape, mode, device, steps, warmup)
        loops.append({"args": (fam, shape, mode, device.type, steps, warmup), "out": result,
                      "shapes": list(shapes), "cache": (cache, os.environ.get("SESSA_BENCH_CACHE"))})
        return result

    mp = pytest.MonkeyPatch()
    mp.setattr(LitSequenceModel, "training_step", record_step)
    mp.setattr(training, "harness_throughput", record_loop)
    try:
        main(["--preset", "cpu", "--out-dir", str(out)])
    finally:
        mp.undo()
    return out, loops


def test_cpu_bench_writes_table_csv_and_plot(cpu_bench):
    tmp_path = cpu_bench[0]
    md = (tmp_path / "cpu.md").read_text()
    for section in ("## Block level", "## Training", "## Decoding", "## Cache reads", "## Profile", "### mamba2",
                    "commit", "rerun: `python -m sessa_bench.bench", "compiled_tok_s", "static", "loop_eager_tok_s",
                    "loop_eager_x", "goal is >= 0.9"):
        assert section in md
    # the training loop's profile (the CPU preset's one family): its ms per step and the loop's own ops
    loop_profile = md.split("### The training loop", 1)[1].split("### Where a decode step goes", 1)[0]
    assert "#### transformer\n\n" in loop_profile and "#### sessa" not in loop_profile
    assert "error:" not in loop_profile and loop_profile.count("ms per step over") == 1, loop_profile[:2000]
    assert "AdamW" in loop_profile
    # a decode step's profile (the CPU preset's one family): its time per step, its cache and the rate
    dec = md.split("### Where a decode step goes (budget `tiny`, context 32, batch 2, read `sdpa+matmul`", 1)[1]
    dec = dec.split("\n## ", 1)[0]
    assert "#### sessa, eager\n\n" in dec and "#### transformer" not in dec and "graph" not in dec  # no graph on CPU
    assert re.search(r"^\| sessa \| 0\.00 \| \d+\.\d{3} \| \d+\.\d{3} \| [\d,]+ \|$", dec, re.M), dec[:1500]
    rows = list(csv.DictReader((tmp_path / "cpu.csv").open()))
    blocks = [r for r in rows if r["part"] == "blocks"]
    impls = {r["impl"] for r in blocks}
    assert {"sessa/dense", "attention/sdpa", "attention/math", "mamba2/torch"} <= impls
    # the attention/sdpa block and the bench's minimal one are the references of the two ratios
    assert all(float(r["x_attention"]) == 1.0 for r in blocks if r["impl"] == "attention/sdpa")
    assert all(float(r["x_minimal"]) == 1.0 for r in blocks if r["impl"] == "attention/minimal")
    sessa = next(r for r in blocks if r["impl"] == "sessa/dense")
    minimal = next(r for r in blocks if r["impl"] == "attention/minimal" and (r["T"], r["mode"]) == (sessa["T"], sessa["mode"]))
    assert float(sessa["x_minimal"]) == pytest.approx(float(sessa["ms"]) / float(minimal["ms"]))
    assert "fb_xmin" in md
    # every Sessa row checked against the dense solve in float64 before it was timed (float32 here)
    checked = {r["impl"]: float(r["err"]) for r in blocks if r["impl"].startswith("sessa/") and r["mode"] == "fwd+bwd"}
    assert {"sessa/dense", "sessa/chunked"} <= set(checked) and all(e < 1e-5 for e in checked.values()), checked
    assert all(not r["err"] for r in blocks if not r["impl"].startswith("sessa/") or r["mode"] == "fwd")
    assert "| err |" in md and "the dense solve in float64" in md
    # the decode rows' ratio to batch 1 (x_batch1) beside their tokens/s; the caches' length (context 32 and
    # the steps rounded up to the default multiple, 64)
    assert re.search(r"^\| sessa \| sdpa \| False \| 64 \| 32 \| 64 \| 4 \| static \| [\d,.]+ \| \d+\.\d\d \|", md,
                     re.M)
    # the preset's unrounded caches beside the default: context + steps + 1 positions, their own ratio
    assert re.search(r"^\| sessa \| sdpa\+matmul \| False \| 1 \| 32 \| 37 \| 4 \| static \| [\d,.]+ \| \d+\.\d\d \|",
                     md, re.M)
    # where a block's step goes: the preset's blocks profiled at one T, each with its summed op time
    prof = md.split("### Where a block's step goes (T=128", 1)[1].split("## Training", 1)[0]
    for name in ("sessa/dense", "attention/sdpa", "attention/minimal"):
        assert re.search(rf"^\| {name} \| \d+\.\d\d \|$", prof, re.M) and f"#### {name}\n" in prof
    decode = [r for r in rows if r["part"] == "decode"]
    assert {r["family"] for r in decode} == {"sessa", "transformer", "mamba2"}
    # the reads side by side for the families that read a cache; Mamba2 (a fixed state) once; "sdpa+matmul"
    # (Sessa's feedback read by matmul) is plain sdpa for the Transformer, timed once per cache multiple
    assert {(r["family"], r["read"], r["cache_multiple"]) for r in decode} == {
        ("sessa", "sdpa", "64"), ("sessa", "reduce", "64"), ("sessa", "sdpa+matmul", "64"),
        ("sessa", "sdpa+matmul", "1"), ("transformer", "sdpa", "64"), ("transformer", "reduce", "64"),
        ("transformer", "sdpa", "1"), ("mamba2", "-", "64")}
    assert len([r for r in decode if r["family"] == "transformer"]) == 3 * len([
        r for r in decode if (r["family"], r["read"]) == ("sessa", "sdpa")])
    assert all(float(r["tokens_per_s"]) > 0 for r in rows if r["part"] in ("train", "decode"))
    train = [r for r in rows if r["part"] == "train" and r["loop"] == "bare"]
    # every family eager and compiled (Dynamo alone on CPU), and no graph break in any compiled model
    assert {(r["family"], r["compile_backend"]) for r in train} == {
        (f, b) for f in ("sessa", "transformer", "mamba2") for b in ("none", "eager")}
    assert all(int(r["graph_breaks"]) == 0 for r in train)
    # the harness loop beside it, eager only on CPU, the same model as the bare step's, without an error
    loop = [r for r in rows if r["part"] == "train" and r["loop"] == "harness"]
    assert {(r["family"], r["compile_backend"]) for r in loop} == {
        (f, "none") for f in ("sessa", "transformer", "mamba2")}
    bare_params = {r["family"]: r["params"] for r in train}
    assert all(r["params"] == bare_params[r["family"]] and not r.get("error") and float(r["tokens_per_s"]) > 0
               for r in loop)
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

    def record(f, q_b, k_b, gamma, impl="auto", triton_ok=None, block_rows=None, strip_tile=None,
               strip_diag=False, chunk=None, dense_blocks=False):
        seen.append((impl, block_rows, strip_tile, strip_diag, chunk, dense_blocks))
        return feedback_dense(f, q_b, k_b, gamma)

    monkeypatch.setattr(kernels, "feedback", record)
    x = torch.randn(1, 5, 32)
    for name in ("sessa/triton", "sessa/triton2", *blocks.TILED, blocks.DENSE):
        mixer = impls[name]()
        mixer.impl = "dense"  # CPU: run the same mixer through the reference
        mixer.parallel(x)
    tile = blocks.STRIP_TILE
    assert seen == [("dense", None, None, False, 64, False), ("dense", blocks.TWO_LEVEL_BLOCK_ROWS, None, False, 64, False),
                    ("dense", 1024, tile, False, 64, False), ("dense", 1024, tile, True, 64, False),
                    ("dense", 1024, tile, False, 64, True)]


def test_block_list_keeps_the_asked_families_and_both_references(monkeypatch):
    """`--families sessa` times Sessa's blocks and the two attention references its ratios need, nothing else
    (it timed every block: results/bench/h200x2-run5-session.log); R variants of the two-level solve beside it."""
    import torch

    from sessa_bench.bench import blocks
    from sessa_bench.models import kernels

    monkeypatch.setattr(kernels, "triton_available", lambda: True)
    impls = blocks.implementations(torch.device("cuda"), 32, 4, {}, families=("sessa",))
    assert {n for n in impls if not n.startswith("sessa/")} == {"attention/sdpa", "attention/minimal"}
    assert {"sessa/triton2", "sessa/triton2-r256", "sessa/triton2-r1024"} <= set(impls)
    assert impls["sessa/triton2-r256"]().feedback_block_rows == 256
    assert impls["sessa/triton"]().feedback_block_rows is None  # the single level, beside the mixer's default
    tiled = impls[f"sessa/triton2-r1024-t{blocks.STRIP_TILE}"]()  # the default R, larger strip tiles
    assert (tiled.feedback_block_rows, tiled.feedback_strip_tile) == (1024, blocks.STRIP_TILE)
    assert tiled.feedback_strip_diag is False
    for name in ("sessa/triton", "sessa/triton2", "sessa/triton2-r1024"):  # the chunk's tile, whatever the default
        assert (impls[name]().feedback_strip_tile, impls[name]().feedback_strip_diag) == (None, False), name
    default = impls[f"sessa/triton2-r1024-t{blocks.STRIP_TILE}d"]()
    assert (default.feedback_strip_tile, default.feedback_strip_diag) == (kernels.DEFAULT_STRIP_TILE,
                                                                          kernels.DEFAULT_STRIP_DIAG)
    assert "mamba2/torch" in blocks.implementations(torch.device("cpu"), 32, 4, {}, families=("mamba2",))


def test_impls_keeps_the_named_blocks_and_the_references(monkeypatch):
    """`--impls` (a short lease's block run): the named blocks, the two attention references the ratios need and
    the dense solve the err column is taken against; an unknown name says which ones this device has."""
    import torch

    from sessa_bench.bench import blocks
    from sessa_bench.models import kernels

    monkeypatch.setattr(kernels, "triton_available", lambda: True)
    impls = blocks.implementations(torch.device("cuda"), 32, 4, {}, families=("sessa",))
    kept = blocks.select(impls, [blocks.DENSE, blocks.TILED[1]])
    assert set(kept) == {blocks.DENSE, blocks.TILED[1], "attention/sdpa", "attention/minimal", "sessa/dense"}
    assert blocks.select(impls, None) is impls
    with pytest.raises(ValueError, match="'sessa/nope' is not a block on this device.*sessa/triton2"):
        blocks.select(impls, ["sessa/nope"])


def test_impls_needs_the_blocks_part():
    with pytest.raises(SystemExit):
        main(["--preset", "cpu", "--parts", "decode", "--impls", "sessa/dense"])


def test_profile_part_writes_no_section_for_none_of_the_asked_families(tmp_path, monkeypatch):
    """The preset's loop profile is the Transformer's and its decode profile Sessa's: `--families mamba2` writes
    neither heading (lease 26's file had both, empty); asked for, each is written (the profilers stubbed)."""
    from sessa_bench.bench import __main__ as bench_main

    calls = []
    monkeypatch.setattr(bench_main, "profile_training", lambda device, fams, log, **q: {f: "top ops" for f in fams})
    monkeypatch.setattr(bench_main, "harness_section",
                        lambda device, fams, shape, log: calls.append(("loop", fams)) or "### The training loop\n")
    monkeypatch.setattr(bench_main, "profile_decoding", lambda device, dtype, fams, log, **d: calls.append(
        ("decode", fams)) or {})
    monkeypatch.setattr(bench_main, "decode_profile_section", lambda *a: "### Where a decode step goes\n")
    for fams, want in ((["mamba2"], []), (["mamba2", "sessa", "transformer"],
                                          [("loop", ["transformer"]), ("decode", ["sessa"])])):
        calls.clear()
        main(["--preset", "cpu", "--parts", "profile", "--families", *fams, "--out-dir", str(tmp_path)])
        md = (tmp_path / "cpu.md").read_text()
        assert calls == want and "### mamba2" in md
        assert ("### The training loop" in md) == bool(want) and ("### Where a decode step goes" in md) == bool(want)


def test_block_profile_keeps_the_asked_families():
    """`--families mamba2` profiles no Sessa block (lease 21 did), and nothing when the preset's profile has no
    block of the asked families; the references stay beside the blocks that are profiled."""
    from sessa_bench.bench.blocks import profiled

    impls = ["sessa/triton2-r1024", "sessa/triton", "attention/sdpa", "attention/minimal"]
    assert profiled(impls, ("mamba2",)) == []
    assert profiled(impls, ("sessa",)) == impls
    assert profiled(impls, ("transformer",)) == impls[2:]  # its blocks are the references
    assert profiled(impls + ["mamba2/torch"], ("mamba2", "transformer")) == [*impls[2:], "mamba2/torch"]
    # --impls: the named blocks (in the preset's list or not) beside the references
    assert profiled(impls, ("sessa",), ["sessa/triton2-r1024-t128-dense"]) == [
        "sessa/triton2-r1024-t128-dense", "attention/sdpa", "attention/minimal"]
    assert profiled(impls, ("mamba2",), ["sessa/triton"]) == []


def test_block_profile_lengths_follow_the_preset_and_lengths():
    from sessa_bench.bench.blocks import profile_lengths

    assert profile_lengths(4096, None) == [4096]
    assert profile_lengths([4096, 16384], None) == [4096, 16384]
    assert profile_lengths([4096, 16384], [16384, 2048]) == [16384]
    assert profile_lengths([4096, 16384], [2048]) == []


def test_the_block_check_finds_a_wrong_solve_and_a_failing_one():
    """sessa_errors against the dense solve: a correct chunked solve within float32 rounding, a solve of another
    gamma_max (same weights, other math) far off, a block whose build fails recorded as `failed`; nothing to
    check without the reference."""
    import torch

    from sessa_bench.bench.block_check import sessa_errors
    from sessa_bench.models.sessa import SessaMixer

    def mixer(**kw):
        return lambda: SessaMixer(16, 2, backend="sdpa", **kw)

    def broken():
        raise RuntimeError("no kernel")
    impls = {"sessa/dense": mixer(impl="dense"), "sessa/chunked": mixer(impl="chunked"),
             "sessa/wrong": mixer(impl="chunked", gamma_max=0.5), "sessa/broken": broken,
             "attention/sdpa": lambda: None}
    logged = []
    errors = sessa_errors(impls, 16, 2, 24, torch.float32, torch.device("cpu"), log=logged.append)
    assert set(errors) == {"sessa/dense", "sessa/chunked", "sessa/wrong", "sessa/broken"}
    assert errors["sessa/dense"] < 1e-5 and errors["sessa/chunked"] < 1e-5, errors
    assert errors["sessa/wrong"] > 1e-2 and errors["sessa/broken"] == "failed"
    assert any("sessa/broken" in line and "no kernel" in line for line in logged)
    assert sessa_errors({"sessa/chunked": impls["sessa/chunked"]}, 16, 2, 24, torch.float32,
                        torch.device("cpu"), log=logged.append) == {}


def test_minimal_attention_is_causal_rope_attention():
    """The bench's reference block computes causal softmax attention with rotate-half RoPE: against the
    formula written out here, in float64."""
    import torch

    from sessa_bench.bench.minimal_attention import MinimalAttention

    torch.manual_seed(0)
    B, T, D, H = 2, 7, 16, 2
    m = MinimalAttention(D, H).double()
    x = torch.randn(B, T, D, dtype=torch.float64)
    q, k, v = m.qkv(x).view(B, T, 3, H, D // H).unbind(2)
    half = D // H // 2
    freq = 10000.0 ** (-torch.arange(half, dtype=torch.float64) * 2 / (D // H))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * freq  # (T, half)

    def rope(t):  # (B, T, H, d): pairs (i, i + half) rotated by the angle of position t
        a, b = t[..., :half], t[..., half:]
        c, s = ang.cos()[None, :, None], ang.sin()[None, :, None]
        return torch.cat((a * c - b * s, a * s + b * c), dim=-1)

    scores = torch.einsum("bthd,bshd->bhts", rope(q), rope(k)) / (D // H) ** 0.5
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    y = torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v).reshape(B, T, D)
    torch.testing.assert_close(m(x), m.out(y), rtol=1e-12, atol=1e-12)


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


def test_a_decode_variant_that_fails_is_its_rows_error(tmp_path, monkeypatch):
    """A read that does not run (here: made to raise) is recorded in its rows and the table; the other
    variants are still timed."""
    from sessa_bench.bench import decoding
    real = decoding.StaticDecoder

    def decoder(model, B, L, read, **kw):
        if read == "reduce":
            raise RuntimeError("no kernel image is available")
        return real(model, B, L, read=read, **kw)

    monkeypatch.setattr(decoding, "StaticDecoder", decoder)
    main(["--preset", "cpu", "--parts", "decode", "--families", "sessa", "--out-dir", str(tmp_path)])
    rows = [r for r in csv.DictReader((tmp_path / "cpu.csv").open()) if r["part"] == "decode"]
    bad = [r for r in rows if r["read"] == "reduce"]
    assert bad and all(r["tokens_per_s"] == "error" and "no kernel image" in r["error"] for r in bad)
    assert all(float(r["tokens_per_s"]) > 0 for r in rows if r["read"] != "reduce")
    md = (tmp_path / "cpu.md").read_text()
    assert "- sessa read=reduce compile=False cache_multiple=64 context 32 batch 1: RuntimeError: no kernel image" in md


def test_a_bad_cache_multiple_is_its_rows_error_naming_the_field():
    """A decode variant's cache_multiple that is not a positive integer ends as its row's one-line error,
    naming the field; the part goes on."""
    import torch

    from sessa_bench.bench import decoding
    rows = decoding.bench_decoding(torch.device("cpu"), torch.float32, ("sessa",), "tiny", 64, [8], [1], steps=2,
                                   variants=({"read": "reduce", "compile": False, "cache_multiple": "abc"},
                                             {"read": "reduce", "compile": False}), log=lambda s: None)
    assert rows[0]["tokens_per_s"] == "error"
    assert rows[0]["error"] == "ValueError: cache_multiple must be a positive integer, got 'abc'"
    assert isinstance(rows[1]["tokens_per_s"], float) and rows[1]["cache_len"] == 64


def test_harness_loop_trains_the_bare_step_model_at_its_shape(cpu_bench):
    """The harness loop at the CPU preset's shape trains the bare step's model (same parameter count) on
    batches of exactly (batch, seq_len) tokens, one window of steps after a first window, plus one step
    (the loops of the CPU bench above: one per family, eager)."""
    import torch

    from sessa_bench.bench.__main__ import load_preset
    from sessa_bench.bench.harness_loop import window
    from sessa_bench.bench.training import build
    from sessa_bench.budget import load_budget, load_family, solve

    t = load_preset("cpu")["train"]
    shape = t["shapes"][0]
    w = window(t["steps"], t["warmup"])
    loops = cpu_bench[1]
    assert [c["args"] for c in loops] == [(fam, shape, "eager", "cpu", t["steps"], t["warmup"])
                                          for fam in ("sessa", "transformer", "mamba2")]
    for c in loops:
        fam, out = c["args"][0], c["out"]
        cfg = solve(load_family(fam), load_budget(shape["budget_name"]), shape["vocab"])
        bare = build(cfg, torch.device("cpu"), shape["batch"], shape["seq_len"], None)[0]
        assert out["params"] == sum(p.numel() for p in bare.parameters()), fam
        assert c["shapes"] == [(shape["batch"], shape["seq_len"])] * (2 * w + 1), fam
        assert out["steps"] == 2 * w + 1 and out["timed_steps"] == w and out["tokens_per_s"] > 0
        cache_before, cache_after = c["cache"]
        assert cache_after == cache_before  # the temporary task cache is not left behind


def test_a_failing_harness_loop_is_recorded_and_the_bench_goes_on(monkeypatch):
    """One family's harness loop raising, another's reporting a different model: both recorded in their rows
    (no ratio to the bare step), every row written as it comes, the other measurements kept."""
    import torch

    from sessa_bench.bench import training
    from sessa_bench.bench.__main__ import train_section

    def fake(fam, shape, mode, device, steps, warmup):
        if fam == "sessa":
            raise RuntimeError("boom")
        return {"params": 1, "tokens_per_s": 10.0}

    monkeypatch.setattr(training, "harness_throughput", fake)
    t = {"shapes": [{"budget_name": "tiny", "vocab": 256, "seq_len": 16, "batch": 2}], "compile_backends": [None],
         "warmup": 0, "steps": 1, "harness": True}
    written = []
    rows = training.bench_training(torch.device("cpu"), ("sessa", "mamba2"), log=lambda s: None,
                                   on_row=lambda rs: written.append(len(rs)), **t)
    assert written == [1, 2, 3, 4]
    assert [(r["family"], r["loop"]) for r in rows] == [("sessa", "bare"), ("sessa", "harness"),
                                                        ("mamba2", "bare"), ("mamba2", "harness")]
    assert rows[1]["tokens_per_s"] == "error" and "RuntimeError: boom" in rows[1]["error"]
    assert "the shapes differ" in rows[3]["error"] and rows[3]["tokens_per_s"] == 10.0
    assert all(isinstance(r["tokens_per_s"], float) for r in rows if r["loop"] == "bare")
    merged = training.side_by_side(rows)
    assert [m["loop_eager_x"] for m in merged] == [None, None]
    assert all(isinstance(m["eager_tok_s"], float) for m in merged)
    md = train_section(rows, t)
    assert "RuntimeError: boom" in md and "the shapes differ" in md


def test_budgets_times_only_the_named_training_shapes(tmp_path, monkeypatch, capsys):
    """`--parts train --budgets NAME` (a short lease timing only Table 1's shapes) times and writes only that
    budget's rows; the other shape of the preset (here `small`, never built) is left out; a name the preset
    does not have is one clear error naming the option and the allowed names."""
    import pytest

    from sessa_bench.bench import __main__ as bench

    real = bench.load_preset

    def two_shapes(name):  # the CPU preset with a second budget, cheap: one bare eager step per shape
        p = real(name)
        if name == "cpu":
            p["train"].update(shapes=[{"budget_name": "tiny", "vocab": 64, "seq_len": 16, "batch": 2},
                                      {"budget_name": "small", "vocab": 64, "seq_len": 8, "batch": 1}],
                              compile_backends=[None], warmup=0, steps=1, harness=False)
        return p

    monkeypatch.setattr(bench, "load_preset", two_shapes)
    main(["--preset", "cpu", "--parts", "train", "--families", "transformer", "--budgets", "tiny",
          "--out-dir", str(tmp_path)])
    rows = [r for r in csv.DictReader((tmp_path / "cpu.csv").open()) if r["part"] == "train"]
    assert [(r["budget"], r["seq_len"]) for r in rows] == [("tiny", "16")]
    md = (tmp_path / "cpu.md").read_text()
    assert "`tiny` T=16" in md and "`small`" not in md and "--parts train --families transformer --budgets tiny`" in md
    with pytest.raises(SystemExit):
        main(["--preset", "cpu", "--budgets", "base", "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--budgets" in err and "'base'" in err and "tiny, small" in err


def test_train_part_times_the_wavefront_solve_beside_sessa(tmp_path, monkeypatch, capsys):
    """`--parts train --families sessa sessa_wavefronts`: both models' rows in one run (the same parameters: one
    model, two solves); sessa_wavefronts with any other part is one clear error."""
    import pytest

    from sessa_bench.bench import __main__ as bench

    real = bench.load_preset

    def one_step(name):
        p = real(name)
        p["train"].update(shapes=[{"budget_name": "tiny", "vocab": 64, "seq_len": 16, "batch": 2}],
                          compile_backends=[None], warmup=0, steps=1, harness=False)
        return p

    monkeypatch.setattr(bench, "load_preset", one_step)
    main(["--preset", "cpu", "--parts", "train", "--families", "sessa", "sessa_wavefronts",
          "--out-dir", str(tmp_path)])
    rows = [r for r in csv.DictReader((tmp_path / "cpu.csv").open()) if r["part"] == "train"]
    assert [r["family"] for r in rows] == ["sessa", "sessa_wavefronts"] and rows[0]["params"] == rows[1]["params"]
    for parts in (["blocks"], ["train", "decode"]):
        with pytest.raises(SystemExit):
            main(["--preset", "cpu", "--parts", *parts, "--families", "sessa_wavefronts", "--out-dir", str(tmp_path)])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "sessa_wavefronts is timed by the train part only" in err, err


def test_lengths_time_only_the_named_block_lengths(tmp_path, monkeypatch, capsys):
    """`--parts blocks --lengths T` (a short lease) times the blocks at those T only, skips the largest-T search
    (here a preset that has one) and says so in the rerun line; a T below 1 is one clear error."""
    import pytest

    from sessa_bench.bench import __main__ as bench

    real = bench.load_preset
    monkeypatch.setattr(bench, "load_preset", lambda name: {**real(name), "fit_lengths": [128]})
    main(["--preset", "cpu", "--parts", "blocks", "--families", "transformer", "--lengths", "128",
          "--out-dir", str(tmp_path)])
    rows = [r for r in csv.DictReader((tmp_path / "cpu.csv").open()) if r["part"] == "blocks"]
    assert rows and {r["T"] for r in rows} == {"128"}
    md = (tmp_path / "cpu.md").read_text()
    assert "--parts blocks --families transformer --lengths 128`" in md and "Largest single sequence" not in md
    with pytest.raises(SystemExit):
        main(["--preset", "cpu", "--parts", "blocks", "--lengths", "0", "--out-dir", str(tmp_path)])
    assert "--lengths" in capsys.readouterr().err.strip().splitlines()[-1]


def test_graphed_rows_sit_beside_eager_on_cuda_only(monkeypatch):
    """The gpu preset's `cuda_graphs` backend: a bare row with the blocks graphed and a harness row with
    `cuda_graphs=true`, merged beside eager (graphs_speedup, loop_graphed_x); on CPU both are left out."""
    import torch

    from sessa_bench.bench import harness_loop, training
    from sessa_bench.bench.__main__ import load_preset, train_section

    assert "cuda_graphs" in load_preset("gpu")["train"]["compile_backends"]
    assert "cuda_graphs" not in (load_preset("cpu")["train"]["compile_backends"])
    assert training.harness_variants([None, "inductor", "cuda_graphs"]) == ["eager", "compile", "cuda_graphs"]
    assert "cuda_graphs=true" in harness_loop.overrides("sessa", {"budget_name": "tiny", "vocab": 64, "seq_len": 8,
                                                                  "batch": 2}, "cuda_graphs", True, 1, 0, "/tmp")
    seen = []
    monkeypatch.setattr(training, "harness_throughput",
                        lambda fam, shape, mode, device, steps, warmup: seen.append(mode) or
                        {"params": 1, "tokens_per_s": 10.0})
    t = {"shapes": [{"budget_name": "tiny", "vocab": 64, "seq_len": 8, "batch": 2}],
         "compile_backends": [None, "cuda_graphs"], "warmup": 0, "steps": 1, "harness": True}
    rows = training.bench_training(torch.device("cpu"), ("transformer",), log=lambda s: None, **t)
    assert [r["compile_backend"] for r in rows] == ["none", "none"] and seen == ["eager"]
    rows += [{**rows[0], "compile_backend": "cuda_graphs", "tokens_per_s": 2 * rows[0]["tokens_per_s"], "mfu": 0.1},
             {**rows[1], "compile_backend": "cuda_graphs", "tokens_per_s": 15.0}]
    (m,) = training.side_by_side(rows)
    assert m["graphs_speedup"] == pytest.approx(2.0) and m["loop_graphed_tok_s"] == 15.0
    assert m["loop_graphed_x"] is None  # the params differ from the bare model's: no ratio
    md = train_section(rows, t)
    assert "graphs_speedup" in md and "loop_graphed_tok_s" in md and "model.compile(backend=None)" in md


def test_a_profiled_steps_device_time_sums_kernels_only():
    """On a GPU an op's own device time repeats its kernels' and a user annotation spans them: the step's
    device time is the kernels' alone, as the profiler's own footer sums it (fake events; no GPU here)."""
    from types import SimpleNamespace as E

    from torch.autograd import DeviceType

    from sessa_bench.bench.block_profile import step_ms

    events = [E(device_type=DeviceType.CUDA, self_device_time_total=1500.0, is_user_annotation=False),  # kernel
              E(device_type=DeviceType.CUDA, self_device_time_total=500.0, is_user_annotation=False),   # kernel
              E(device_type=DeviceType.CUDA, self_device_time_total=2000.0, is_user_annotation=True),   # annotation
              E(device_type=DeviceType.CPU, self_device_time_total=2000.0, self_cpu_time_total=300.0)]  # its op
    assert step_ms(events, cuda=True) == 2.0
    assert step_ms(events[3:], cuda=False) == 0.3
    from sessa_bench.bench.harness_profile import busy_share
    assert busy_share(events, wall_s=0.004) == 0.5  # the training loop's busy share counts the kernels alone


def test_graphed_block_times_are_compared_with_the_graphed_references(monkeypatch):
    """On CUDA the blocks of GRAPHED are timed a second time from CUDA graphs, and their ratios are taken
    graphed to graphed (an eager reference would flatter them); a capture that fails is recorded, not fatal.
    Timings are stubbed: only the bookkeeping and the table are under test here."""
    from types import SimpleNamespace

    from sessa_bench.bench import blocks
    from sessa_bench.bench.__main__ import block_table

    eager = {"attention/sdpa": 5.0, "attention/minimal": 4.0, "sessa/triton2": 10.0, "mamba2/torch": 8.0}
    graph = {"attention/sdpa": 3.5, "attention/minimal": 3.0, "sessa/triton2": 6.0}
    monkeypatch.setattr(blocks, "implementations", lambda *a, **k: {n: n for n in eager})  # factory = its name
    monkeypatch.setattr(blocks, "run_one", lambda f, d, b, T, dt, dev, bw, reps: {"ms": eager[f], "peak_gib": 0.1})

    def run_graphed(f, d, b, T, dt, dev, backward, reps):
        if f == "sessa/triton2" and not backward:
            raise RuntimeError("operation not permitted when stream is capturing")
        return {"ms": graph[f]}
    monkeypatch.setattr(blocks, "run_graphed", run_graphed)
    rows, _ = blocks.bench_blocks(SimpleNamespace(type="cuda"), None, 8, 2, 64, [16], {}, reps=1, log=lambda s: None)
    got = {(r["impl"], r["mode"]): r for r in rows}
    fb = got[("sessa/triton2", "fwd+bwd")]
    assert (fb["x_minimal"], fb["graph_ms"], fb["x_minimal_graph"], fb["x_attention_graph"]) == (2.5, 6.0, 2.0, 6.0 / 3.5)
    assert got[("sessa/triton2", "fwd")]["graph_ms"] == "failed" and got[("sessa/triton2", "fwd")]["x_minimal_graph"] == "n/a"
    assert "graph_ms" not in got[("mamba2/torch", "fwd+bwd")]  # not in GRAPHED
    table = block_table(rows)
    assert "| fb_graph_ms | fb_graph_xmin | f_graph_ms | f_graph_xmin |" in table
    assert "| sessa/triton2 | 16 | 4 | 10.00 | 2.00 | 2.50 | 0.10 | 10.00 | 2.00 | 2.50 | 0.10 | 6.00 | 2.00 | failed | n/a |" in table
    # on a CPU nothing is graphed and the table keeps its columns
    monkeypatch.setattr(blocks, "run_graphed", lambda *a: pytest.fail("graphed on a CPU"))
    rows, _ = blocks.bench_blocks(SimpleNamespace(type="cpu"), None, 8, 2, 64, [16], {}, reps=1, log=lambda s: None)
    assert "graph" not in block_table(rows)


def test_a_block_that_cannot_run_is_recorded_and_the_rest_are_timed(monkeypatch):
    """A block whose eager step raises something other than OOM (say Triton cannot build a kernel at a new
    tile size: "out of resource") gets `failed` and the part goes on, so the references after it are still
    timed and every ratio exists; the block profile skips it the same way (it had ended the bench)."""
    from types import SimpleNamespace

    from sessa_bench.bench import block_profile, blocks
    from sessa_bench.bench.__main__ import block_table

    eager = {"sessa/triton2-r1024-t128d": None, "attention/sdpa": 5.0, "attention/minimal": 4.0}
    monkeypatch.setattr(blocks, "implementations", lambda *a, **k: {n: n for n in eager})

    def run_one(f, d, b, T, dt, dev, bw, reps):
        if eager[f] is None:
            raise RuntimeError("out of resource: shared memory, Required: 264192, Hardware limit: 232448")
        return {"ms": eager[f], "peak_gib": 0.1}
    monkeypatch.setattr(blocks, "run_one", run_one)
    monkeypatch.setattr(blocks, "run_graphed", lambda f, *a: {"ms": eager[f] / 2})
    logged = []
    rows, _ = blocks.bench_blocks(SimpleNamespace(type="cuda"), None, 8, 2, 64, [16], {}, reps=1, log=logged.append)
    got = {(r["impl"], r["mode"]): r for r in rows}
    bad = got[("sessa/triton2-r1024-t128d", "fwd+bwd")]
    assert (bad["ms"], bad["x_minimal"]) == ("failed", "n/a") and "graph_ms" not in bad
    assert got[("attention/sdpa", "fwd")]["x_minimal"] == 1.25 and got[("attention/sdpa", "fwd")]["graph_ms"] == 2.5
    assert any("t128d: failed: RuntimeError: out of resource" in line for line in logged)
    assert "| sessa/triton2-r1024-t128d | 16 | 4 | failed |" in block_table(rows)

    monkeypatch.setattr(block_profile, "implementations", lambda *a, **k: {n: n for n in eager})

    def block_step(f, *a, **k):
        if eager[f] is None:
            raise RuntimeError("out of resource: shared memory")
        return lambda: None
    monkeypatch.setattr(block_profile, "block_step", block_step)
    monkeypatch.setattr(block_profile, "profiled", lambda step, device, top: ([], "table"))
    monkeypatch.setattr(block_profile, "step_ms", lambda events, cuda: 1.0)
    monkeypatch.setattr(block_profile, "sync", lambda device: None)
    out = block_profile.profile_blocks(SimpleNamespace(type="cpu"), None, 8, 2, 64, {}, 16, list(eager),
                                       log=logged.append)
    assert list(out) == ["attention/sdpa", "attention/minimal"]
    assert any("block profile sessa/triton2-r1024-t128d: failed" in line for line in logged)


TINY = {"budget_name": "tiny", "vocab": 64, "seq_len": 16, "batch": 2}  # a harness-loop shape that is fast on CPU


def test_an_isolated_harness_loop_runs_in_a_child_process(monkeypatch):
    """On CUDA each harness-loop run is its own process, so that a CUDA error ends that run and not the bench
    (lease 16). On CPU with isolate=True: the child (where the parent's patches do not reach) trains the same
    model as the in-process run and reports its throughput."""
    import torch

    from sessa_bench.bench import harness_loop

    cpu = torch.device("cpu")
    with monkeypatch.context() as m:
        m.setattr(harness_loop, "run_loop", lambda *a: pytest.fail("the isolated run ran in the parent"))
        child = harness_loop.harness_throughput("transformer", TINY, "eager", cpu, 2, 0, isolate=True)
    here = harness_loop.harness_throughput("transformer", TINY, "eager", cpu, 2, 0, isolate=False)
    assert child["params"] == here["params"] and child["tokens_per_s"] > 0
    assert (child["steps"], child["timed_steps"], child["backends"]) == (here["steps"], here["timed_steps"],
                                                                        here["backends"])


@pytest.mark.parametrize("code, message", [
    ("import os, sys; sys.stderr.write('dying\\nframe #0: c10::f\\n'); os.abort()",  # C++ stack frames left out
     r"exited with -6 \(SIGABRT\): dying$"),
    ("import sys; print('hello'); sys.stderr.write('no mark\\n')", r"exited with 0 without a result: no mark$"),
], ids=["aborted", "no_result"])
def test_a_harness_child_that_dies_is_recorded_in_its_row(monkeypatch, code, message):
    """A child that aborts (as a C++ CUDA error does) or exits without its result line raises with its exit
    status and the end of its stderr; on a (fake) CUDA device the row records it, so the bench goes on."""
    import sys
    from types import SimpleNamespace

    import torch

    from sessa_bench.bench import harness_loop, training

    monkeypatch.setattr(harness_loop, "child_argv", lambda *a: [sys.executable, "-c", code])
    with pytest.raises(RuntimeError, match=message):
        harness_loop.harness_throughput("sessa", TINY, "cuda_graphs", torch.device("cpu"), 1, 0, isolate=True)
    row = training.harness_row(torch.device("cuda"), "sessa", TINY, SimpleNamespace(n_layers=1, d_model=8),
                               "cuda_graphs", 1, 0, None)
    assert row["tokens_per_s"] == "error" and re.search(message, row["error"]), row


def test_harness_loops_are_child_processes_on_cuda_only(monkeypatch):
    """isolate=None follows the device: a child on CUDA, in-process on CPU (where the CPU bench patches the
    training step); an explicit isolate wins either way. Nothing touches CUDA, so a fake device will do."""
    import json
    import sys

    import torch

    from sessa_bench.bench import harness_loop

    seen = []

    def argv(fam, shape, mode, device, steps, warmup):
        seen.append(("child", device.type))
        return [sys.executable, "-c", f"print({harness_loop.MARK + json.dumps({'params': 7})!r})"]

    def loop(fam, shape, mode, device, steps, warmup):
        seen.append(("in-process", device.type))
        return {"params": {"total": 7}, "throughput_tokens_per_s": 1.0, "mfu": None, "steps": 5, "backends": []}

    monkeypatch.setattr(harness_loop, "child_argv", argv)
    monkeypatch.setattr(harness_loop, "run_loop", loop)
    for device, isolate in (("cpu", None), ("cuda", None), ("cuda", False), ("cpu", True)):
        out = harness_loop.harness_throughput("sessa", TINY, "eager", torch.device(device), 1, 0, isolate)
        assert out["params"] == 7
    assert seen == [("in-process", "cpu"), ("child", "cuda"), ("in-process", "cuda"), ("child", "cpu")]


def test_the_loop_profile_runs_at_each_shape_of_the_preset(tmp_path, monkeypatch):
    """`profile.harness` may list shapes (the GPU preset: Table 1's for every family, `base` for the
    Transformer): one loop profile per shape, of the families its entry names. Profiling is stubbed."""
    from sessa_bench.bench import __main__ as bench

    preset = bench.load_preset("cpu")
    preset["profile"]["harness"] = [{"budget_name": "tiny", "seq_len": 64, "batch": 2},
                                    {"budget_name": "tiny", "seq_len": 32, "batch": 4, "families": ["sessa"]}]
    seen = []
    monkeypatch.setattr(bench, "load_preset", lambda name: preset)
    monkeypatch.setattr(bench, "profile_training", lambda device, families, log, **q: {})
    monkeypatch.setattr(bench, "harness_section",
                        lambda device, fams, shape, log: seen.append((fams, shape["seq_len"])) or "loop")
    bench.main(["--parts", "profile", "--families", "sessa", "transformer", "--out-dir", str(tmp_path)])
    assert seen == [(["sessa", "transformer"], 64), (["sessa"], 32)]


def test_a_child_error_names_where_it_surfaced():
    """A failed harness-loop child's row: the innermost Python frame of its traceback, then its last lines
    without C++ frames (lease 18's CUDA error showed only CUDA's advice, not where it was raised)."""
    from sessa_bench.bench.harness_loop import stderr_tail

    err = "\n".join(['Traceback (most recent call last):', '  File "/x/train.py", line 240, in run',
                     '    final.update(trainer.validate(lit))', '  File "/x/cuda_graphs.py", line 199, in _eval',
                     '    replay()', "RuntimeError: CUDA error: an illegal memory access was encountered",
                     "frame #0: c10::Error", "frame #1: more", "", "For debugging consider CUDA_LAUNCH_BLOCKING=1"])
    assert stderr_tail(err, n=2) == ('at File "/x/cuda_graphs.py", line 199, in _eval | RuntimeError: CUDA error: '
                                     'an illegal memory access was encountered | For debugging consider '
                                     'CUDA_LAUNCH_BLOCKING=1')
    assert stderr_tail("boom\n") == "boom"


def test_compiled_decode_rows_never_run_into_dynamo_s_recompile_limit(monkeypatch):
    """Every compiled decoder recompiles the one `decode_step`; Dynamo allows recompile_limit (8) of them per
    process, so lease 18's Mamba2 rows after Sessa's eight compiled ones failed. Here with a limit of 1 and
    Dynamo's eager backend (no code generation): two compiled variants of two families all time."""
    import functools

    import torch

    from sessa_bench.bench import decoding

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    with torch._dynamo.config.patch(recompile_limit=1):
        rows = decoding.bench_decoding(torch.device("cpu"), torch.float32, ("sessa", "mamba2"), "tiny", 64, [8],
                                       [1], steps=2, variants=({"read": "reduce", "compile": True},
                                                               {"read": "sdpa", "compile": True}), log=lambda s: None)
    assert len(rows) == 3 and all(isinstance(r["tokens_per_s"], float) for r in rows), rows


def test_decode_rows_carry_their_ratio_to_batch_one():
    """x_batch1 (issue 13's batch-16 goal) divides by the batch-1 row of the same family, read, compile and
    context only; a failed row or a missing batch-1 row gets none."""
    from sessa_bench.bench.decoding import with_batch_ratio

    def row(fam, read, comp, ctx, b, tps):
        return {"family": fam, "read": read, "compile": comp, "context": ctx, "batch": b, "tokens_per_s": tps}
    rows = [row("sessa", "sdpa", False, 64, 1, 100.0), row("sessa", "sdpa", False, 64, 16, 850.0),
            row("sessa", "sdpa", True, 64, 1, 200.0), row("sessa", "sdpa", True, 64, 16, 900.0),
            row("sessa", "matmul", False, 64, 1, "error"), row("sessa", "matmul", False, 64, 16, 700.0),
            row("sessa", "sdpa", False, 128, 16, 500.0), row("mamba2", "-", False, 64, 16, 40.0)]
    got = [r.get("x_batch1") for r in with_batch_ratio(rows)]
    assert got == [1.0, 8.5, 1.0, 4.5, None, None, None, None]
    assert all("x_batch1" not in r for r in rows)  # the rows themselves are not changed
    # another cache multiple is another variant: its batch-16 row has no batch-1 row of its own here
    other = {**row("sessa", "sdpa", False, 64, 16, 900.0), "cache_multiple": 1}
    assert "x_batch1" not in with_batch_ratio(rows + [other])[-1]


def test_graph_break_reasons_name_each_break():
    """The train part logs each compiled row's graph breaks by reason (what to fix), from Dynamo's counters."""
    import torch

    from sessa_bench.bench.training import graph_break_reasons, graph_breaks

    torch._dynamo.reset()
    from torch._dynamo.utils import counters
    counters.clear()

    def f(x):
        x = x + 1
        torch._dynamo.graph_break()
        return x * 2

    torch.compile(f, backend="eager")(torch.ones(3))
    reasons = graph_break_reasons()
    assert graph_breaks() == sum(reasons.values()) >= 1
    assert any("graph_break" in r for r in reasons), reasons


def test_decode_variants_time_only_the_named_variants(tmp_path, capsys):
    """`--parts decode --decode-variants READ:eager|compiled[:M]` (a short lease) times those variants only, in
    that order, instead of the preset's, and says so in the rerun line; a malformed one is one clear error
    naming the option."""
    import pytest

    from sessa_bench.models.generate import CACHE_MULTIPLE

    main(["--preset", "cpu", "--parts", "decode", "--families", "transformer", "--decode-variants", "reduce:eager:8",
          "sdpa:eager", "--out-dir", str(tmp_path)])
    rows = [r for r in csv.DictReader((tmp_path / "cpu.csv").open()) if r["part"] == "decode"]
    assert rows and [(r["read"], r["compile"], r["cache_multiple"]) for r in rows][::len(rows) // 2] == \
        [("reduce", "False", "8"), ("sdpa", "False", str(CACHE_MULTIPLE))]
    assert "--decode-variants reduce:eager:8 sdpa:eager`" in (tmp_path / "cpu.md").read_text()
    for bad, says in (("sdpa", "expected READ:eager|compiled"), ("fast:eager", "decode read='fast'"),
                      ("sdpa:compiled:x", "M (cache_multiple) must be a positive integer")):
        with pytest.raises(SystemExit):
            main(["--preset", "cpu", "--parts", "decode", "--decode-variants", bad, "--out-dir", str(tmp_path)])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "--decode-variants" in err and says in err
