"""Attention masks: which keys each query may look at (Section 3.2.3).

Convention, everywhere in this project: a boolean mask where True = may attend, the
same as `torch.nn.functional.scaled_dot_product_attention`. Masks broadcast against
the attention scores `(B, H, S_q, S_k)` and are applied before the softmax.

    causal_mask(S)              -> (S, S)        query i sees keys 0..i only
    padding_mask(tokens, pad)   -> (B, 1, 1, S)  no query sees a <pad> key
    decoder_self_mask(tgt, pad) -> (B, 1, T, T)  both at once, for the decoder
    causal_suffices(mask, keep) -> bool          may a causal kernel stand in for `mask`?

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


def causal_suffices(mask: torch.Tensor, keep: torch.Tensor) -> bool:
    """Whether the plain causal mask gives what `mask` gives at every position `keep` marks.

    mask: bool, broadcastable to (B, 1, T, T), e.g. `decoder_self_mask`; keep: (B, T) bool,
    the positions whose outputs are used (the loss ignores those whose target is <pad>).

    True when in every row (a) the kept positions come first, as with right padding, and
    (b) each kept query's row of `mask` is exactly its causal row. Then a kept query sees
    the same keys under either mask, and all of them are kept positions: layer after
    layer the kept positions compute the same values, and what the causal mask lets the
    others see (the <pad> keys behind them) never reaches a kept one. A left-padded or
    gapped row fails (a); a mask that hides or shows any other key fails (b).

    Worth asking because `F.scaled_dot_product_attention(..., is_causal=True)` reads no
    mask tensor, which lets PyTorch pick its flash kernel. The answer is a Python bool:
    on an accelerator, reading it back waits for the device once.
    """
    T = keep.size(-1)
    gap = (~keep[:, :-1] & keep[:, 1:]).any()  # a kept position right after a dropped one
    differs = (mask != causal_mask(T, mask.device)).any(-1)  # (B, 1, T): query rows not causal
    return not bool(gap | (differs & keep[:, None, :]).any())
