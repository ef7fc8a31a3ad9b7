"""The decoder: a stack of N identical layers (Section 3.1).

Each layer has three sub-layers, each with a residual connection and layer norm
(post-LN or pre-LN, as in encoder.py):
  1. masked multi-head self-attention: position t sees target positions <= t only,
  2. multi-head attention over the encoder output ("encoder-decoder attention"),
  3. the position-wise feed-forward network.

    x (B, T, D) embedded target, memory (B, S, D),
    self_mask (B, 1, T, T) or (T, T), memory_mask (B, 1, 1, S)  ->  (B, T, D)

`self_is_causal` tells the self-attention that the causal mask may stand in for
`self_mask` (see masks.causal_suffices and attention.py): training's fast path.

Incremental decoding passes `cache`, one dict per layer (see `new_cache`), and only the
newest target position(s): self-attention writes their keys/values after the cached
ones, into buffers that grow when full; cross-attention computes the memory's
keys/values on the first step and reuses them.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import MultiHeadAttention
from .config import TransformerConfig
from .feedforward import PositionwiseFeedForward


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.norm_first = cfg.norm_first
        fused = cfg.attention == "fused"
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, fused)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, fused)
        self.feed_forward = PositionwiseFeedForward(cfg.d_model, cfg.d_ff, cfg.activation_dropout)
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.norm3 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor | None,
                memory_mask: torch.Tensor | None, cache: dict | None = None,
                self_is_causal: bool = False) -> torch.Tensor:
        self_cache = cache["self"] if cache is not None else None
        cross_cache = cache["cross"] if cache is not None else None
        if self.norm_first:
            x = x + self.dropout(self.self_attn(self.norm1(x), mask=self_mask, cache=self_cache,
                                                is_causal=self_is_causal))
            x = x + self.dropout(self.cross_attn(self.norm2(x), memory, memory_mask, cross_cache))
            x = x + self.dropout(self.feed_forward(self.norm3(x)))
        else:
            x = self.norm1(x + self.dropout(self.self_attn(x, mask=self_mask, cache=self_cache,
                                                           is_causal=self_is_causal)))
            x = self.norm2(x + self.dropout(self.cross_attn(x, memory, memory_mask, cross_cache)))
            x = self.norm3(x + self.dropout(self.feed_forward(x)))
        return x


class Decoder(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_decoder_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.norm_first else None

    def forward(self, x: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor | None,
                memory_mask: torch.Tensor | None, cache: list[dict] | None = None,
                self_is_causal: bool = False) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, memory, self_mask, memory_mask, cache[i] if cache is not None else None,
                      self_is_causal)
        return self.final_norm(x) if self.final_norm is not None else x

    def new_cache(self, capacity: int | None = None) -> list[dict]:
        """An empty cache for incremental decoding: per layer, self- and cross-attention state.

        capacity: how many target positions the self-attention buffers hold before they
        first grow; pass the longest output a decode can reach to allocate once.
        """
        self_state = {} if capacity is None else {"capacity": capacity}
        return [{"self": dict(self_state), "cross": {}} for _ in self.layers]


def cache_length(cache: list[dict]) -> int:
    """How many target positions the cache already holds."""
    self_state = cache[0]["self"]
    return self_state["k"].size(2) if "k" in self_state else 0


def keep_rows(cache: list[dict], index: torch.Tensor) -> None:
    """Keep only the rows `index` (N,) of the whole cache, self- and cross-attention, in
    place: beam search drops the rows of the sentences it has finished."""
    for layer in cache:
        state, cross = layer["self"], layer["cross"]
        if "k" in state:
            n = state["k"].size(2)
            for name in ("k", "v"):
                # A smaller buffer of the same capacity; only the filled positions copied.
                old = state[name + "_buffer"]
                buffer = old.new_empty((index.numel(), *old.shape[1:]))
                buffer[:, :, :n] = state[name].index_select(0, index)
                state[name + "_buffer"], state[name] = buffer, buffer[:, :, :n]
        for name in ("k", "v"):
            if name in cross:
                cross[name] = cross[name].index_select(0, index)


def reorder_cache(cache: list[dict], index: torch.Tensor) -> None:
    """Keep the rows `index` (N,) of every self-attention cache, in place (beam search).

    Only the filled positions move, and within their buffers: a gather, then a copy back.
    Only self-attention state moves with the beams. The cross-attention keys/values are
    a function of the source sentence alone, and beam search keeps each sentence's beams
    on the rows of that sentence, so they never need reordering (the number of rows
    stays; dropping the rows of finished sentences is `keep_rows`).
    """
    for layer in cache:
        state = layer["self"]
        if "k" not in state:
            continue
        if index.numel() != state["k"].size(0):
            raise ValueError(f"reorder_cache keeps the number of rows: {state['k'].size(0)} "
                             f"rows, an index of {index.numel()}")
        for name in ("k", "v"):
            # A view of the buffer: copying into it updates the buffer itself.
            state[name].copy_(state[name].index_select(0, index))
