"""The README's main command (`make demo`): tiny-budget Sessa, Transformer and Mamba2 on a short
SymbolSoup, trained on CPU one after another (finished runs are skipped), then results/demo.md."""

from __future__ import annotations

import sys

from sessa_bench.compose import compose_train
from sessa_bench.report.demo import write_demo
from sessa_bench.runs import ensure

FAMILIES = ("sessa", "transformer", "mamba2")


def main(argv=None) -> None:
    extra = list(sys.argv[1:] if argv is None else argv)  # Hydra overrides, e.g. trainer.max_steps=50
    runs = [["experiment=demo", f"model={fam}", *extra] for fam in FAMILIES]
    ensure(runs)
    print(write_demo(compose_train(runs[0]).results_dir))


if __name__ == "__main__":
    main()
