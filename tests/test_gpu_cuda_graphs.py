"""CUDA: cuda_graphs=true trains what eager trains (sessa_bench/cuda_graphs.py). Each family at Table 1's shapes,
bf16 autocast, a real SymbolSoup batch: the first-batch check every graphed run makes, then a few AdamW steps
of a graphed and an eager copy of one initialisation side by side. The steps are the point: a replay that read
stale weights (autocast's cached casts, say) passes the first batch and then drifts. Run with `pytest -m gpu`."""

import pytest
import torch

from sessa_bench import compile_check
from sessa_bench.compose import compose_train
from sessa_bench.data import TaskDataModule
from sessa_bench.lit_module import LitSequenceModel
from sessa_bench.train import build_task, resolve_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

STEPS = 6


def setup(tmp_path, monkeypatch, family):
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path))
    cfg = compose_train(["experiment=table1_symbol_soup", f"model={family}", "task.n_train=64", "task.n_val=8",
                         "task.n_test=8"])
    task = build_task(cfg)
    model_cfg, _ = resolve_model(cfg, task)
    dm = TaskDataModule(task, 16, 16, seed=0, fixed_length=True)
    dm.trainer = None
    batches = [{k: v.cuda() for k, v in b.items() if torch.is_tensor(v)}
               for _, b in zip(range(STEPS), dm.train_dataloader())]
    return cfg, model_cfg, batches


def lit(cfg, model_cfg, graphs):
    torch.manual_seed(0)
    m = LitSequenceModel(model_cfg.to_dict(), dict(cfg.optim), 10, cuda_graphs=graphs).cuda()
    m.configure_model()
    return m


def train(m, batches):
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)
    losses = []
    for b in batches:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m.loss(m(b), b["labels"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("family", ["transformer", "sessa", "mamba2"])
def test_graphed_training_follows_eager(tmp_path, monkeypatch, family):
    cfg, model_cfg, batches = setup(tmp_path, monkeypatch, family)
    graphed = lit(cfg, model_cfg, True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        result = compile_check.compare(graphed, batches[0], graphed.loss, eager=graphed.graphs.eager)
    print(family, "first batch", result)
    assert graphed.graphs.info()["captured"]
    assert abs(result["loss_compiled"] - result["loss_eager"]) < 1e-3 * result["loss_eager"]
    assert result["grad_rel_diff"] < 1e-2

    graphed = lit(cfg, model_cfg, True)
    eager = lit(cfg, model_cfg, False)
    g, e = train(graphed, batches), train(eager, batches)
    print(family, "graphed", g, "eager", e)
    assert graphed.graphs.info()["captured"]
    assert abs(e[-1] - e[0]) > 1e-3  # the weights moved: a replay of stale weights would fall behind
    for step, (a, b) in enumerate(zip(g, e)):
        assert abs(a - b) < 1e-2 * abs(b), f"step {step}: graphed loss {a:.5f}, eager {b:.5f}"
