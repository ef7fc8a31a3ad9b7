"""Attention maps of one forward pass: the weights every attention module computed.

The fused kernel never materialises the weights, so recording switches every
MultiHeadAttention of a model to the readable path, which keeps its last weights:

    with recording_attention(model):
        model(src, tgt_in)
    maps = collect_attention(model)   # {"encoder": [(H, S, S)] per layer,
                                      #  "decoder_self": [(H, T, T)], "cross": [(H, T, S)]}

(batch element 0). The explorer, the server and `transformer plot --attention` all get
their maps through analyze.py, which does this for one sentence.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..model.attention import MultiHeadAttention


@contextlib.contextmanager
def recording_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block every MultiHeadAttention of `model` keeps its last weights.

    Recording switches attention to the readable path, which computes the weights; on
    exit each module gets its earlier setting back. The recorded weights stay, for
    `collect_attention` to read after the block.
    """
    modules = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    before = [m.record_weights for m in modules]
    for m in modules:
        m.record_weights = True
        m.weights = None  # so weights from an earlier pass cannot pass for this one
    try:
        yield model
    finally:
        for m, setting in zip(modules, before):
            m.record_weights = setting


def collect_attention(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    """The weights recorded by the last forward pass, batch element 0, one per layer.

    {"encoder": [(H, S, S)], "decoder_self": [(H, T, T)], "cross": [(H, T, S)]}.
    Run a full forward pass (`model(src, tgt_in)`) inside `recording_attention(model)`
    first; an incremental decoding step records only its newest query row.
    """
    maps = {
        "encoder": [layer.self_attn for layer in model.encoder.layers],
        "decoder_self": [layer.self_attn for layer in model.decoder.layers],
        "cross": [layer.cross_attn for layer in model.decoder.layers],
    }
    for kind, modules in maps.items():
        if any(m.weights is None for m in modules):
            raise RuntimeError(
                f"no {kind} attention weights recorded: run the model inside "
                f"recording_attention(model) before collect_attention"
            )
    return {kind: [m.weights[0] for m in modules] for kind, modules in maps.items()}
