"""The Transformer of "Attention Is All You Need", from scratch in raw PyTorch.

Read the core in this order: config, embeddings, masks, attention, feedforward,
encoder, decoder, model. Then learning and decoding: schedule, loss, decoding, data,
tasks, recipe, train (with distributed, metrics, checkpoint on atomic, averaging),
evaluate, plots, ablate. Then the edges: rundir, commands, cli.
"""

from .attention import MultiHeadAttention, scaled_dot_product_attention
from .config import TransformerConfig
from .decoding import beam_search, greedy_decode
from .masks import causal_mask, padding_mask
from .model import Transformer

__all__ = [
    "TransformerConfig", "Transformer", "MultiHeadAttention",
    "scaled_dot_product_attention", "causal_mask", "padding_mask", "greedy_decode", "beam_search",
]
