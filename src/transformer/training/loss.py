"""Label-smoothed cross-entropy that ignores padding (Section 5.4, "Label Smoothing").

"During training, we employed label smoothing of value eps_ls = 0.1. This hurts
perplexity, as the model learns to be more unsure, but improves accuracy and BLEU."

The target distribution puts 1 - eps on the reference token and spreads eps uniformly
over the V - 1 classes other than <pad> (pad gets no mass). Positions whose target is
<pad> count for nothing, in the likelihood term and in the uniform term, and the loss is
normalised by the number of real target tokens. With eps = 0 it is exactly
`F.cross_entropy(..., ignore_index=pad_id)`.

    logits (B, T, V), target (B, T) int64  ->  LossOutput (0-dim tensors: loss and counts)

Everything it returns is a tensor on the logits' device: the function never reads a
value back to the host, which on a GPU would make the CPU wait for every step to finish
before it could queue the next. Whoever needs numbers (a log line, the NaN guard) reads
them when it needs them, once for many steps if it can.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossOutput:
    loss: torch.Tensor  # smoothed loss per real token: the one to back-propagate
    nll_sum: torch.Tensor  # un-smoothed negative log-likelihood, summed over real tokens (float32)
    n_tokens: torch.Tensor  # real (non-pad) target tokens (int64)
    n_correct: torch.Tensor  # of those, how many the argmax got right (int64)


def label_smoothed_loss(logits: torch.Tensor, target: torch.Tensor, epsilon: float,
                        pad_id: int) -> LossOutput:
    V = logits.size(-1)
    lprobs = F.log_softmax(logits.float(), dim=-1)  # (B, T, V); float32 even under bf16
    keep = target != pad_id  # (B, T)
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, T)
    # -sum_k log p_k over every class but <pad>: the uniform part of the target
    uniform = -(lprobs.sum(-1) - lprobs[..., pad_id])  # (B, T)
    per_token = (1.0 - epsilon) * nll + (epsilon / (V - 1)) * uniform
    n_tokens = keep.sum()  # int64, on the device
    loss = per_token.masked_fill(~keep, 0.0).sum() / n_tokens.clamp(min=1)
    with torch.no_grad():
        nll_sum = nll.masked_fill(~keep, 0.0).sum()
        n_correct = ((lprobs.argmax(-1) == target) & keep).sum()
    return LossOutput(loss, nll_sum, n_tokens, n_correct)
