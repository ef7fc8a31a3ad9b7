"""Position-wise feed-forward network (Section 3.3).

    FFN(x) = max(0, x W1 + b1) W2 + b2,   W1: d_model -> d_ff, W2: d_ff -> d_model

applied to every position separately and identically: (B, S, d_model) -> (B, S, d_model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, activation_dropout: float = 0.0) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(activation_dropout)  # not in the paper; 0 by default

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(F.relu(self.w_1(x))))
