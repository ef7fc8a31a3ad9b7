"""The learning-rate schedule of Section 5.3 ("Noam"), and the paper's Adam.

    lrate = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)

The rate grows linearly for the first `warmup` steps, then decays with the inverse
square root of the step. The paper uses warmup = 4000, factor = 1, and Adam with
beta1 = 0.9, beta2 = 0.98, eps = 1e-9. Steps count from 1 (optimizer updates).

The training key `schedule` picks "noam" (the paper's) or "constant": the Noam peak
from the very first update, no warm-up and no decay. The second exists only to show
what warm-up is for (`transformer ablate`, see ablate.py).
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


def noam_lr(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """The learning rate for optimizer update number `step` (1-based)."""
    step = max(step, 1)
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


class NoamScheduler(LambdaLR):
    """`noam_lr` as a torch scheduler: call `.step()` once after every optimizer update.

    LambdaLR multiplies the optimizer's base lr by the lambda, so the optimizer is built
    with lr=1.0 (see `adam`). Its counter starts at 0 for the first update, hence + 1.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, d_model: int, warmup: int,
                 factor: float = 1.0, last_epoch: int = -1) -> None:
        super().__init__(optimizer, lambda i: noam_lr(i + 1, d_model, warmup, factor), last_epoch)


def adam(params, lr: float = 1.0) -> torch.optim.Adam:
    """Adam with the paper's betas (0.9, 0.98) and eps 1e-9 (Section 5.3)."""
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.98), eps=1e-9)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, d_model: int, warmup: int,
                   factor: float = 1.0) -> LambdaLR:
    """The scheduler named by the training key `schedule` ("noam" or "constant")."""
    if schedule == "noam":
        return NoamScheduler(optimizer, d_model, warmup, factor)
    peak = noam_lr(warmup, d_model, warmup, factor)  # "constant": the highest rate Noam reaches
    return LambdaLR(optimizer, lambda i: peak)
