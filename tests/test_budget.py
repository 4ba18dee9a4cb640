"""The budget solver keeps every family within tolerance of every preset, and reports costs."""

from functools import lru_cache

import pytest

from sessa_bench.budget import (FAMILIES, Budget, count_params, describe, load_budget, load_family,
                                main, meta_model, solve)


@lru_cache(maxsize=None)
def solved(family: str, preset: str, vocab: int):
    """The solver's model config, once per (family, preset, vocab) in this module (it is deterministic)."""
    return solve(load_family(family), load_budget(preset), vocab)


@pytest.mark.parametrize("vocab", [32, 4096])
@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
def test_every_family_within_tolerance(preset, vocab):
    budget = load_budget(preset)
    for fam in FAMILIES + ("sessa_nofb",):
        cfg = solved(fam, preset, vocab)
        total, _ = count_params(meta_model(cfg))
        assert abs(total - budget.target_params) <= 0.02 * budget.target_params, (fam, total)
        assert cfg.d_model % cfg.n_heads == 0 and (cfg.d_model // cfg.n_heads) % 2 == 0


def test_sessa_layer_parameter_formula():
    # A Sessa layer with H > 1 and no GQA has 9 D^2 + 11 D + 1 parameters.
    budget = load_budget("tiny")
    fam = load_family("sessa")
    from sessa_bench.budget import model_config
    one = count_params(meta_model(model_config(fam, budget, 32, 64, 1)))[0]
    two = count_params(meta_model(model_config(fam, budget, 32, 64, 2)))[0]
    assert two - one == 9 * 64 ** 2 + 11 * 64 + 1


def test_describe_costs_order():
    budget = load_budget("small")
    rows = {f: describe(solved(f, "small", 4096), 2048, budget.target_params) for f in FAMILIES}
    # Mamba2's decode state does not grow with context; attention's and Sessa's do, Sessa's more.
    assert rows["mamba2"]["state_per_token"] == 0 and rows["mamba2"]["state_fixed"] > 0
    assert rows["sessa"]["state_per_token"] > rows["transformer"]["state_per_token"] > 0
    for r in rows.values():
        assert r["train_flops_per_token"] > 6 * r["params_non_embedding"]


def test_unknown_names_and_bad_budget():
    with pytest.raises(ValueError, match="budget='huge'"):
        load_budget("huge")
    with pytest.raises(ValueError, match="model='gpt5'"):
        load_family("gpt5")
    with pytest.raises(ValueError, match="tolerance"):
        Budget(name="x", target_params=10, d_model=8, n_heads=2, tolerance=2.0)


def test_cli_prints_table(capsys):
    rows = main(["--budget", "tiny", "--vocab", "64"])
    out = capsys.readouterr().out
    assert len(rows) == 3 and "| sessa |" in out and "| mamba2 |" in out


def test_a_setting_is_searched_once_per_process_and_each_setting_apart(monkeypatch):
    """solve memoises its width/depth search (a sweep or the test suite starts many runs in one process); a
    different budget, family or vocabulary is searched again, and each call gets a config of its own."""
    import sessa_bench.budget as budget_mod
    monkeypatch.setattr(budget_mod, "_FITS", {})
    fam, tiny = load_family("transformer"), load_budget("tiny")
    first = solve(fam, tiny, 32)
    searched = []
    real = budget_mod._search
    monkeypatch.setattr(budget_mod, "_search", lambda *a: searched.append(a[1].target_params) or real(*a))
    again = solve(fam, tiny, 32)
    assert again == first and again is not first and searched == []
    bigger = Budget(**{**tiny.__dict__, "target_params": 2 * tiny.target_params})
    assert solve(fam, bigger, 32).n_layers > first.n_layers and searched == [bigger.target_params]
    solve(load_family("mamba2"), tiny, 32)
    solve(fam, tiny, 4096)
    assert len(searched) == 3
