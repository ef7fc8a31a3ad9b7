"""Input embeddings and positional encodings (Sections 3.4 and 3.5).

The encoder and the decoder both start from `embedding(token) * sqrt(d_model) +
position(t)`, followed by dropout. Positions are either the paper's fixed sinusoids

    PE(pos, 2i)   = sin(pos / 10000^(2i / d_model))
    PE(pos, 2i+1) = cos(pos / 10000^(2i / d_model))

(a buffer, no parameters) or a learned table (the paper's Table 3, row E).

    tokens (B, S) int64  ->  (B, S, d_model)
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_table(max_len: int, d_model: int) -> torch.Tensor:
    """The fixed (max_len, d_model) table of sinusoids, sines on even columns, cosines on odd."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]  # (max_len, 1)
    # 1 / 10000^(2i / d_model), for i = 0 .. d_model/2 - 1, computed in log space
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32)
                         * (-math.log(10000.0) / d_model))  # (ceil(d_model / 2),)
    angles = position * inv_freq  # (max_len, ceil(d_model / 2))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : d_model // 2])
    return table


class Embeddings(nn.Module):
    """token embedding * sqrt(d_model) + positional encoding, then dropout.

    The token table is passed in rather than created here, so that the model can share
    one table between encoder, decoder and output projection (weight tying, Section 3.4).
    """

    def __init__(self, token_embedding: nn.Embedding, max_len: int, positional: str,
                 dropout: float) -> None:
        super().__init__()
        d_model = token_embedding.embedding_dim
        self.token_embedding = token_embedding
        self.scale = math.sqrt(d_model)
        self.max_len = max_len
        if positional == "sinusoidal":
            # Not persistent: it is a function of (max_len, d_model), not learned state.
            self.register_buffer("positions", sinusoidal_table(max_len, d_model), persistent=False)
            self.learned_positions = None
        else:
            self.positions = None
            self.learned_positions = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """tokens (B, S) -> (B, S, d_model). `start` offsets the positions (incremental decoding)."""
        end = start + tokens.size(1)
        if end > self.max_len:
            raise ValueError(f"sequence of length {end} is longer than max_len={self.max_len}")
        if self.positions is not None:
            pos = self.positions[start:end]  # (S, d_model)
        else:
            pos = self.learned_positions.weight[start:end]
        return self.dropout(self.token_embedding(tokens) * self.scale + pos)
