"""The two attention mistakes that `transformer ablate` trains, and how a run trained
with one gets it back when it is loaded.

Both keep the signature of model/attention.py's `scaled_dot_product_attention`;
`with_attention(model, fn)` makes every MultiHeadAttention of one model call `fn` on the
readable path (the fused kernel never would). No recipe key can name a function, so an
ablation variant's config.json says which one it trained with in its "ablation" section
({"variant": NAME, "attention_fn": ...}); `restore_attention(model, ablation)` gives a
model built from that config the same wrong attention, so that translate, serve, explore
and plot all show the variant as it was trained. experiments/ablate.py says why each
mistake hurts.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..model.attention import MultiHeadAttention, scaled_dot_product_attention


def mask_after_softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    mask: torch.Tensor | None = None, dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mistake: softmax over all keys, then zero the masked weights. (..., T, S) weights."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., T, S)
    weights = torch.softmax(scores, dim=-1)  # masked keys take their share of the mass here...
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)  # ...which is thrown away: rows sum to < 1
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights


def unscaled_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    mask: torch.Tensor | None = None, dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mistake: softmax(Q K^T) V, without the 1 / sqrt(d_k); masking done right."""
    # The right function, given queries sqrt(d_k) times larger: its division cancels,
    # and the scores keep a variance of ~ d_k rather than ~ 1.
    return scaled_dot_product_attention(q * math.sqrt(q.size(-1)), k, v, mask, dropout_p)


def with_attention(model: nn.Module, function: Callable) -> nn.Module:
    """Make every MultiHeadAttention of `model` call `function`; returns `model`.

    Only this model changes. Its attention modules go to the readable path, the one
    that calls `attention_fn` (the fused kernel never would).
    """
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.attention_fn = function
            module.fused = False
    return model


# The variants of experiments/ablate.py that change the attention function, by name.
WRONG_ATTENTIONS: dict[str, Callable] = {
    "mask-after-softmax": mask_after_softmax_attention,
    "no-scaling": unscaled_attention,
}


def restore_attention(model: nn.Module, ablation: dict | None) -> nn.Module:
    """Give a model built from an ablation variant's config its wrong attention back
    (nothing for any other run); returns `model`."""
    function = WRONG_ATTENTIONS.get((ablation or {}).get("variant"))
    return with_attention(model, function) if function is not None else model
