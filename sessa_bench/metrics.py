"""Evaluation metrics shared by every task: loss, accuracy, perplexity, top-5, exact match, per slice.

A torchmetrics `Metric` whose states are sums (correct counts, summed losses, counts), accumulated on the
device without host syncs and reduced once at the end by summing across processes, so metrics are exact
over the whole split (not means of per-batch or per-rank means). A `slices` tensor assigns scored positions
to named slices (e.g. lag buckets) and accuracy is also reported per slice as `<prefix>/acc/<slice name>`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from sessa_bench.tasks.base import IGNORE

SUMS = ("loss", "correct", "top5", "count", "examples_correct", "examples")


class SplitMetrics(Metric):
    full_state_update = False

    def __init__(self, head: str, slice_names: tuple[str, ...] = ()):
        super().__init__()
        self.head, self.slice_names = head, tuple(slice_names)
        for name in SUMS:
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        n = max(1, len(self.slice_names))
        self.add_state("slice_correct", torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("slice_count", torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor, slices: torch.Tensor | None = None):
        logits = logits.float()
        if self.head == "cls":  # logits (B, C), labels (B,)
            hit = logits.argmax(-1) == labels
            self.loss += F.cross_entropy(logits, labels, reduction="sum")
            self.correct += hit.sum()
            self.count += labels.numel()
            self.examples_correct += hit.sum()
            self.examples += labels.numel()
            return
        mask = labels != IGNORE  # logits (B, T, V), labels (B, T)
        lg, lb = logits[mask], labels[mask]
        hit = lg.argmax(-1) == lb
        self.loss += F.cross_entropy(lg, lb, reduction="sum")
        self.correct += hit.sum()
        k = min(5, lg.shape[-1])
        self.top5 += (lg.topk(k, -1).indices == lb[:, None]).any(-1).sum()
        self.count += lb.numel()
        # example-level: every scored position right (== exact match of greedy decoding)
        pos_hit = torch.ones_like(labels, dtype=torch.bool)
        pos_hit[mask] = hit
        has = mask.any(-1)
        self.examples_correct += (pos_hit.all(-1) & has).sum()
        self.examples += has.sum()
        if slices is not None and self.slice_names:
            sl = slices[mask]
            ok = sl != IGNORE
            idx = sl[ok]
            self.slice_correct.index_add_(0, idx, hit[ok].double())
            self.slice_count.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))

    def compute(self) -> dict[str, float]:
        if not self.count:
            return {}
        loss = float(self.loss / self.count)
        out = {"loss": loss, "acc": float(self.correct / self.count)}
        if self.head == "lm":
            out["ppl"] = math.exp(min(loss, 50.0))
            out["top5"] = float(self.top5 / self.count)
            out["example_acc"] = float(self.examples_correct / max(float(self.examples), 1.0))
        for i, name in enumerate(self.slice_names):
            if self.slice_count[i]:
                out[f"acc/{name}"] = float(self.slice_correct[i] / self.slice_count[i])
        return out
