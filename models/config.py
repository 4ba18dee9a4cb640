"""ModelConfig: everything needed to rebuild a model, as plain JSON-able values."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

HEADS = ("lm", "cls")


@dataclass
class ModelConfig:
    vocab_size: int
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    mixer: str = "sessa"              # registry name or dotted class path (models/registry.py)
    mixer_kwargs: dict = field(default_factory=dict)
    block: str = "gated"              # gated (the paper's layer) | prenorm_mlp (GPT/Mamba block)
    mlp_ratio: int = 4                # prenorm_mlp only
    head: str = "lm"                  # lm: logits per position | cls: class logits at the last position
    n_classes: int = 0
    # Untied, and the embedding at N(0, 1), PyTorch's default: at N(0, 0.02) (GPT-2's, while every other weight
    # here keeps PyTorch's default) no model learnt even single-key recall, and a tied head at std 1 would start
    # with logits sqrt(d_model) wide (results/sanity/README.md). Runs made before 2026-11-30 used 0.02 and tied.
    tie_embeddings: bool = False
    embed_std: float = 1.0

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"model.{name} must be a positive integer, got {v!r}")
        if not (isinstance(self.embed_std, (int, float)) and self.embed_std > 0):
            raise ValueError(f"model.embed_std must be a positive number, got {self.embed_std!r}")
        if self.head not in HEADS:
            raise ValueError(f"model.head={self.head!r} is not one of {HEADS}")
        if self.head == "cls" and self.n_classes < 2:
            raise ValueError(f"model.n_classes must be >= 2 for head='cls', got {self.n_classes}")
        self.mixer_kwargs = dict(self.mixer_kwargs)

    def to_dict(self) -> dict:
        return asdict(self)
