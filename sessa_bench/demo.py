"""The README's main command (`make demo`): tiny-budget Sessa, Transformer and Mamba2 on a short
SymbolSoup, trained on CPU one after another (finished runs are skipped), then results/demo.md."""

from __future__ import annotations

import sys

from sessa_bench.compose import compose_train
from sessa_bench.report.demo import write_demo
from sessa_bench.runs import ensure

FAMILIES = ("sessa", "transformer", "mamba2")


USAGE = "usage: sessa-bench demo [HYDRA OVERRIDE ...]   (e.g. trainer.max_steps=50 seed=1)"


def main(argv=None) -> None:
    extra = list(sys.argv[1:] if argv is None else argv)  # Hydra overrides, e.g. trainer.max_steps=50
    if any(a in ("-h", "--help") for a in extra):
        print(f"{USAGE}\n\n{__doc__.strip()}")
        return
    runs = [["experiment=demo", f"model={fam}", *extra] for fam in FAMILIES]
    ensure(runs)
    print(write_demo(compose_train(runs[0]).results_dir))


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    with user_errors("python -m sessa_bench.demo"):
        main()
