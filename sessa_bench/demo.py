"""The README's main command (`make demo`): tiny-budget Sessa, Transformer and Mamba2 on a short
SymbolSoup, trained on CPU one after another (finished runs are skipped), then results/demo.md."""

from __future__ import annotations

import sys

from sessa_bench.compose import compose_train
from sessa_bench.report import write_demo
from sessa_bench.train import run

FAMILIES = ("sessa", "transformer", "mamba2")


def main(argv=None) -> None:
    extra = list(sys.argv[1:] if argv is None else argv)  # Hydra overrides, e.g. trainer.max_steps=50
    results_dir = "results/runs"
    for fam in FAMILIES:
        cfg = compose_train(["experiment=demo", f"model={fam}", *extra])
        results_dir = cfg.results_dir
        run(cfg)
    print(write_demo(results_dir))


if __name__ == "__main__":
    main()
