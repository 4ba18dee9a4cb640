"""CUDA: cuda_graphs=true trains what eager trains (sessa_bench/cuda_graphs.py). Each family at Table 1's shapes,
bf16 autocast, a real SymbolSoup batch: the first-batch check every graphed run makes, then a few AdamW steps
of a graphed and an eager copy of one initialisation side by side. The steps are the point: a replay that read
stale weights (autocast's cached casts, say) passes the first batch and then drifts. Evaluation replays graphs
of its own (no grad): checked against the eager forward of the same weights, before and after an optimizer
step. Run with `pytest -m gpu`."""

import pytest
import torch

from sessa_bench import compile_check
from sessa_bench.lit_module import LitSequenceModel
from table1_batches import table1_batches

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

STEPS = 6


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
    cfg, model_cfg, batches = table1_batches(tmp_path, monkeypatch, family, STEPS)
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


@pytest.mark.parametrize("family", ["transformer", "sessa", "mamba2"])
def test_graphed_evaluation_follows_eager(tmp_path, monkeypatch, family):
    cfg, model_cfg, batches = table1_batches(tmp_path, monkeypatch, family, 3)
    m = lit(cfg, model_cfg, True)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)

    def train_step(b):
        m.train()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            m.loss(m(b), b["labels"]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def evaluate(b):
        m.eval()
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            graphed = m(b).float()
            with m.graphs.eager():
                eager = m(b).float()
        return graphed, eager

    train_step(batches[0])  # the training capture comes first
    for b in batches[1:]:
        for _ in range(2):  # the capture (and its check), then a replay
            graphed, eager = evaluate(b)
            torch.testing.assert_close(graphed, eager, rtol=1e-3, atol=1e-3 * eager.abs().max().item())
        train_step(b)  # the weights move: the next replay must read them
    info = m.graphs.info()
    print(family, info)
    assert info["eval_off"] is None and info["eval_shapes"]


@pytest.mark.parametrize("family", ["transformer", "sessa"])
def test_evaluation_after_the_model_left_the_gpu_and_came_back(tmp_path, monkeypatch, family, capsys):
    """What Lightning does between `fit` and the validation and test after it: the model to the CPU, the CUDA
    cache emptied, the model back. Here the freed memory is taken by other tensors first, so the parameters come
    back elsewhere: replays of the graphs captured before would read those tensors (the bench's graphed loop
    died of an illegal memory access there). The eval graphs must be captured again and match eager."""
    cfg, model_cfg, batches = table1_batches(tmp_path, monkeypatch, family, 2)
    m = lit(cfg, model_cfg, True)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        m.loss(m(batches[0]), batches[0]["labels"]).backward()  # the training capture
    opt.step()
    m.eval()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        m(batches[1])  # the eval capture
    before = [p.data_ptr() for p in m.parameters()]
    m.cpu()
    torch.cuda.empty_cache()
    squatters = [torch.full_like(p, float("nan"), device="cuda") for p in m.parameters()]  # the old addresses
    m.cuda()
    assert [p.data_ptr() for p in m.parameters()] != before
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        graphed = m(batches[1]).float()
        with m.graphs.eager():
            eager = m(batches[1]).float()
    torch.cuda.synchronize()
    torch.testing.assert_close(graphed, eager, rtol=1e-3, atol=1e-3 * eager.abs().max().item())
    assert "captured again" in capsys.readouterr().out and m.graphs.info()["eval_off"] is None
    del squatters
