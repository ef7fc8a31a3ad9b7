"""The Transformer itself (Section 3 of "Attention Is All You Need"), read in this order:

    config.py        the hyper-parameters (d_model, n_heads, d_ff, ...) and the presets
    embeddings.py    token embeddings times sqrt(d_model), plus sinusoidal positions (3.4, 3.5)
    masks.py         causal and padding masks, True = may attend (3.2.3)
    attention.py     scaled dot-product attention, then multi-head attention (3.2)
    feedforward.py   the position-wise feed-forward network (3.3)
    encoder.py       N layers of self-attention + feed-forward, residuals, LayerNorm (3.1)
    decoder.py       N layers of masked self-attention, cross-attention, feed-forward (3.1)
    transformer.py   the whole model: embed, encode, decode, project to the vocabulary

This folder imports torch and nothing else of the project but errors: the rest of the
package is built around it.
"""
