"""A minimal causal Transformer (torch.nn only, ~100 lines, no harness code but the task) trained on an easy
Diffuse MQAR, to tell whether the harness's models fail at recall because of a bug or because of their
architecture: one block type, position scheme and head tying at a time.

Task (`--task easy`, the default): single-token keys over 16 key tokens, 16 values, 4 pairs (all queried), no
distractors, train lags 4-31 (64 tokens; val lags up to 127, 192 tokens), 50,000 training examples. `--task
table1`: Table 1's own setting (conf/task/diffuse_mqar.yaml with conf/experiment/table1_diffuse_mqar.yaml's
8 pairs and lags 16-255: two-token keys, distractors, 320 tokens; val lags up to 1023), its 500 val sequences.
Training: AdamW (lr, weight decay 0.1), 30 warm-up steps, cosine to 10 %, batch 16, loss on the answer tokens;
val accuracy every 250 steps.

    python scripts/sanity_minimal_mqar.py --block prenorm --pos rope [--tie] [--layers 2 --width 128 --steps 2000]
"""

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sessa_bench.tasks.diffuse_mqar import DiffuseMQAR  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--block", choices=("prenorm", "prenorm_attn_only", "gated", "gated_nogate", "gated_nogelu",
                                      "gated_linear"),
                default="prenorm",
                help="prenorm: LN -> attention -> residual -> LN -> MLP -> residual; gated: the paper's layer, "
                     "x + W_out(attention(GELU(a)) * g) with [a, g] = W_in LN(x)")
ap.add_argument("--task", choices=("easy", "table1"), default="easy")
ap.add_argument("--pos", choices=("learned", "rope"), default="learned")
ap.add_argument("--tie", action="store_true", help="LM head tied to the embedding (N(0, 0.02) init, no bias), "
                                                   "as the harness's Backbone")
ap.add_argument("--emb-std", type=float, default=None,
                help="initialise the embedding N(0, std) (the harness's Backbone: 0.02); default: PyTorch's N(0, 1)")
ap.add_argument("--layers", type=int, default=2)
ap.add_argument("--width", type=int, default=128)
ap.add_argument("--heads", type=int, default=4)
ap.add_argument("--steps", type=int, default=2000)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--identity-init", action="store_true",
                help="gated blocks: start W_in's mixer half and W_out as identities with zero bias, so that "
                     "gated_linear starts as exactly the pre-norm attention-only block")
ap.add_argument("--attn-temp", type=float, default=1.0,
                help="multiply the attention logits by this (SDPA scale = temp / sqrt(head dim)): does a gated "
                     "layer whose logits start small learn recall when they start larger?")
args = ap.parse_args()
torch.manual_seed(0)
torch.set_num_threads(1)
D, H = args.width, args.heads
if args.task == "easy":
    task = DiffuseMQAR(key_len=1, distractor_rate=0.0, key_vocab=16, value_vocab=16, n_pairs=4, n_queries=4,
                       train_lag=(4, 31), n_train=50000, n_val=200, n_test=400)
else:  # the settings Table 1 trains on, from its configs
    from hydra.utils import instantiate  # noqa: E402

    from sessa_bench.compose import compose_train  # noqa: E402
    task = instantiate(compose_train(["experiment=table1_diffuse_mqar"]).task)
train, val = task.dataset("train"), task.dataset("val")


def batch(ds, idx):
    items = [ds[i] for i in idx]
    T = max(len(it["input_ids"]) for it in items)
    x = torch.zeros(len(items), T, dtype=torch.long)
    y, s = torch.full((len(items), T), -100), torch.full((len(items), T), -100)
    for i, it in enumerate(items):
        n = len(it["input_ids"])
        x[i, :n], y[i, :n], s[i, :n] = it["input_ids"], it["labels"], it["slices"]
    return x, y, s


def rope(t):  # (B, H, T, d): rotate interleaved pairs by t * 10000^(-2i/d)
    d, T = t.shape[-1], t.shape[2]
    ang = torch.arange(T)[:, None] * (10000.0 ** (-torch.arange(0, d, 2) / d))[None]
    c, s = ang.cos(), ang.sin()
    t0, t1 = t[..., 0::2], t[..., 1::2]
    return torch.stack((t0 * c - t1 * s, t0 * s + t1 * c), -1).flatten(-2)


LOGIT_STD: list[float] = []


def attend(qkv, x):
    B, T, _ = x.shape
    q, k, v = qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
    if args.pos == "rope":
        q, k = rope(q), rope(k)
    scale = args.attn_temp / math.sqrt(D // H)
    if not LOGIT_STD:  # the first block's attention logits on the first batch: their spread at init
        LOGIT_STD.append((q @ k.transpose(-1, -2) * scale).std().item())
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale).transpose(1, 2).reshape(B, T, D)


class PreNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2, self.qkv, self.o = nn.LayerNorm(D), nn.LayerNorm(D), nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))

    def forward(self, x):
        x = x + self.o(attend(self.qkv, self.ln1(x)))
        return x if args.block == "prenorm_attn_only" else x + self.mlp(self.ln2(x))


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln, self.W_in, self.W_out = nn.LayerNorm(D), nn.Linear(D, 2 * D), nn.Linear(D, D)
        self.qkv, self.o = nn.Linear(D, 3 * D), nn.Linear(D, D, bias=False)
        if args.identity_init:
            with torch.no_grad():
                self.W_in.weight[:D].copy_(torch.eye(D))
                self.W_in.bias[:D].zero_()
                self.W_out.weight.copy_(torch.eye(D))
                self.W_out.bias.zero_()

    def forward(self, x):
        a, g = self.W_in(self.ln(x)).chunk(2, -1)
        # Ablations of the paper's layer: no gate (g = 1), no GELU on the mixer's input, or neither (linear).
        g = 1 if args.block in ("gated_nogate", "gated_linear") else g
        u = a if args.block in ("gated_nogelu", "gated_linear") else F.gelu(a)
        return x + self.W_out(self.o(attend(self.qkv, u)) * g)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(task.vocab_size, D)
        self.pos = nn.Embedding(max(256, task.max_len), D) if args.pos == "learned" else None  # 256: as the logs
        block = Gated if args.block.startswith("gated") else PreNorm
        self.blocks = nn.ModuleList(block() for _ in range(args.layers))
        self.ln = nn.LayerNorm(D)
        self.head = nn.Linear(D, task.vocab_size, bias=not args.tie)
        if args.tie:
            self.head.weight = self.emb.weight
        if args.tie or args.emb_std is not None:
            nn.init.normal_(self.emb.weight, std=0.02 if args.emb_std is None else args.emb_std)

    def forward(self, x):
        h = self.emb(x) + (self.pos(torch.arange(x.shape[1])) if self.pos is not None else 0)
        for b in self.blocks:
            h = b(h)
        return self.head(self.ln(h))


net = Net()
opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.1)
g = torch.Generator().manual_seed(0)
print(f"# {' '.join(sys.argv[1:])}: {sum(p.numel() for p in net.parameters()):,} parameters", flush=True)
t0 = time.time()
for step in range(args.steps):
    warm, cos = min(1, (step + 1) / 30), 0.5 * (1 + math.cos(math.pi * step / args.steps))
    for grp in opt.param_groups:
        grp["lr"] = args.lr * warm * (0.1 + 0.9 * cos)
    x, y, _ = batch(train, torch.randint(len(train), (16,), generator=g).tolist())
    loss = F.cross_entropy(net(x).flatten(0, 1), y.flatten(), ignore_index=-100)
    if step == 0:
        print(f"# attention logits at init (block 0, first batch): std {LOGIT_STD[0]:.3f}", flush=True)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if (step + 1) % 250 == 0:
        with torch.no_grad():
            x, y, s = batch(val, range(len(val)))
            right, m = (net(x).argmax(-1) == y), y >= 0
            by = {task.slice_names[k]: round((right & m & (s == k)).sum().item() / (m & (s == k)).sum().item(), 2)
                  for k in s[m].unique().tolist()}
        print(f"{step + 1} train loss {loss.item():.3f} val acc {(right & m).sum().item() / m.sum().item():.3f} {by} "
              f"{time.time() - t0:.0f}s", flush=True)
