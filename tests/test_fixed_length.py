"""Under compile, every batch of a split is padded to the split's longest sequence (TaskDataModule
fixed_length): the compiled model sees one length per split instead of a new one at almost every step, which
made Dynamo recompile and then trace with a symbolic length. Right padding must change no result: every
family's outputs at the real positions, and the class read at `lengths`, are those of the unpadded batch."""

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from sessa_bench.compose import compose_train
from sessa_bench.data import TaskDataModule
from sessa_bench.models.backbone import Backbone
from sessa_bench.models.config import ModelConfig
from sessa_bench.tasks.base import pad_collate
from test_compile import MODELS  # each family's mixer and CPU kwargs
from test_scale_out import _Trainer


@pytest.fixture
def task(tmp_path, monkeypatch):
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path))
    from sessa_bench.train import build_task
    return build_task(compose_train(["task.min_len=21", "task.max_len=41", "task.n_train=40", "task.n_val=9",
                                     "task.n_test=9"]))


def test_every_batch_of_a_split_has_its_longest_length(task):
    plain, fixed = TaskDataModule(task, 4, 3, seed=1), TaskDataModule(task, 4, 3, seed=1, fixed_length=True)
    for dm in (plain, fixed):
        dm.trainer = _Trainer(0, 1)
    for name, loader in [("train", "train_dataloader"), ("val", "val_dataloader"), ("test", "test_dataloader")]:
        longest = max(len(x["input_ids"]) for x in task.dataset(name))
        batches = [b for _, b in zip(range(6), getattr(plain, loader)())]
        padded = [b for _, b in zip(range(6), getattr(fixed, loader)())]
        assert len({b["input_ids"].shape[1] for b in batches}) > 1, name  # the check below can fail
        for b, p in zip(batches, padded):
            T = b["input_ids"].shape[1]
            assert p["input_ids"].shape[1] == longest
            assert torch.equal(p["input_ids"][:, :T], b["input_ids"]) and torch.equal(p["lengths"], b["lengths"])
            assert (p["input_ids"][:, T:] == task.pad_id).all() and torch.equal(p["labels"], b["labels"])


@pytest.mark.parametrize("family", ["sessa", "transformer", "mamba2"])
@pytest.mark.parametrize("head", ["cls", "lm"])
def test_right_padding_changes_no_real_output(family, head):
    """float64: the logits of a batch padded 13 positions further equal the unpadded ones where they are read."""
    mixer, mk = MODELS[family]
    torch.manual_seed(0)
    model = Backbone(ModelConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=2, mixer=mixer, mixer_kwargs=mk,
                                 head=head, n_classes=5)).double()
    items = [{"input_ids": torch.randint(1, 32, (n,)), "labels": torch.tensor(1)} for n in (17, 23, 30)]
    short, long = pad_collate(items, 0), pad_collate(items, 0, length=43)
    a = model(short["input_ids"], lengths=short["lengths"])
    b = model(long["input_ids"], lengths=long["lengths"])
    if head == "lm":
        a, b = a, b[:, :a.shape[1]]
        real = torch.arange(a.shape[1])[None, :] < short["lengths"][:, None]
        a, b = a[real], b[real]
    torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_the_compiled_model_traces_once_at_a_fixed_length():
    """Dynamo's frame count over five batches: one trace at a fixed length; a recompile (then symbolic lengths)
    when every batch has its own."""
    def frames(length):
        torch._dynamo.reset()
        torch.manual_seed(0)
        model, counter = Backbone(ModelConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2)), CompileCounter()
        model.compile(backend=counter)
        for n in (20, 24, 21, 27, 25):
            batch = pad_collate([{"input_ids": torch.randint(1, 32, (n,)), "labels": torch.tensor(0)}], 0, length)
            model(batch["input_ids"], lengths=batch["lengths"])
        return counter.frame_count
    assert frames(30) == 1
    assert frames(None) > 1


def test_each_dataset_knows_its_longest_item():
    """`longest()` of every dataset class the tasks hand out equals the most input_ids of any of its items
    (the data module reads it instead of every item)."""
    import numpy as np

    from sessa_bench.tasks.base import TensorDataset
    from sessa_bench.tasks.lm import Segments
    from sessa_bench.tasks.retrieval import AnswerRows

    ids = torch.randint(1, 9, (3, 12))
    rows = AnswerRows({"ids": ids, "lengths": torch.tensor([5, 12, 7]), "ans_pos": torch.tensor([[2, -1]] * 3),
                       "ans_slice": torch.zeros(3, 2, dtype=torch.long)})
    for data in (TensorDataset({"input_ids": [torch.ones(n, dtype=torch.long) for n in (4, 9, 6)]}),
                 Segments(np.arange(100), 16), rows):
        assert data.longest() == max(len(data[i]["input_ids"]) for i in range(len(data))), type(data).__name__
