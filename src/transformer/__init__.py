"""The Transformer of "Attention Is All You Need", from scratch in raw PyTorch.

Read the core in this order: config, embeddings, masks, attention, feedforward,
encoder, decoder, model. Around it: schedule, loss, decoding, data, train, cli.
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
