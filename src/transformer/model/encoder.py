"""The encoder: a stack of N identical layers (Section 3.1).

Each layer has two sub-layers, multi-head self-attention and a position-wise
feed-forward network, each wrapped in a residual connection and layer normalisation:

    post-LN (the paper):  x = LayerNorm(x + Dropout(Sublayer(x)))
    pre-LN (norm_first):  x = x + Dropout(Sublayer(LayerNorm(x)))

Pre-LN trains more stably without warm-up, and needs one more LayerNorm after the last
layer, because its residual stream is never normalised otherwise.

    x (B, S, D) embedded source, mask (B, 1, 1, S)  ->  memory (B, S, D)
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import MultiHeadAttention
from .config import TransformerConfig
from .feedforward import PositionwiseFeedForward


class EncoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.norm_first = cfg.norm_first
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout,
                                            fused=cfg.attention == "fused")
        self.feed_forward = PositionwiseFeedForward(cfg.d_model, cfg.d_ff, cfg.activation_dropout)
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)  # "residual dropout", Section 5.4

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.norm_first:
            x = x + self.dropout(self.self_attn(self.norm1(x), mask=mask))
            x = x + self.dropout(self.feed_forward(self.norm2(x)))
        else:
            x = self.norm1(x + self.dropout(self.self_attn(x, mask=mask)))
            x = self.norm2(x + self.dropout(self.feed_forward(x)))
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_encoder_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.norm_first else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return self.final_norm(x) if self.final_norm is not None else x
