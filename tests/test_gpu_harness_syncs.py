"""The training loop of `sessa-bench train` on a GPU makes no host-device synchronisation between logging
steps: each one drains the GPU's queue, so the host's Python (Lightning's hooks, the next launches) no longer
overlaps the GPU's work. Found by reading the loop for this check: Lightning built `train/lr` from a Python
float on the device, and the batches' copy from pageable memory waited for the stream, both every step. Its
first run on the H200 failed for every family (the report was cut; h200-run8-session.log); found then by
reading Lightning: `train/loss` on the progress bar, which Lightning turns into a Python number after every
batch whether a bar is shown or not (now only with a bar).

torch.cuda.set_sync_debug_mode("warn") reports every synchronising CUDA call as a warning; it is switched on
for steps 3-8 only, between the first steps (autotuning, allocator growth), validation, checkpoints and
logging (all at step 12 here)."""

import warnings

import pytest
import torch

from sessa_bench.compose import compose_train
from sessa_bench.lit_module import LitSequenceModel
from sessa_bench.models.mamba_ssm_import import import_mamba_ssm
from sessa_bench.train import run

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
WATCH = (3, 8)  # global steps with the sync check on
STEPS = 12


@pytest.mark.parametrize("family", ["transformer", "sessa", "mamba2"])
def test_no_sync_between_logging_steps(tmp_path, monkeypatch, family):
    if family == "mamba2" and import_mamba_ssm() is None:
        pytest.skip("mamba-ssm is not installed")
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))

    def start(self, batch, batch_idx):
        if self.global_step == WATCH[0]:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")

    def end(self, outputs, batch, batch_idx):
        if self.global_step == WATCH[1]:
            torch.cuda.set_sync_debug_mode(0)

    monkeypatch.setattr(LitSequenceModel, "on_train_batch_start", start, raising=False)
    monkeypatch.setattr(LitSequenceModel, "on_train_batch_end", end, raising=False)
    ov = [f"results_dir={tmp_path}/runs", "experiment_name=syncs", "logger=none", "probe=false", "trainer=gpu",
          f"model={family}", "budget=tiny", f"trainer.max_steps={STEPS}", f"trainer.val_check_interval={STEPS}",
          f"trainer.log_every_n_steps={STEPS}", f"callbacks.checkpoint.every_n_steps={STEPS}",
          "callbacks.throughput.warmup=0", "trainer.enable_progress_bar=false", "data.batch_size=8",
          "task.min_len=101", "task.max_len=151", "task.n_train=128", "task.n_val=16", "task.n_test=16"]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = run(compose_train(ov))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    # the summary's MFU is that of the GPU trained on (the model is back on the CPU when it is written); the
    # throughput's one window is steps 0-12 (the log interval), so it counts only with warmup=0 (with 1 the
    # summary had no tokens/s and so no MFU: the assert failed for every family on the H200,
    # results/bench/h200x2-run3-session.log)
    assert summary["mfu"] is not None and 0 < summary["mfu"] < 1, summary["mfu"]
    seen = [f"{w.filename}:{w.lineno}" for w in caught if "synchronizing CUDA operation" in str(w.message)]
    assert not seen, f"{len(seen)} synchronising calls in steps {WATCH[0]}-{WATCH[1]}: {seen[:5]}"
