"""cuda_graphs=true (sessa_bench/cuda_graphs.py): which calls replay a graph and which run eagerly, checked on
CPU with a stand-in for torch.cuda.make_graphed_callables that keeps its contract (warm-up calls through the
module, then the module's forward replaced by one that "replays": here it runs the eager forward and counts).
The real capture, and graphed training == eager training, are tests/test_gpu_cuda_graphs.py."""

import pytest
import torch

from sessa_bench import compile_check
from sessa_bench.compose import compose_train
from sessa_bench.cuda_graphs import CaptureError, GraphedBlocks
from sessa_bench.models.backbone import Backbone
from sessa_bench.models.config import ModelConfig
from sessa_bench.run_folder import config_changes
from sessa_bench.schema import validate


class FakeCapture:
    def __init__(self, fail: bool = False):
        self.captures, self.replays, self.warmups, self.fail = [], 0, 0, fail

    def __call__(self, callables, sample_args, num_warmup_iters=3, allow_unused_input=False, pool=None):
        assert not (torch.is_autocast_enabled("cpu") and torch.is_autocast_cache_enabled()), \
            "make_graphed_callables refuses autocast's cache"
        self.captures.append([tuple(a[0].shape) for a in sample_args])
        for m, args in zip(callables, sample_args):
            for _ in range(num_warmup_iters):
                self.warmups += 1
                m(*args)  # through the module, as the real one warms up: must run eagerly
            if self.fail:
                try:
                    raise RuntimeError("operation would make the legacy stream depend on a capturing stream\nmore")
                except RuntimeError:  # what torch.cuda.graph's exit raises on top of the first error
                    raise RuntimeError("operation failed due to a previous error during capture")
            orig = m.forward

            def new_fwd(*a, _m=m, _orig=orig):
                if not _m.training:
                    return _orig(*a)
                self.replays += 1
                return type(_m).forward(_m, *a)
            m.forward = new_fwd
        return callables


class FakeEvalGraph:
    """Stand-in for cuda_graphs.graph_forward: warm-up calls, then a "capture" whose replay recomputes fn on the
    static input into the static output buffer (what a CUDA graph's replay does, with the current weights)."""

    def __init__(self, fail: bool = False, wrong: bool = False):
        self.captures, self.replays, self.fail, self.wrong = 0, 0, fail, wrong
        self.watch = None  # a module whose parameters a replay reads where they were at the capture

    def __call__(self, fn, static_in, pool, warmup):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing\nmore")
        for _ in range(warmup):
            fn(static_in)
        out = fn(static_in).clone()
        self.captures += 1
        at = stored(self.watch)

        def replay():
            if stored(self.watch) != at:  # what a real replay does then: read memory that is no longer theirs
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            self.replays += 1
            out.copy_(fn(static_in) + (1.0 if self.wrong else 0.0))
        return replay, out


def stored(module) -> list:
    return [p.data_ptr() for p in module.parameters()] if module is not None else []


def model(n_layers=3):
    torch.manual_seed(0)
    return Backbone(ModelConfig(vocab_size=32, d_model=16, n_layers=n_layers, n_heads=2, mixer="attention",
                                mixer_kwargs={"backend": "math"})).double()


@pytest.fixture
def fake(monkeypatch):
    f = FakeCapture()
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", f)
    f.eval = FakeEvalGraph()
    monkeypatch.setattr("sessa_bench.cuda_graphs.graph_forward", f.eval)
    return f


def test_one_capture_of_all_blocks_then_replays_and_the_same_numbers(fake):
    ref, m = model(), model()
    graphs = GraphedBlocks(m.blocks, device_type="cpu")
    idx = torch.randint(0, 32, (2, 9))
    for step in range(2):
        out, expect = m(idx), ref(idx)
        torch.testing.assert_close(out, expect, rtol=0, atol=0)
        out.square().sum().backward()
        expect.square().sum().backward()
    assert fake.captures == [[(2, 9, 16)] * 3]  # once, every block, at the activations' shape
    assert fake.warmups == 9 and fake.replays == 6  # warm-ups ran eagerly (no replay), then 3 blocks x 2 steps
    for p, q in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
    assert graphs.info() == {"captured": True, "shape": [2, 9, 16], "dtype": "torch.float64", "autocast": None,
                             "blocks": 3, "eval_shapes": [], "eval_off": None}
    assert list(m.state_dict()) == list(ref.state_dict())  # checkpoints keep their keys


def test_calls_unlike_the_capture_run_eagerly(fake):
    m = model().float()
    graphs = GraphedBlocks(m.blocks, device_type="cpu")
    m(torch.randint(0, 32, (2, 9)))
    n = fake.replays
    m(torch.randint(0, 32, (1, 9)))  # another batch shape (the last partial batch of an epoch)
    with torch.no_grad():
        m(torch.randint(0, 32, (2, 9)))  # no grad: the eval graphs' (below), not the training graph
    assert fake.eval.captures == 3
    m.eval()
    m(torch.randint(0, 32, (2, 9)))  # eval mode with grad (the memory-tail probe)
    m.train()
    with graphs.eager():  # the first-batch check's eager pass
        m(torch.randint(0, 32, (2, 9)))
    assert fake.replays == n and len(fake.captures) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):  # another autocast setting than the capture's
        m(torch.randint(0, 32, (2, 9)))
    assert fake.replays == n and len(fake.captures) == 1


def test_capture_runs_with_autocast_cache_off(fake):
    m = model().float()
    GraphedBlocks(m.blocks, device_type="cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):  # Lightning's bf16-mixed: cache on
        m(torch.randint(0, 32, (2, 9)))
    assert fake.captures and fake.replays == 3


def test_a_failed_capture_stops_with_one_line_naming_the_way_out(monkeypatch):
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", FakeCapture(fail=True))
    m = model()
    GraphedBlocks(m.blocks, device_type="cpu")
    with pytest.raises(CaptureError, match=r"could not be captured in a CUDA graph \(RuntimeError: operation would "
                                           r"make the legacy stream depend on a capturing stream\); train with "
                                           r"cuda_graphs=false$") as e:
        m(torch.randint(0, 32, (2, 9)))
    assert "\n" not in str(e.value)


def test_the_first_batch_check_names_cuda_graphs():
    r = {"loss_eager": 3.0, "loss_compiled": 4.0, "grad_rel_diff": 0.0, "grad_cosine": 1.0}
    with pytest.raises(compile_check.CompileMismatch, match="cuda_graphs=true: the graphed model disagrees.*"
                                                            "train with cuda_graphs=false"):
        compile_check.check(r, "cuda_graphs")


@pytest.mark.parametrize("overrides, message", [
    (["trainer=cpu"], r"cuda_graphs=True needs one CUDA GPU: trainer=gpu"),
    (["trainer=ddp"], r"cuda_graphs=True needs one CUDA GPU"),
    (["trainer=gpu", "compile=true"], r"cuda_graphs=True must be false when compile=true"),
    (["trainer=gpu", "+trainer.accumulate_grad_batches=2"], r"needs trainer.accumulate_grad_batches=1"),
    (["cuda_graphs=sometimes"], r"cuda_graphs='sometimes' must be true, false or auto"),
])
def test_settings_graphs_cannot_run_under_are_refused_with_one_line(overrides, message):
    with pytest.raises(ValueError, match=message):
        validate(compose_train(["cuda_graphs=true", *overrides]))
    validate(compose_train(["cuda_graphs=true", "trainer=gpu"]))  # the setting it is for passes


def test_graphed_and_eager_runs_are_one_config():
    """A graphed rerun of an eager run's folder is the same run (eager's kernels, replayed)."""
    assert config_changes({"cuda_graphs": False, "seed": 0}, {"cuda_graphs": True, "seed": 0}) == []
    assert config_changes({"seed": 0}, {"cuda_graphs": True, "seed": 0}) == []  # folders from before the key


def test_the_first_batch_check_runs_the_graphed_pass_first(fake):
    """The capture happens at the first graphed call; an eager graph of the same parameters still alive then
    (the eager pass's loss) broke every capture on the H200: compare must run the graphed pass first."""
    from sessa_bench.lit_module import LitSequenceModel
    cfg = dict(vocab_size=32, d_model=16, n_layers=2, n_heads=2, mixer="attention",
               mixer_kwargs={"backend": "math"}, head="cls", n_classes=5)
    optim = dict(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, warmup_steps=1, min_lr_ratio=0.1)
    m = LitSequenceModel(cfg, optim, 10, cuda_graphs=True)
    m.configure_model()
    m.graphs.device_type = "cpu"
    order = []
    eager_ctx = m.graphs.eager

    def eager():
        order.append(("eager", len(fake.captures)))
        return eager_ctx()
    batch = {"input_ids": torch.randint(1, 32, (3, 12)), "lengths": torch.tensor([12, 9, 7]),
             "labels": torch.tensor([0, 3, 4])}
    r = compile_check.compare(m, batch, m.loss, eager=eager)
    assert order == [("eager", 1)] * 2  # the capture was done before the eager passes (and its repeat) began
    assert r["loss_compiled"] == pytest.approx(r["loss_eager"], rel=1e-6) and r["grad_rel_diff"] < 1e-6


@pytest.mark.parametrize("overrides, gpu, want", [
    (["trainer=gpu"], True, True),
    (["trainer=gpu"], False, False),        # no GPU visible
    (["trainer=cpu"], True, False),
    (["trainer=ddp"], True, False),          # several processes
    (["trainer=gpu", "compile=true"], True, False),
    (["trainer=gpu", "+trainer.accumulate_grad_batches=2"], True, False),
])
def test_auto_turns_graphs_on_only_where_they_apply(monkeypatch, overrides, gpu, want):
    """The paper experiments say cuda_graphs=auto: graphs on one GPU, eager elsewhere, never an error."""
    from sessa_bench import cuda_graphs
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: int(gpu))
    cfg = compose_train(["experiment=table1_symbol_soup", *overrides])
    assert cfg.cuda_graphs == "auto"
    validate(cfg)
    assert cuda_graphs.enabled(cfg) is want
    assert cuda_graphs.enabled(compose_train(["cuda_graphs=true", "trainer=cpu"])) is True  # as asked (refused)
    assert cuda_graphs.enabled(compose_train([])) is False  # the default


def test_evaluation_replays_its_own_graphs_chained_block_to_block(fake):
    """No-grad forwards (validation, test) after the training capture: one eval graph per block at the first
    call of a shape, block i+1 reading block i's static output; replays equal eager with the current weights
    (after an optimizer step too); at most EVAL_SHAPES shapes, the rest eagerly."""
    from sessa_bench.cuda_graphs import EVAL_SHAPES
    ref, m = model(), model()
    graphs = GraphedBlocks(m.blocks, device_type="cpu")
    idx = torch.randint(0, 32, (2, 9))
    with torch.no_grad():  # before the training capture: eager (the training capture must come first)
        torch.testing.assert_close(m(idx), ref(idx), rtol=0, atol=0)
    assert fake.eval.captures == 0 and not graphs.eval_graphs
    for net in (m, ref):  # one training step each: the weights move
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        net(idx).square().sum().backward()
        opt.step()
        opt.zero_grad()
    m.eval(), ref.eval()
    for _ in range(3):
        x = torch.randint(0, 32, (2, 9))
        with torch.inference_mode():
            torch.testing.assert_close(m(x), ref(x), rtol=0, atol=0)
    assert fake.eval.captures == 3  # once per block, at the first call
    chain = next(iter(graphs.eval_graphs.values()))
    assert all(chain[i][2] is chain[i + 1][1] for i in range(2))  # block i+1's input is block i's output
    assert fake.eval.replays == 3 + 3 * 3  # the capture's check, then 3 calls of 3 blocks
    for net in (m, ref):  # the weights move between two evaluations: the replays read the new ones
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        net(idx).square().sum().backward()
        opt.step()
        opt.zero_grad()
        net.eval()
    with torch.inference_mode():
        torch.testing.assert_close(m(idx), ref(idx), rtol=0, atol=0)
    assert fake.eval.captures == 3 and fake.eval.replays == 12 + 3 + 3  # checked again after training, then used
    with torch.no_grad():
        for T in range(10, 10 + EVAL_SHAPES + 1):
            x = torch.randint(0, 32, (2, T))
            torch.testing.assert_close(m(x), ref(x), rtol=0, atol=0)
    assert len(graphs.eval_graphs) == EVAL_SHAPES and graphs.info()["eval_shapes"][0] == [2, 9, 16]
    x = torch.randint(0, 32, (2, 9))  # grad enabled in eval mode (the probe): eager and differentiable
    out = m(x)
    out.sum().backward()
    assert out.grad_fn is not None


def test_eval_graphs_can_be_turned_off_from_the_environment(fake, monkeypatch):
    monkeypatch.setenv("SESSA_BENCH_EVAL_GRAPHS", "0")
    m = model()
    graphs = GraphedBlocks(m.blocks, device_type="cpu")
    m(torch.randint(0, 32, (2, 9))).sum().backward()
    with torch.no_grad():
        m(torch.randint(0, 32, (2, 9)))
    assert fake.eval.captures == 0 and graphs.info()["eval_off"] == "SESSA_BENCH_EVAL_GRAPHS=0"


def test_a_replay_that_stops_matching_eager_after_training_turns_eval_graphs_off(fake, capsys):
    """The check at the first evaluation after training steps: a replay gone wrong then (stale weights, say)
    is caught before its output is used."""
    ref, m = model(), model()
    graphs = GraphedBlocks(m.blocks, device_type="cpu")
    idx = torch.randint(0, 32, (2, 9))
    m(idx).sum().backward()
    with torch.no_grad():
        m(idx)  # captured and checked: right
    fake.eval.wrong = True  # from now on the replays are wrong
    with torch.no_grad():
        m(idx)  # no training since: not checked again (the replay's wrong output is used: the fake's fault)
    m(idx).sum().backward()  # a training forward: the next evaluation checks
    m.zero_grad(), ref.zero_grad()
    ref(idx).sum().backward()
    with torch.no_grad():
        torch.testing.assert_close(m(idx), ref(idx), rtol=0, atol=0)  # caught: the eager forward's output
    assert graphs.info()["eval_off"].startswith("CaptureError: the replay differs from the eager forward")
    assert not graphs.eval_graphs and "evaluation runs eagerly" in capsys.readouterr().out


@pytest.mark.parametrize("how, why", [("fail", "RuntimeError: operation not permitted when stream is capturing"),
                                      ("wrong", "CaptureError: the replay differs from the eager forward")])
def test_an_eval_capture_that_fails_or_disagrees_leaves_evaluation_eager(fake, capsys, how, why):
    fake.eval.fail, fake.eval.wrong = how == "fail", how == "wrong"
    ref, m = model(), model()
    graphs = GraphedBlocks(m.blocks, device_type="cpu")
    idx = torch.randint(0, 32, (2, 9))
    m(idx).sum().backward()  # the training capture
    m.zero_grad()
    for _ in range(2):
        with torch.no_grad():
            torch.testing.assert_close(m(idx), ref(idx), rtol=0, atol=0)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"cuda_graphs: evaluation runs eagerly ({why}")
    assert graphs.info()["eval_off"].startswith(why) and not graphs.eval_graphs


def test_parameters_moved_in_memory_are_never_read_where_they_were(fake, capsys):
    """Lightning's teardown after fit moves the model to the CPU and the validation and test after it move it
    back into new memory (the bench's graphed loop died there of an illegal memory access): the eval graphs are
    captured again, and training calls after such a move run eagerly."""
    ref, m = model(), model()
    graphs = GraphedBlocks(m.blocks, device_type="cpu")
    fake.eval.watch = m.blocks
    idx = torch.randint(0, 32, (2, 9))
    m(idx).sum().backward()  # the training capture
    with torch.no_grad():
        m(idx)  # the eval capture
    assert fake.eval.captures == 3
    for p in m.parameters():  # what .cpu() then .cuda() does to each parameter: new storage, same values
        p.data = p.data.clone()
    with torch.no_grad():
        torch.testing.assert_close(m(idx), ref(idx), rtol=0, atol=0)
    assert fake.eval.captures == 6 and graphs.info()["eval_off"] is None  # captured again, not turned off
    n = fake.replays
    m.zero_grad(), ref.zero_grad()
    m(idx).sum().backward()
    ref(idx).sum().backward()
    assert fake.replays == n  # eagerly
    for p, q in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
    out = capsys.readouterr().out
    assert "moved in memory since the eval capture; captured again" in out
    assert "moved in memory since the training capture; training runs eagerly" in out
