"""Streaming evaluation metrics shared by every task: loss, accuracy, perplexity, top-k, per slice.

Sums are accumulated over batches and reduced once at the end, so metrics are exact over the whole split
(not means of per-batch means). A `slices` tensor assigns scored positions to named slices (e.g. lag
buckets) and accuracy is also reported per slice as `<prefix>/acc/<slice name>`.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.nn.functional as F

from sessa_bench.tasks.base import IGNORE


class MetricAccumulator:
    def __init__(self, head: str, slice_names: tuple[str, ...] = ()):
        self.head = head
        self.slice_names = tuple(slice_names)
        self.sums: dict[str, float] = defaultdict(float)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor, slices: torch.Tensor | None = None):
        logits = logits.float()
        if self.head == "cls":  # logits (B, C), labels (B,)
            self.sums["loss"] += F.cross_entropy(logits, labels, reduction="sum").item()
            self.sums["correct"] += (logits.argmax(-1) == labels).sum().item()
            self.sums["count"] += labels.numel()
            self.sums["examples_correct"] += (logits.argmax(-1) == labels).sum().item()
            self.sums["examples"] += labels.numel()
            return
        mask = labels != IGNORE  # logits (B, T, V), labels (B, T)
        if not mask.any():
            return
        lg, lb = logits[mask], labels[mask]
        self.sums["loss"] += F.cross_entropy(lg, lb, reduction="sum").item()
        hit = lg.argmax(-1) == lb
        self.sums["correct"] += hit.sum().item()
        k = min(5, lg.shape[-1])
        self.sums["top5"] += (lg.topk(k, -1).indices == lb[:, None]).any(-1).sum().item()
        self.sums["count"] += lb.numel()
        # example-level: every scored position right (== exact match of greedy decoding)
        pos_hit = torch.ones_like(labels, dtype=torch.bool)
        pos_hit[mask] = hit
        has = mask.any(-1)
        self.sums["examples_correct"] += (pos_hit.all(-1) & has).sum().item()
        self.sums["examples"] += has.sum().item()
        if slices is not None and self.slice_names:
            sl = slices[mask]
            for i in sl.unique().tolist():
                if i == IGNORE:
                    continue
                sel = sl == i
                self.sums[f"slice{i}_correct"] += hit[sel].sum().item()
                self.sums[f"slice{i}_count"] += sel.sum().item()

    def compute(self, prefix: str) -> dict[str, float]:
        s = self.sums
        if not s["count"]:
            return {}
        loss = s["loss"] / s["count"]
        out = {f"{prefix}/loss": loss, f"{prefix}/acc": s["correct"] / s["count"]}
        if self.head == "lm":
            out[f"{prefix}/ppl"] = math.exp(min(loss, 50.0))
            out[f"{prefix}/top5"] = s["top5"] / s["count"]
            out[f"{prefix}/example_acc"] = s["examples_correct"] / max(s["examples"], 1)
        for i, name in enumerate(self.slice_names):
            if s.get(f"slice{i}_count"):
                out[f"{prefix}/acc/{name}"] = s[f"slice{i}_correct"] / s[f"slice{i}_count"]
        return out
