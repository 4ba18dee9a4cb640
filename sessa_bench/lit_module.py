"""The LightningModule shared by every family and task: loss, AdamW with linear warmup then cosine decay
(`optim.schedule=cosine`) or a constant rate (`constant`), and exact split-level metrics for validation and
test."""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F

from sessa_bench import compile_check
from sessa_bench.cuda_graphs import GraphedBlocks
from sessa_bench.metrics import SplitMetrics
from sessa_bench.models.backbone import Backbone
from sessa_bench.models.config import ModelConfig
from sessa_bench.tasks.base import IGNORE


SCHEDULES = ("cosine", "constant")


def lr_lambda(warmup: int, total: int, min_ratio: float, schedule: str = "cosine"):
    """Linear warmup to 1, then cosine decay to min_ratio at `total` steps, or (constant) 1 from then on.
    The constant schedule does not depend on `total`, so a run extended to more steps computes exactly what
    a run started with the larger step count computes."""
    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule={schedule!r}: must be one of {list(SCHEDULES)}")

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


class LitSequenceModel(L.LightningModule):
    def __init__(self, model_cfg: dict, optim: dict, max_steps: int, slice_names: tuple = (), compile: bool = False,
                 cuda_graphs: bool = False):
        super().__init__()
        for name, value in (("compile", compile), ("cuda_graphs", cuda_graphs)):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
        self.save_hyperparameters()  # checkpoints rebuild the model on their own
        self.model = Backbone(ModelConfig(**model_cfg))
        self._compiled = False
        self.compile_check: dict | None = None  # compiled against eager on the first batch (compile_check.py)
        self.graphs: GraphedBlocks | None = None  # cuda_graphs=true: the blocks' CUDA graphs (cuda_graphs.py)
        self.head = self.model.cfg.head
        self.slice_names = tuple(slice_names)
        self._eval: dict[str, SplitMetrics] = {}  # in a dict: not a submodule, so never in a checkpoint

    def configure_model(self):
        # Each block in place (Backbone.compile_blocks), so the state_dict keys stay those of the eager model.
        # Not fullgraph: a break found on some backend costs speed, not the run (the tests and the bench check
        # for breaks).
        if self.hparams.get("compile", False) and not self._compiled:
            self.model.compile_blocks()
            self._compiled = True
        if self.hparams.get("cuda_graphs", False) and self.graphs is None:
            self.graphs = GraphedBlocks(self.model.blocks)  # captured at the first training forward on CUDA

    def forward(self, batch):
        return self.model(batch["input_ids"], lengths=batch.get("lengths"))

    def loss(self, logits, labels):
        if self.head == "cls":
            return F.cross_entropy(logits.float(), labels)
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)

    def training_step(self, batch, batch_idx):
        # Once per process, before any update, a compiled model or one in CUDA graphs (captured and first
        # replayed in the check's first pass: eager's kernels, but on static buffers, which a wrong capture
        # would show) against eager. Not under DDP, where every rank would have to agree on a failure: the
        # single-GPU smoke that precedes a DDP run (scripts/gpu_session.sh) checks the same graph.
        setting = ("compile" if self._compiled and self.trainer.world_size == 1 else
                   "cuda_graphs" if self.graphs is not None and self.device.type == "cuda" else None)
        if setting and self.compile_check is None:
            eager = self.graphs.eager if setting == "cuda_graphs" else None
            self.compile_check = compile_check.check(compile_check.compare(self, batch, self.loss, eager), setting)
        loss = self.loss(self(batch), batch["labels"])
        # On the progress bar only when there is one: after every batch Lightning turns each progress-bar
        # metric into a Python number (logger_connector.on_batch_end, shown or not), a host sync per step.
        # sync_dist: under DDP, the mean of the global batch.
        self.log("train/loss", loss, prog_bar=self.trainer.progress_bar_callback is not None, sync_dist=True)
        # A CPU tensor: from a Python float Lightning builds a tensor on the model's device, a blocking
        # host-to-device copy that waited for the forward on the GPU at every step.
        self.log("train/lr", torch.tensor(float(self.trainer.optimizers[0].param_groups[0]["lr"])))
        return loss

    # --- evaluation: accumulate over the split, reduce once ------------------------------------------
    def _eval_start(self):
        self._eval["split"] = SplitMetrics(self.head, self.slice_names).to(self.device)

    def _eval_step(self, batch):
        self._eval["split"].update(self(batch), batch["labels"], batch.get("slices"))

    def _eval_end(self, prefix: str):
        # compute() sums the states across processes: the metrics are already global, no sync_dist
        self.log_dict({f"{prefix}/{k}": v for k, v in self._eval["split"].compute().items()})

    def on_validation_epoch_start(self):
        self._eval_start()

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_validation_epoch_end(self):
        self._eval_end("val")

    def on_test_epoch_start(self):
        self._eval_start()

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_test_epoch_end(self):
        self._eval_end(getattr(self, "test_prefix", "test"))

    # --- optimisation -----------------------------------------------------------------------------------
    def configure_optimizers(self):
        o = self.hparams.optim
        decay, no_decay = [], []
        for p in self.model.parameters():
            (decay if p.dim() >= 2 and not getattr(p, "_no_weight_decay", False) else no_decay).append(p)
        trainer = self._trainer
        fused = use_fused_adamw(self.device, trainer.precision if trainer is not None else "32-true")
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": o["weight_decay"]},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"], fused=fused or None)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(o["warmup_steps"], self.hparams.max_steps, o["min_lr_ratio"], o.get("schedule", "cosine")))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        # Clipping by norm happens here, as Lightning's would (after a GradScaler unscaled the gradients), and
        # the norm before clipping is logged, `train/grad_norm`: a device tensor the clip computes anyway,
        # written with train/loss (no host sync of its own). It says whether a loss that drifts or collapses
        # (Diffuse MQAR's Sessa seed 2 unlearnt to the uniform guess at a constant rate, lease 17) had its
        # gradients clipped. Lightning itself refuses to clip for an optimizer that unscales its own gradients
        # (fused AdamW), even where there is nothing to unscale; use_fused_adamw only picks it then.
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            params = [p for g in optimizer.param_groups for p in g["params"]]
            norm = torch.nn.utils.clip_grad_norm_(params, gradient_clip_val, foreach=True)
            if self._trainer is not None:
                self.log("train/grad_norm", norm)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)


def use_fused_adamw(device: torch.device, precision) -> bool:
    """Fused AdamW (one kernel over all parameters instead of a few per parameter group and step; what the
    bench's bare step uses) on CUDA, except under 16-mixed, whose GradScaler must unscale the gradients
    before they are clipped, which Lightning skips for a fused optimizer."""
    return device.type == "cuda" and str(precision) != "16-mixed"
