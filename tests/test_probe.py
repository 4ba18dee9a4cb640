"""Memory-tail probe: Jacobian norms against brute-force Jacobians and closed forms (float64 on CPU).

Closed forms: uniform attention (zero q/k projections) gives d f_t / d a_s = W / (t + 1); Sessa's feedback
with uniform routing (alpha[t, j] = 1/t) and constant gamma has the impulse response of
s_t = f_t + (gamma / t) sum_{j<t} s_j, with a power-law tail ~ L^-(1 - gamma) from a fixed source; Mamba2 with
a constant dt decays by exp(A dt) per step."""

import json
import math
from pathlib import Path

import pytest
import torch

from sessa_bench.models import kernels
from sessa_bench.models.attention import CausalAttention
from sessa_bench.models.backbone import Backbone
from sessa_bench.models.config import ModelConfig
from sessa_bench.models.mamba2 import Mamba2Mixer
from sessa_bench.models.sessa import SessaMixer
from sessa_bench.probe import (add_fits, hidden_states, influence, lag_grid, probe_model, squared_norms,
                               squared_norms_at, write_probe)
from sessa_bench.tail_fit import fit_tail

DT = torch.float64


def uniform_feedback_response(T: int, g: float) -> torch.Tensor:
    """G[t, s] = d s_t / d f_s for s_t = f_t + (g / t) sum_{j<t} s_j, by running the recursion on every unit
    impulse at once (columns are sources)."""
    G = torch.zeros(T, T, dtype=DT)
    past = torch.zeros(T, dtype=DT)  # sum_{j<t} G[j, :]
    for t in range(T):
        G[t] = (g / t) * past if t > 0 else 0.0
        G[t, t] += 1.0
        past += G[t]
    return G


def uniform_average(T: int) -> torch.Tensor:
    """U[t, s] = 1 / (t + 1) for s <= t: causal attention with equal scores."""
    t = torch.arange(T, dtype=DT)
    return torch.where(t[None, :] <= t[:, None], 1.0 / (t[:, None] + 1), 0.0)


def assert_curve(result, curve, want):
    got = result["curves"][curve]["out_0"]["influence"]
    torch.testing.assert_close(torch.tensor(got, dtype=DT), torch.tensor(want, dtype=DT), rtol=1e-10, atol=0)


def curves_from(C: torch.Tensor, w2: float, lags, source=0):
    """by_position and from_source influence for a Jacobian J_{t,s} = C[t, s] * W with ||W||_F^2 = w2."""
    T = C.shape[0]
    by_pos = [math.sqrt(w2 * sum(C[t, t - L].item() ** 2 for t in range(L, T)) / (T - L)) for L in lags]
    from_src = [math.sqrt(w2) * abs(C[source + L, source].item()) for L in lags]
    return by_pos, from_src


def rand_inputs(n, T, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(T, D, generator=g, dtype=DT) for _ in range(n)]


def test_lag_grid():
    assert lag_grid(16) == [1, 2, 3, 4, 6, 8, 11, 16]
    assert lag_grid(1) == [1]
    assert lag_grid(600)[-1] == 512 and lag_grid(600, per_octave=1) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    with pytest.raises(ValueError, match="max_lag"):
        lag_grid(0)


def test_exact_norms_match_the_full_jacobian():
    """Every squared norm ||d h_t / d x_s||^2 (all layers) equals the brute-force Jacobian's."""
    torch.manual_seed(0)
    for mixer, kw in (("sessa", {"backend": "math", "impl": "dense"}), ("mamba2", {"backend": "torch",
                      "d_state": 4, "headdim": 4, "chunk_size": 4})):
        model = Backbone(ModelConfig(vocab_size=11, d_model=8, n_layers=2, n_heads=2, mixer=mixer,
                                     mixer_kwargs=kw)).to(DT)
        x = model.embed(torch.randint(0, 11, (1, 9)))[0].detach()
        jac = torch.autograd.functional.jacobian(lambda z: torch.stack(hidden_states(model, z[None], [0])), x)
        want = jac.pow(2).sum((3, 5))[:, 0]  # (outputs, t, s) from (outputs, 1, t, D, s, D)
        for t in (0, 4, 8):
            est, var = squared_norms(lambda z: hidden_states(model, z, [0]), x, t, 8, "exact", 0,
                                     torch.Generator(), max_rows=3)  # 3 chunks of rows
            torch.testing.assert_close(est, want[:, t, : t + 1], rtol=1e-10, atol=1e-14)
            assert (var == 0).all() and (want[:, t, t + 1:] == 0).all()  # causal


@pytest.mark.parametrize("method", ["exact", "hutchinson"])
def test_batched_positions_equal_one_position_at_a_time(method):
    """Rows of several output positions share a batch (padded to multiples of 64, split by max_tokens), as on
    a GPU: the same norms, and the same probe vectors, as one position at a time on its exact prefix."""
    torch.manual_seed(0)
    model = Backbone(ModelConfig(vocab_size=11, d_model=8, n_layers=2, n_heads=2, mixer="attention",
                                 mixer_kwargs={"backend": "math"})).to(DT)
    x = model.embed(torch.randint(0, 11, (1, 150)))[0].detach()
    fn = lambda z: hidden_states(model, z, [0])  # noqa: E731
    ts = [3, 40, 63, 64, 100, 149]
    got = squared_norms_at(fn, x, ts, 8, method, 4, torch.Generator().manual_seed(1), max_rows=5,
                           max_tokens=700, pad_to=64)
    gen = torch.Generator().manual_seed(1)
    for t in ts:
        est, var = squared_norms(fn, x, t, 8, method, 4, gen)
        torch.testing.assert_close(got[t][0], est, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(got[t][1], var, rtol=1e-8, atol=1e-14)


def test_time_budget_drops_the_example_it_cuts_and_stops(monkeypatch):
    """A fake clock that ticks once per forward: example 1 (6 positions, one batch each) fits the budget,
    example 2 is cut after one batch and left out, example 3 never starts; a budget that not even the first
    example fits is an error, not a silent empty result."""
    import sessa_bench.probe as probe_mod

    clock = [0.0]
    monkeypatch.setattr(probe_mod, "time", type("Clock", (), {"time": staticmethod(lambda: clock[0])}))
    m = CausalAttention(4, 2, backend="math").to(DT)

    def fn(z):
        clock[0] += 1
        return [m(z)]

    xs = [rand_inputs(1, 6, 4)[0] for _ in range(3)]
    lines = []
    r = influence(fn, xs, [1, 2], n_positions=None, method="exact", max_seconds=6.5, progress=lines.append)
    assert r["n_examples"] == 1 and clock[0] == 1 + 6 + 1
    assert lines == ["probe: example 1/3 (6 tokens, 6 output positions) after 6.0 s"]
    full = influence(fn, xs[:1], [1, 2], n_positions=None, method="exact")
    assert r["curves"] == full["curves"]  # the cut example left no trace
    with pytest.raises(probe_mod.ProbeTimeout, match="the first example"):
        influence(fn, xs, [1, 2], n_positions=None, method="exact", max_seconds=3)


def test_hidden_states_is_the_backbone_forward():
    model = Backbone(ModelConfig(vocab_size=11, d_model=8, n_layers=3, n_heads=2, mixer="attention",
                                 mixer_kwargs={"backend": "math"})).to(DT)
    idx = torch.randint(0, 11, (2, 7))
    hs = hidden_states(model, model.embed(idx), [1])
    assert len(hs) == 2
    torch.testing.assert_close(model.head(hs[-1]), model(idx), rtol=0, atol=0)


def test_uniform_attention_dilutes_as_one_over_t():
    T, D = 64, 4
    m = CausalAttention(D, 2, backend="math").to(DT)
    with torch.no_grad():
        for p in (m.q_proj.weight, m.q_proj.bias, m.k_proj.weight, m.k_proj.bias):
            p.zero_()
    w2 = (m.out_proj.weight @ m.v_proj.weight).pow(2).sum().item()
    fn = lambda a: [m(a)]  # noqa: E731
    x = rand_inputs(1, T, D)[0]
    # one output position: every past token has influence ||W|| / (t + 1), whatever its lag
    est, _ = squared_norms(fn, x, 40, D, "exact", 0, torch.Generator())
    torch.testing.assert_close(est[0], torch.full((41,), w2 / 41 ** 2, dtype=DT), rtol=1e-10, atol=0)
    lags = lag_grid(T - 1)
    r = add_fits(influence(fn, [x], lags, n_positions=None, method="exact"), min_lag=8)
    by_pos, from_src = curves_from(uniform_average(T), w2, lags)
    assert_curve(r, "by_position", by_pos)
    assert_curve(r, "from_source", from_src)
    fit = r["curves"]["from_source"]["out_0"]["fit"]  # ||W|| / (L + 1): exponent -> 1
    assert fit["better"] == "power" and abs(fit["power"]["exponent"] - 1) < 0.08


def _uniform_sessa(D, gamma, heads=2):
    m = SessaMixer(D, heads, backend="math", impl="dense").to(DT)
    with torch.no_grad():  # zero feedback q_b/k_b: equal logits, alpha[t, j] = 1/t; zero context: gamma const
        for p in (m.proj_fb.weight, m.proj_fb.bias, m.gamma_ctx.weight):
            p.zero_()
        m.gamma_bias.fill_(math.atanh(gamma / m.gamma_max))
    return m


def test_uniform_sessa_feedback_matches_the_impulse_response():
    """Influence of f on s through the mixer's solve (uniform routing, constant gamma) is D^1/2 |G[t, s]|;
    from a fixed source its tail is a power law with exponent 1 - gamma."""
    D, g = 2, 0.6
    m = _uniform_sessa(D, g, heads=1)

    def solve(f):  # the mixer's own routing and gain: q_b = k_b = 0 and gamma constant for any input
        q_b, k_b = m.feedback_qk(torch.zeros_like(f))
        return [kernels.feedback(f, q_b, k_b, m.gamma(torch.zeros_like(f)), impl="dense")]

    T = 96
    lags = lag_grid(T - 1)
    r = influence(solve, rand_inputs(1, T, D), lags, n_positions=None, method="exact")
    by_pos, from_src = curves_from(uniform_feedback_response(T, g), D, lags)
    assert_curve(r, "by_position", by_pos)
    assert_curve(r, "from_source", from_src)
    # The tail from source 0 over lags 16..1023 (one by_position position: the from_source anchors dominate)
    T = 1024
    r = add_fits(influence(solve, rand_inputs(1, T, D), lag_grid(T - 1), n_positions=1, method="exact"),
                 min_lag=16)
    fit = r["curves"]["from_source"]["out_0"]["fit"]
    assert fit["better"] == "power" and abs(fit["power"]["exponent"] - (1 - g)) < 0.01, fit["power"]


def test_uniform_sessa_mixer_end_to_end():
    """The whole mixer a -> s with zero q/k too: J_{t,s} = (G U)[t, s] W_out W_v."""
    T, D, g = 48, 4, 0.8
    m = _uniform_sessa(D, g)
    with torch.no_grad():
        for p in (m.q_proj.weight, m.q_proj.bias, m.k_proj.weight, m.k_proj.bias):
            p.zero_()
    w2 = (m.out_proj.weight @ m.v_proj.weight).pow(2).sum().item()
    lags = lag_grid(T - 1)
    r = influence(lambda a: [m(a)], rand_inputs(2, T, D), lags, n_positions=None, method="exact")
    by_pos, from_src = curves_from(uniform_feedback_response(T, g) @ uniform_average(T), w2, lags)
    assert_curve(r, "by_position", by_pos)
    assert_curve(r, "from_source", from_src)


def test_mamba2_fixed_decay_is_exponential_at_rate_exp_A_dt():
    D, dt, a = 8, 0.1, 0.5  # one SSM head (expand * D / headdim = 1), decay exp(-a dt) = 0.951 per step
    torch.manual_seed(1)
    m = Mamba2Mixer(D, d_state=4, d_conv=4, expand=2, headdim=16, chunk_size=16, backend="torch").to(DT)
    with torch.no_grad():
        m.in_proj.weight[-m.nheads:].zero_()          # the dt rows: dt no longer depends on the input
        m.dt_bias.fill_(math.log(math.expm1(dt)))    # softplus(dt_bias) = dt
        m.A_log.fill_(math.log(a))                   # A = -a
    decay = math.exp(-a * dt)
    T = 96
    r = add_fits(influence(lambda u: [m(u)], rand_inputs(3, T, D), lag_grid(T - 1, per_octave=4),
                           n_positions=None, method="exact"), min_lag=4, max_lag=64)
    fit = r["curves"]["by_position"]["out_0"]["fit"]
    assert fit["better"] == "exponential", fit
    assert abs(fit["exponential"]["decay_per_lag"] - decay) < 0.003, (fit["exponential"], decay)
    assert fit["exponential"]["r2"] > 0.99 > fit["power"]["r2"]


def test_hutchinson_agrees_with_exact_within_its_standard_error():
    torch.manual_seed(0)
    model = Backbone(ModelConfig(vocab_size=11, d_model=16, n_layers=2, n_heads=2, mixer="sessa",
                                 mixer_kwargs={"backend": "math", "impl": "dense"})).to(DT)
    batches = [{"input_ids": torch.randint(0, 11, (2, 40)), "lengths": torch.tensor([40, 33])}]
    kw = dict(lags=[1, 2, 4, 8, 16, 32], n_examples=2, n_positions=3, layers=[0], seed=3)
    exact = probe_model(model, batches, method="exact", **kw)
    est = probe_model(model, batches, method="hutchinson", probes=48, max_rows=20, **kw)
    assert exact["method"] == "exact" and est["method"] == "hutchinson" and est["probes"] == 48
    z = []
    for c in ("by_position", "from_source"):
        for name in ("layer_0", "final"):
            e, h = exact["curves"][c][name], est["curves"][c][name]
            assert e["count"] == h["count"]  # the same positions in both
            for ie, ih, se in zip(e["influence"], h["influence"], h["se"]):
                if ie is None:
                    continue
                assert 0 < se < 0.25 * ie  # the comparison is informative
                z.append((ih - ie) / se)
    assert max(abs(v) for v in z) < 4, z
    assert 0.25 < math.sqrt(sum(v * v for v in z) / len(z)) < 2.5  # the standard error has the right scale
    assert abs(sum(z) / len(z)) < 4 / math.sqrt(len(z))  # no bias beyond the noise


def test_probe_model_result_and_file(tmp_path):
    model = Backbone(ModelConfig(vocab_size=11, d_model=8, n_layers=2, n_heads=2, mixer="attention",
                                 mixer_kwargs={"backend": "math"}, head="cls", n_classes=3))
    model.train()
    batches = [{"input_ids": torch.randint(0, 11, (3, 30)), "lengths": torch.tensor([30, 25, 20])}]
    with pytest.raises(ValueError, match="method"):
        probe_model(model, batches, method="jacobian")
    with pytest.raises(ValueError, match="layers"):
        probe_model(model, batches, layers=[2])
    with pytest.raises(ValueError, match="lags"):
        probe_model(model, batches, lags=[0, 4])
    with torch.no_grad():  # as in a validation hook: the probe turns gradients back on
        r = probe_model(model, batches, n_examples=2, layers=[], probes=4, min_lag=2)
    assert model.training and r["method"] == "hutchinson" and r["lengths"] == [30, 25]
    assert r["lags"] == lag_grid(29) and r["outputs"] == ["final"]
    fit = r["curves"]["by_position"]["final"]["fit"]
    assert fit["better"] in ("power", "exponential") and fit["n_points"] >= 3
    path = write_probe(tmp_path, r)
    assert json.loads(path.read_text()) == json.loads(json.dumps(r))
    counts = probe_model(model, batches, lags=[1, 27], n_examples=2, layers=[], probes=4)["curves"]
    assert counts["from_source"]["final"]["count"] == [2, 1]  # lag 27 fits only the length-30 example
    assert counts["by_position"]["final"]["count"][0] >= counts["by_position"]["final"]["count"][1]


def test_fit_tail_recovers_both_laws():
    lags = lag_grid(512)
    p = fit_tail(lags, [3.0 * L ** -0.4 for L in lags], min_lag=4)
    assert p["better"] == "power" and abs(p["power"]["exponent"] - 0.4) < 1e-12 and p["power"]["r2"] > 1 - 1e-12
    e = fit_tail(lags, [2.0 * math.exp(-L / 50) for L in lags], min_lag=4)
    assert e["better"] == "exponential" and abs(e["exponential"]["tau"] - 50) < 1e-9
    assert fit_tail([1, 2], [1.0, 0.5])["better"] is None  # too few points: no fit
    assert fit_tail(lags, [1.0] * len(lags))["exponential"]["tau"] is None  # flat: no decay
    with pytest.raises(ValueError, match="min_lag"):
        fit_tail(lags, lags, min_lag=0)


def test_cli_init_probe_and_report(tmp_path, monkeypatch, capsys):
    """`sessa-bench probe DIR --init` on a run folder without a checkpoint, then the report from probe.json."""
    from omegaconf import OmegaConf

    from sessa_bench.cli import main as cli
    from sessa_bench.compose import compose_train
    from sessa_bench.memory_tail import build_report
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))
    cfg = compose_train(["model=transformer", "budget=tiny", "budget.n_layers=2", "budget.d_model=16",
                         "budget.n_heads=2", "task.min_len=31", "task.max_len=41", "task.n_train=4",
                         "task.n_val=3", "task.n_test=3"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True)))
    cli(["probe", str(run), "--init", "--n-examples", "2", "--probes", "2", "--layers", "0"])
    r = json.loads((run / "probe_init.json").read_text())
    assert r["run"]["weights"] == "init" and r["run"]["family"] == "transformer"
    assert r["outputs"] == ["layer_0", "final"] and r["model"]["n_layers"] == 2 and r["n_examples"] == 2
    for args, message in (([str(run)], "no checkpoint"),  # trained weights need the checkpoint
                          ([str(run), "--init", "--layers", "first"], "--layers"),
                          ([str(run), "--init", "--device", "gpu"], "--device")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:  # a user error: one line on stderr, exit code 2
            cli(["probe", *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and message in err[0], err
    text = build_report([run / "probe_init.json"], tmp_path / "memory_tail.md")
    lo, hi = min(r["lengths"]), max(r["lengths"])  # the probed examples' lengths: the report's tokens column
    assert f"| transformer | symbol_soup | tiny | {lo if lo == hi else f'{lo}-{hi}'} | init | 0 | 2 x 16 |" in text
    # `make memory-tail` passes a relative --runs: a folder with neither probe.json nor a checkpoint is listed
    import sessa_bench.memory_tail as mt
    monkeypatch.setattr(mt, "ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert mt.probe_trained(["."], force=False) == ([], ["run"])
    # an extension whose probe did not finish: the probe of its shorter training stands in (it says its steps)
    (run / "probe.prev.json").write_text("{}")
    assert mt.probe_trained(["."], force=False) == ([Path("run/probe.prev.json")], [])
    assert (tmp_path / "memory_tail_by_position.png").stat().st_size > 1000


def test_probe_true_writes_probe_json_at_the_end_of_a_run(tmp_path, monkeypatch):
    """probe=true: the trained model is probed where it trained (its checkpoint never leaves a GPU machine)."""
    import json

    from sessa_bench.compose import compose_train
    from sessa_bench.run_folder import RunFolder
    from sessa_bench.train import run

    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))
    cfg = compose_train([f"results_dir={tmp_path}/runs", "logger=none", "trainer.enable_progress_bar=false",
                         "trainer.max_steps=2", "trainer.val_check_interval=2", "task.min_len=41", "task.max_len=61",
                         "task.n_train=16", "task.n_val=4", "task.n_test=4", "data.batch_size=2",
                         "model=transformer", "probe=true"])
    summary = run(cfg)
    result = json.loads((RunFolder.of(cfg).path / "probe.json").read_text())
    assert result["run"]["weights"] == "trained" and result["run"]["steps"] == summary["steps"] == 2
    assert result["git_commit"] == summary["git_commit"] and result["curves"]


def test_a_probe_that_fails_leaves_the_run_finished(tmp_path, monkeypatch, capsys):
    """The probe runs after summary.json: a timeout (or any error) costs the probe, never the run."""
    import sessa_bench.probe as probe_mod
    from sessa_bench.compose import compose_train
    from sessa_bench.run_folder import RunFolder
    from sessa_bench.train import run

    def too_slow(*a, **kw):
        raise probe_mod.ProbeTimeout("probe: the first example (50 tokens) did not finish within max_seconds=120")

    monkeypatch.setattr(probe_mod, "probe_model", too_slow)
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))
    cfg = compose_train([f"results_dir={tmp_path}/runs", "logger=none", "trainer.enable_progress_bar=false",
                         "trainer.max_steps=1", "trainer.val_check_interval=1", "task.min_len=41", "task.max_len=61",
                         "task.n_train=8", "task.n_val=2", "task.n_test=2", "data.batch_size=2",
                         "model=transformer", "budget=tiny", "probe=true"])
    run(cfg)
    folder = RunFolder.of(cfg)
    assert folder.read_summary()["steps"] == 1 and not (folder.path / "probe.json").exists()
    assert "probe: no probe.json for" in capsys.readouterr().out


def test_report_says_how_long_a_trained_model_trained():
    from sessa_bench.memory_tail import weights
    run = {"weights": "trained", "steps": 1000, "run_name": "transformer-symbol_soup-small-lr3.3e-05-s0"}
    assert weights(run) == "trained, 1000 steps (last model), lr 3.3e-05"  # a probe naming no checkpoint
    assert weights({**run, "run_name": "mine"}) == "trained, 1000 steps (last model)"
    assert weights({**run, "steps": 16000, "checkpoint": "best", "checkpoint_step": 8000}) == \
        "trained, 16000 steps (best, step 8000), lr 3.3e-05"
    assert weights({"weights": "init", "steps": None, "run_name": "x-lr0.001-s0"}) == "init"


def test_a_run_that_keeps_its_best_weights_is_loaded_and_probed_with_them(tmp_path, monkeypatch):
    """The paper tables report each run's best-validation checkpoint: its probe (probe=true at the end of the
    run, or `sessa-bench probe` and scripts/probe_chosen.py later, through evaluate.load_run) measures those
    weights and says so, and a probe of the last weights does not pass for it (probe_current)."""
    from sessa_bench.compose import compose_train
    from sessa_bench.evaluate import load_run
    from sessa_bench.probe import probe_run
    from sessa_bench.run_folder import RunFolder
    from sessa_bench.train import run

    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))
    best = ["trainer.enable_checkpointing=true", "+callbacks.best._target_=lightning.pytorch.callbacks.ModelCheckpoint",
            "+callbacks.best.monitor=val/acc", "+callbacks.best.mode=max", "+callbacks.best.filename=best",
            "+callbacks.best.save_top_k=1", "+callbacks.best.enable_version_counter=false"]
    cfg = compose_train([f"results_dir={tmp_path}/runs", "logger=none", "trainer.enable_progress_bar=false",
                         "trainer.max_steps=3", "trainer.val_check_interval=1", "task.min_len=41", "task.max_len=61",
                         "task.n_train=16", "task.n_val=4", "task.n_test=4", "data.batch_size=2", "budget=tiny",
                         "model=transformer", "probe=true", *best])
    summary = run(cfg)
    folder = RunFolder.of(cfg)
    assert summary["test_from"] == "best" and folder.best_checkpoint.exists()
    probed = json.loads(folder.probe.read_text())["run"]
    assert (probed["checkpoint"], probed["checkpoint_step"], probed["steps"]) == ("best", summary["best_step"], 3)
    assert folder.probe_current()
    # last.ckpt made unlike best.ckpt: the run's model is still the best one
    last = torch.load(folder.checkpoint, map_location="cpu", weights_only=True)
    last["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in last["state_dict"].items()}
    torch.save(last, folder.checkpoint)
    want = torch.load(folder.best_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    got = load_run(folder.path)[2].state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    _, again = probe_run(folder.path, n_examples=1, layers=[], out=tmp_path / "again.json")
    assert again["run"]["checkpoint"] == "best" and again["run"]["checkpoint_step"] == summary["best_step"]
    # a probe that names no checkpoint measured the last weights (probe_chosen.py before 2026-11-30)
    folder.probe.write_text(json.dumps({"run": {"steps": 3}}))
    assert not folder.probe_current()
