"""Evaluate a finished or interrupted run's checkpoint on a split, optionally at longer lengths.

    sessa-bench eval results/runs/demo/sessa-symbol_soup-tiny-s0 [--split test] [--lengths 1 2 4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf

from sessa_bench.run_folder import RunFolder, atomic_write_text

# Lightning and the model are imported where they are used: a wrong path is then a one-line error in about a
# second instead of after 4 s of imports.


def load_run(path: str | Path):
    """(folder, config, LitSequenceModel) of a finished or unfinished run, with the weights the run reports:
    its best-validation checkpoint where it kept one (summary.json's test_from), else its last."""
    folder = RunFolder(path)
    if not folder.config.exists():
        raise FileNotFoundError(f"{folder.path} is not a run folder (no config.yaml)")
    ckpt, which, _ = folder.reported()
    if not ckpt.exists():
        raise FileNotFoundError(f"{folder.path} has no checkpoint at {ckpt}"
                                + (" (the run reports its best-validation weights)" if which == "best" else ""))
    cfg = OmegaConf.load(folder.config)
    folder.read_checkpoint(ckpt)  # plain data only: a crafted or corrupt file is a one-line error, never run
    from sessa_bench.console import quiet_lightning
    from sessa_bench.lit_module import LitSequenceModel

    quiet_lightning()
    try:
        lit = LitSequenceModel.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"checkpoint {ckpt} is corrupt or unreadable "
                           f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})") from None
    return folder, cfg, lit


def evaluate(path: str | Path, split: str = "test", lengths=(1,), accelerator: str = "auto") -> dict:
    folder, cfg, lit = load_run(path)
    import lightning as L
    from hydra.utils import instantiate

    from sessa_bench.data import TaskDataModule

    task = instantiate(cfg.task)
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    results = {}
    for factor in lengths:
        t = task if int(factor) == 1 else task.scaled(int(factor))
        lit.test_prefix = split if int(factor) == 1 else f"{split}@{factor}x"
        lit.slice_names = tuple(getattr(t, "slice_names", ()))
        dm = TaskDataModule(t, cfg.data.batch_size, cfg.data.eval_batch_size, cfg.seed, test_split=split)
        results.update(trainer.test(lit, datamodule=dm, verbose=False)[0])
    atomic_write_text(folder.path / f"eval_{split}.json", json.dumps(results, indent=2, sort_keys=True))
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--split", default="test", choices=["val", "test"])
    ap.add_argument("--lengths", nargs="+", type=int, default=[1])
    args = ap.parse_args(argv)
    for k, v in evaluate(args.run_dir, args.split, args.lengths).items():
        print(f"{k}: {v:.6g}")
    print(f"wrote {RunFolder(args.run_dir).path / f'eval_{args.split}.json'}")


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    with user_errors("python -m sessa_bench.evaluate"):
        main()
