"""The Transformer of "Attention Is All You Need", from scratch in raw PyTorch.

Read the folders in this order, each a layer on the ones before it (each folder's
__init__.py lists its files in reading order):

    model/         the Transformer itself: config, embeddings, masks, attention,
                   feed-forward, encoder, decoder (imports torch only)
    checkpoint/    a model on disk: crash-safe folders, the format, the catalogue, averaging
    data/          corpora, tokenizer, batches, synthetic sequences
    decoding/      greedy, beam search, sampling, scoring, the one way to translate
    training/      the loop, the loss, the schedule, validation, resume, torchrun
    run/           settings and recipes, the run directory
    experiments/   ablations and plots
    serving/       the translation service, the HTTP server, the explorer page
    cli/           the `transformer` command

This file is the public Python API: `import transformer as T`.
"""

from .decoding.beam import beam_search
from .decoding.greedy import greedy_decode
from .model.attention import MultiHeadAttention, scaled_dot_product_attention
from .model.config import TransformerConfig
from .model.masks import causal_mask, padding_mask
from .model.transformer import Transformer

__all__ = [
    "TransformerConfig", "Transformer", "MultiHeadAttention",
    "scaled_dot_product_attention", "causal_mask", "padding_mask", "greedy_decode", "beam_search",
]
