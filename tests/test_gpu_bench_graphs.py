"""CUDA: the bench's graphed block step (sessa_bench/bench/blocks.py `graphed`) computes what the eager step
computes: the same block and input, eager and replayed from CUDA graphs, give the same output (forward only)
and the same gradients of the input and the parameters (forward and backward), for our SDPA block and Sessa's
single- and two-level Triton solves. Run with `pytest -m gpu`."""

import copy

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

D, H, B, T = 128, 4, 2, 256


@pytest.mark.parametrize("name", ["attention/sdpa", "sessa/triton", "sessa/triton2"])
def test_graphed_block_step_is_the_eager_step(name):
    from sessa_bench.bench.blocks import graphed, implementations
    from sessa_bench.models.block import GatedBlock

    factory = implementations(torch.device("cuda"), D, H, {})[name]
    torch.manual_seed(0)
    block = GatedBlock(D, factory()).cuda().float()
    x = torch.randn(B, T, D, device="cuda", requires_grad=True)
    grad = torch.randn_like(x)
    block(x).backward(grad)
    want = [x.grad.clone()] + [p.grad.clone() for p in block.parameters()]
    with torch.no_grad():
        want_y = block(x)
    x.grad = None
    for p in block.parameters():
        p.grad = None
    # make_graphed_callables replaces block.forward in place: the forward-only graph gets its own copy of the
    # eager block, as the bench builds a fresh block for each graphed row (capturing the graphed forward
    # again failed: "Cannot prepare for replay during capturing stage", lease 16)
    fwd_block = copy.deepcopy(block)

    step = graphed(block, x, grad, backward=True)
    for p in block.parameters():  # make_graphed_callables' warm-up ran backward passes: start from zero
        p.grad = None
    x.grad = None
    step()
    got = [x.grad] + [p.grad for p in block.parameters()]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)

    replay = graphed(fwd_block, x, grad, backward=False)
    torch.testing.assert_close(replay(), want_y)
    with torch.no_grad():
        x.mul_(0.5)  # the graph reads x's storage: a replay after x changed gives the new input's output
        want_half = fwd_block(x)  # eager: graph_forward captures without patching the module
    torch.testing.assert_close(replay(), want_half)
