"""Attention masks: which keys each query may look at (Section 3.2.3).

Convention, everywhere in this project: a boolean mask where True = may attend, the
same as `torch.nn.functional.scaled_dot_product_attention`. Masks broadcast against
the attention scores `(B, H, S_q, S_k)` and are applied before the softmax.

    causal_mask(S)              -> (S, S)        query i sees keys 0..i only
    padding_mask(tokens, pad)   -> (B, 1, 1, S)  no query sees a <pad> key

(`torch.nn.Transformer` uses the opposite polarity, True = ignore: convert only at that
boundary, with `~mask`.)
"""

from __future__ import annotations

import torch


def causal_mask(size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(size, size) bool, lower triangle True: position i may attend to positions <= i.

    This is what keeps the decoder auto-regressive: "we mask out (setting to -inf) all
    values in the input of the softmax which correspond to illegal connections".
    """
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()


def padding_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """tokens (B, S) int -> (B, 1, 1, S) bool, False where the key is <pad>."""
    return (tokens != pad_id)[:, None, None, :]


def decoder_self_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """tokens (B, T) -> (B, 1, T, T): causal AND not-a-pad key, for decoder self-attention."""
    return causal_mask(tokens.size(1), tokens.device) & padding_mask(tokens, pad_id)
