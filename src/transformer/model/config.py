"""The model's hyper-parameters in one dataclass, with the paper's presets.

Names follow "Attention Is All You Need" (Vaswani et al., 2017), Table 3:
N = n_encoder_layers = n_decoder_layers, d_model, d_ff, h = n_heads, P_drop = dropout.
`TransformerConfig.base()` and `.big()` are the paper's two models; `.tiny()` is a toy
size for tests and the CPU. Every field is checked in `__post_init__`: a bad value raises
ValueError naming the field and the value, before any tensor is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

TIE_CHOICES = ("all", "decoder", "none")
POSITIONAL_CHOICES = ("sinusoidal", "learned")
ATTENTION_CHOICES = ("fused", "manual")


@dataclass
class TransformerConfig:
    src_vocab_size: int = 8000
    tgt_vocab_size: int = 8000
    d_model: int = 512
    n_heads: int = 8
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1  # P_drop: on the embedding sum and on every sub-layer output
    attention_dropout: float = 0.0  # on the attention weights (not in the paper; helps small data)
    activation_dropout: float = 0.0  # inside the feed-forward, after the ReLU (idem)
    max_len: int = 256  # longest sequence the positional encoding covers
    norm_first: bool = False  # False: post-LN as in the paper; True: pre-LN
    layer_norm_eps: float = 1e-5
    tie_embeddings: str = "all"  # "all" | "decoder" | "none"
    positional: str = "sinusoidal"  # "sinusoidal" | "learned"
    attention: str = "fused"  # "fused" (F.scaled_dot_product_attention) | "manual"
    pad_id: int = 0

    def __post_init__(self) -> None:
        for name in ("src_vocab_size", "tgt_vocab_size", "d_model", "n_heads", "d_ff", "max_len"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("n_encoder_layers", "n_decoder_layers"):
            _check_int(name, getattr(self, name), minimum=1)
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}"
            )
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name}={value!r} must be a number in [0, 1)")
        if not isinstance(self.layer_norm_eps, (int, float)) or self.layer_norm_eps <= 0:
            raise ValueError(f"layer_norm_eps={self.layer_norm_eps!r} must be > 0")
        if not isinstance(self.norm_first, bool):
            raise ValueError(f"norm_first={self.norm_first!r} must be true or false")
        _check_choice("tie_embeddings", self.tie_embeddings, TIE_CHOICES)
        _check_choice("positional", self.positional, POSITIONAL_CHOICES)
        _check_choice("attention", self.attention, ATTENTION_CHOICES)
        if self.tie_embeddings == "all" and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(
                f"tie_embeddings='all' needs one shared vocabulary, but src_vocab_size="
                f"{self.src_vocab_size} and tgt_vocab_size={self.tgt_vocab_size}"
            )
        _check_int("pad_id", self.pad_id, minimum=0)
        if self.pad_id >= min(self.src_vocab_size, self.tgt_vocab_size):
            raise ValueError(f"pad_id={self.pad_id} must be smaller than the vocabulary sizes")

    def replace(self, **changes) -> "TransformerConfig":
        return dataclasses.replace(self, **changes)

    # --- presets --------------------------------------------------------------------
    @classmethod
    def tiny(cls, vocab_size: int = 1000, **overrides) -> "TransformerConfig":
        """A toy model for tests and quick CPU runs (2 + 2 layers, d_model 64)."""
        return cls._preset("tiny", vocab_size, overrides)

    @classmethod
    def base(cls, vocab_size: int = 37000, **overrides) -> "TransformerConfig":
        """Transformer (base), Table 3: N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1."""
        return cls._preset("base", vocab_size, overrides)

    @classmethod
    def big(cls, vocab_size: int = 37000, **overrides) -> "TransformerConfig":
        """Transformer (big), Table 3: N=6, d_model=1024, d_ff=4096, h=16, P_drop=0.3."""
        return cls._preset("big", vocab_size, overrides)

    @classmethod
    def _preset(cls, name: str, vocab_size: int, overrides: dict) -> "TransformerConfig":
        fields = dict(PRESETS[name], src_vocab_size=vocab_size, tgt_vocab_size=vocab_size)
        return cls(**{**fields, **overrides})


PRESETS = {
    "tiny": dict(d_model=64, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=256, dropout=0.1),
    "base": dict(d_model=512, n_heads=8, n_encoder_layers=6, n_decoder_layers=6, d_ff=2048, dropout=0.1),
    "big": dict(d_model=1024, n_heads=16, n_encoder_layers=6, n_decoder_layers=6, d_ff=4096, dropout=0.3),
}


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} must be one of {', '.join(map(repr, choices))}")
