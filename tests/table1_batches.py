"""Table 1's SymbolSoup setup for the GPU tests of fast paths: the config, the resolved model config and a few
real training batches of fixed length (as compiled or graphed runs get them), on CUDA."""

import torch

from sessa_bench.compose import compose_train
from sessa_bench.data import TaskDataModule
from sessa_bench.train import build_task, resolve_model


def table1_batches(tmp_path, monkeypatch, family: str, n: int = 1, batch_size: int = 16):
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path))
    cfg = compose_train(["experiment=table1_symbol_soup", f"model={family}", "task.n_train=64", "task.n_val=8",
                         "task.n_test=8"])
    task = build_task(cfg)
    model_cfg, _ = resolve_model(cfg, task)
    dm = TaskDataModule(task, batch_size, batch_size, seed=0, fixed_length=True)
    dm.trainer = None
    batches = [{k: v.cuda() for k, v in b.items() if torch.is_tensor(v)}
               for _, b in zip(range(n), dm.train_dataloader())]
    return cfg, model_cfg, batches
