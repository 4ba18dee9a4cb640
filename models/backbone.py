"""The one macro-architecture all families share:
token embedding -> N blocks (each wrapping a mixer) -> final LayerNorm -> head.

The head is an LM head (logits at every position; tied to the embedding by default) or a class head read at
the last real position of each sequence. Decoding: `init_cache` + `forward(idx, caches)` consume tokens
incrementally, and `generate` decodes greedily; `decode_step` is the fixed-shape step that
models/generate.py replays from a CUDA graph.
"""

from __future__ import annotations

import torch
from torch import nn

from .block import make_block
from .config import ModelConfig
from .mixer import Mixer
from .registry import mixer_class


def build_mixer(cfg: ModelConfig) -> nn.Module:
    return mixer_class(cfg.mixer)(cfg.d_model, cfg.n_heads, **cfg.mixer_kwargs)


class Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(make_block(cfg.block, cfg.d_model, build_mixer(cfg), cfg.mlp_ratio)
                                    for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        if cfg.head == "lm":
            self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
            if cfg.tie_embeddings:
                self.head.weight = self.embed.weight
        else:
            self.head = nn.Linear(cfg.d_model, cfg.n_classes)
        # Every weight keeps PyTorch's default init, as the paper's layer does; the embedding's is N(0, embed_std),
        # 1 by default (PyTorch's). GPT-2's 0.02 (which the committed runs before 2026-11-30 used) made the
        # embedding tens of times smaller than what each default-init block adds to the residual stream, and
        # no model learnt even single-key recall at it (results/sanity/README.md). The LM head is untied by
        # default since a head tied to an N(0, 1) embedding starts with logits sqrt(d_model) wide.
        nn.init.normal_(self.embed.weight, std=cfg.embed_std)

    def compile_blocks(self, **kwargs) -> None:
        """torch.compile each block in place (kwargs go to torch.compile): regional compilation. The blocks
        share their code, so one graph per mode (training, inference) serves all of them and compile time
        does not grow with depth: on CPU, 6 layers compiled in 8 s instead of 26 (attention), 14 s instead of
        57 (Mamba2). Embedding, final norm and head stay eager (a few launches). In place, so the state_dict
        keys do not change; `torch.compiler.set_stance("force_eager")` runs the model eagerly."""
        for block in self.blocks:
            block.compile(**kwargs)

    @property
    def mixers(self):
        return [b.mixer for b in self.blocks]

    def forward(self, idx: torch.Tensor, caches: list | None = None, lengths: torch.Tensor | None = None):
        """idx: (B, T). Returns (B, T, V) logits for the LM head, (B, n_classes) for the class head,
        read at position lengths-1 (default: the last position)."""
        x = self.embed(idx)
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        x = self.ln_f(x)
        if self.cfg.head == "cls":
            last = (lengths - 1) if lengths is not None else torch.full((x.shape[0],), x.shape[1] - 1, device=x.device)
            x = x[torch.arange(x.shape[0], device=x.device), last.to(x.device)]
        return self.head(x)

    def decode_step(self, tok: torch.Tensor, caches: list, pos: torch.Tensor) -> torch.Tensor:
        """One fixed-shape greedy-decoding step: tok (B, 1) at the position held by pos ((1,) int64 on the
        model's device) -> logits (B, V). Writes the caches at pos and leaves pos alone; nothing in it
        syncs with the host, so models/generate.py can capture it in a CUDA graph."""
        x = self.embed(tok)
        for block, cache in zip(self.blocks, caches):
            x = block(x, cache, pos)
        return self.head(self.ln_f(x))[:, -1]

    @property
    def supports_static_decode(self) -> bool:
        """Whether every mixer implements step_static (a user mixer may only have step)."""
        return all(type(m).step_static is not Mixer.step_static for m in self.mixers)

    def init_cache(self, batch_size: int, max_len: int, device=None, dtype=None) -> list:
        device = device or self.embed.weight.device
        dtype = dtype or self.embed.weight.dtype
        return [m.init_cache(batch_size, max_len, device=device, dtype=dtype) for m in self.mixers]

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding: prefill the prompt into the caches, then one token per step."""
        if self.cfg.head != "lm":
            raise ValueError("generate() needs model.head='lm'")
        caches = self.init_cache(idx.shape[0], idx.shape[1] + max_new_tokens)
        logits = self(idx, caches)
        out = [idx]
        for i in range(max_new_tokens):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out.append(nxt)
            if i + 1 < max_new_tokens:
                logits = self(nxt, caches)
        return torch.cat(out, dim=1)
