"""Budget solver: choose depth (then width) per family so every family lands within a tolerance of one
target parameter count, and report what each model costs.

A budget (conf/budget/*.yaml) fixes the target, a reference width and the head count; a family
(conf/model/*.yaml) fixes the mixer and block. For each candidate width (multiples of 2 * n_heads, so the
head dim stays even, nearest the reference first) the solver measures the parameters of a 1- and a
2-layer model on the meta device (exact for any mixer, including user-added ones), derives the depth that
best hits the target, and keeps the width nearest the reference whose deviation is under 3/4 of the
tolerance.

    python -m sessa_bench.budget --budget small --vocab 4096 --seq-len 2048
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field

import torch
from omegaconf import OmegaConf

from sessa_bench.compose import available, compose_train
from sessa_bench.flops import train_flops_per_token
from sessa_bench.models.backbone import Backbone
from sessa_bench.models.block import BLOCKS
from sessa_bench.models.config import ModelConfig
from sessa_bench.models.mixer import WidthError
from sessa_bench.models.registry import mixer_class
from sessa_bench.report.markdown import md_table

FAMILIES = ("sessa", "transformer", "mamba2")


@dataclass
class Budget:
    name: str
    target_params: int
    d_model: int
    n_heads: int
    tolerance: float = 0.02
    n_layers: int | None = None          # given: no solving, d_model x n_layers as stated
    mixer_overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.target_params <= 0:
            raise ValueError(f"budget.target_params must be positive, got {self.target_params}")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"budget.tolerance must lie in (0, 1), got {self.tolerance}")


def _load(group: str, name: str) -> dict:
    """One group's config as Hydra composes it for a run (schema defaults included)."""
    if name not in available(group):
        raise ValueError(f"{group}={name!r} is unknown; available: {available(group)}")
    return OmegaConf.to_container(compose_train([f"{group}={name}"])[group], resolve=True)


def load_budget(name: str) -> Budget:
    return Budget(**_load("budget", name))


def load_family(name: str) -> dict:
    return _load("model", name)


def model_config(family: dict, budget: Budget, vocab_size: int, d_model: int, n_layers: int,
                 head: str = "lm", n_classes: int = 0) -> ModelConfig:
    kwargs = {**family.get("mixer_kwargs", {}), **budget.mixer_overrides.get(family["mixer"], {})}
    return ModelConfig(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=budget.n_heads,
                       mixer=family["mixer"], mixer_kwargs=kwargs, block=family.get("block", "gated"),
                       mlp_ratio=family.get("mlp_ratio", 4),
                       tie_embeddings=family.get("tie_embeddings", ModelConfig.tie_embeddings),
                       embed_std=family.get("embed_std", ModelConfig.embed_std),
                       head=head, n_classes=n_classes)


def meta_model(cfg: ModelConfig) -> Backbone:
    with torch.device("meta"):
        return Backbone(cfg)


def count_params(model: Backbone) -> tuple[int, int]:
    """(total, embedding) parameters; a tied LM head counts once, an untied one as embedding."""
    total = sum(p.numel() for p in model.parameters())
    emb = model.embed.weight.numel()
    if model.cfg.head == "lm" and not model.cfg.tie_embeddings:
        emb += model.head.weight.numel()
    return total, emb


def _params(family: dict, budget: Budget, vocab_size: int, d: int, n: int, head: str, n_classes: int) -> int:
    """Parameters of one candidate; a config error (not a width the mixer refuses) names its field."""
    try:
        return count_params(meta_model(model_config(family, budget, vocab_size, d, n, head, n_classes)))[0]
    except WidthError:
        raise
    except (ValueError, TypeError) as e:  # e.g. gamma_max=1.0, impl=foo, an unknown keyword
        raise ValueError(f"model.mixer_kwargs ({family.get('family', family['mixer'])}): {e}") from None


def solve(family: dict, budget: Budget, vocab_size: int, head: str = "lm", n_classes: int = 0) -> ModelConfig:
    # config errors first, each with its own field, so they are never mistaken for a width to skip
    mixer = mixer_class(family["mixer"])
    if family.get("block", "gated") not in BLOCKS:
        raise ValueError(f"model.block={family['block']!r} is not one of {list(BLOCKS)}")
    if budget.n_layers:
        _params(family, budget, vocab_size, budget.d_model, budget.n_layers, head, n_classes)
        return model_config(family, budget, vocab_size, budget.d_model, budget.n_layers, head, n_classes)
    key = (json.dumps(family, sort_keys=True, default=str), json.dumps(asdict(budget), sort_keys=True, default=str),
           vocab_size, head, n_classes, mixer)
    if key not in _FITS:
        _FITS[key] = _search(family, budget, vocab_size, head, n_classes)
    d, n = _FITS[key]
    return model_config(family, budget, vocab_size, d, n, head, n_classes)


# (family, budget, vocab, head, classes, mixer class) -> (width, depth). The search builds ~100 meta models
# (about 1 s); a process that starts many runs (a sweep, the tables, the tests) searches each setting once.
_FITS: dict[tuple, tuple[int, int]] = {}


def _search(family: dict, budget: Budget, vocab_size: int, head: str, n_classes: int) -> tuple[int, int]:
    step = 2 * budget.n_heads
    fits = []  # (deviation, width, depth) of the best depth at each allowed width
    for d in range(step, 3 * budget.d_model + 1, step):
        try:
            p1 = _params(family, budget, vocab_size, d, 1, head, n_classes)
            p2 = _params(family, budget, vocab_size, d, 2, head, n_classes)
        except WidthError:
            continue  # only a width this mixer refuses (e.g. Mamba2 head dim) is retried
        per_layer, fixed = p2 - p1, 2 * p1 - p2
        n = max(1, round((budget.target_params - fixed) / per_layer))
        fits.append((abs(fixed + n * per_layer - budget.target_params) / budget.target_params, d, n))
    if not fits:
        raise ValueError(f"no width allows family {family.get('family', family['mixer'])!r} with "
                         f"n_heads={budget.n_heads}")
    # The width nearest the reference whose best depth lands within 3/4 of the tolerance (a margin for
    # mixers whose count is not exactly linear in depth); else the closest fit overall.
    ok = [f for f in fits if f[0] <= 0.75 * budget.tolerance]
    best = min(ok, key=lambda f: (abs(f[1] - budget.d_model), f[0])) if ok else min(fits)
    return best[1], best[2]


def describe(cfg: ModelConfig, seq_len: int, target: int | None = None) -> dict:
    """Size and cost of one model: parameters, decode state, training FLOPs per token."""
    model = meta_model(cfg)
    total, emb = count_params(model)
    mixers = model.mixers
    declared = all(m.declares_state() for m in mixers)  # else None: "not declared", never a made-up 0
    return {
        "layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
        "params_total": total, "params_non_embedding": total - emb,
        "deviation": (total - target) / target if target else None,
        "state_per_token": sum(m.state_per_token() for m in mixers) if declared else None,
        "state_fixed": sum(m.state_fixed() for m in mixers) if declared else None,
        "train_flops_per_token": train_flops_per_token(model, seq_len),  # sessa_bench/flops.py derives it
    }


def format_table(rows: list[dict]) -> str:
    cols = ["family", "layers", "d_model", "n_heads", "params_total", "params_non_embedding", "deviation",
            "state_per_token", "state_fixed", "train_flops_per_token"]
    fmt = {"deviation": lambda v: f"{v:+.2%}" if v is not None else "",
           "state_per_token": lambda v: "not declared" if v is None else f"{v:,}",
           "state_fixed": lambda v: "not declared" if v is None else f"{v:,}",
           "train_flops_per_token": lambda v: f"{v / 1e6:.2f}M"}
    plain = lambda v: f"{v:,}" if isinstance(v, int) else str(v)  # noqa: E731
    return md_table(cols, [[fmt.get(c, plain)(r[c]) for c in cols] for r in rows])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", default="tiny", help=f"one of {available('budget')}")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), help=f"from {available('model')}")
    args = ap.parse_args(argv)
    budget = load_budget(args.budget)
    rows = []
    for fam in args.families:
        cfg = solve(load_family(fam), budget, args.vocab)
        rows.append({"family": fam, **describe(cfg, args.seq_len, budget.target_params)})
    print(f"budget={budget.name} target={budget.target_params:,} params, vocab={args.vocab}, "
          f"seq_len={args.seq_len} (decode state in elements per layer stack; FLOPs per training token)")
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    with user_errors("python -m sessa_bench.budget"):
        main()
