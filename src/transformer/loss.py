"""Label-smoothed cross-entropy that ignores padding (Section 5.4, "Label Smoothing").

"During training, we employed label smoothing of value eps_ls = 0.1. This hurts
perplexity, as the model learns to be more unsure, but improves accuracy and BLEU."

The target distribution puts 1 - eps on the reference token and spreads eps uniformly
over the V - 1 classes other than <pad> (pad gets no mass). Positions whose target is
<pad> count for nothing, in the likelihood term and in the uniform term, and the loss is
normalised by the number of real target tokens. With eps = 0 it is exactly
`F.cross_entropy(..., ignore_index=pad_id)`.

    logits (B, T, V), target (B, T) int64  ->  LossOutput (scalar loss and counts)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossOutput:
    loss: torch.Tensor  # smoothed loss per real token: the one to back-propagate
    nll_sum: float  # un-smoothed negative log-likelihood, summed over real tokens
    n_tokens: int  # real (non-pad) target tokens
    n_correct: int  # of those, how many the argmax got right

    @property
    def nll(self) -> float:
        return self.nll_sum / max(self.n_tokens, 1)

    @property
    def ppl(self) -> float:
        return math.exp(min(self.nll, 50.0))

    @property
    def accuracy(self) -> float:
        return self.n_correct / max(self.n_tokens, 1)


def label_smoothed_loss(logits: torch.Tensor, target: torch.Tensor, epsilon: float,
                        pad_id: int) -> LossOutput:
    V = logits.size(-1)
    lprobs = F.log_softmax(logits.float(), dim=-1)  # (B, T, V); float32 even under bf16
    keep = target != pad_id  # (B, T)
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, T)
    # -sum_k log p_k over every class but <pad>: the uniform part of the target
    uniform = -(lprobs.sum(-1) - lprobs[..., pad_id])  # (B, T)
    per_token = (1.0 - epsilon) * nll + (epsilon / (V - 1)) * uniform
    n_tokens = int(keep.sum())
    loss = per_token.masked_fill(~keep, 0.0).sum() / max(n_tokens, 1)
    with torch.no_grad():
        nll_sum = float(nll.masked_fill(~keep, 0.0).sum())
        n_correct = int(((lprobs.argmax(-1) == target) & keep).sum())
    return LossOutput(loss, nll_sum, n_tokens, n_correct)
