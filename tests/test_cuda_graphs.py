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


def model(n_layers=3):
    torch.manual_seed(0)
    return Backbone(ModelConfig(vocab_size=32, d_model=16, n_layers=n_layers, n_heads=2, mixer="attention",
                                mixer_kwargs={"backend": "math"})).double()


@pytest.fixture
def fake(monkeypatch):
    f = FakeCapture()
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", f)
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
                             "blocks": 3}
    assert list(m.state_dict()) == list(ref.state_dict())  # checkpoints keep their keys


def test_calls_unlike_the_capture_run_eagerly(fake):
    m = model().float()
    graphs = GraphedBlocks(m.blocks, device_type="cpu")
    m(torch.randint(0, 32, (2, 9)))
    n = fake.replays
    m(torch.randint(0, 32, (1, 9)))  # another batch shape (the last partial batch of an epoch)
    with torch.no_grad():
        m(torch.randint(0, 32, (2, 9)))
    m.eval()
    m(torch.randint(0, 32, (2, 9)))  # validation
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
    assert order == [("eager", 1)]  # the capture was done before the eager pass began
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
