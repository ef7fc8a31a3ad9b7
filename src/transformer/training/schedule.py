"""The learning-rate schedule of Section 5.3 ("Noam"), a cooldown at the end of a budget,
and the paper's Adam.

    lrate = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)

The rate grows linearly for the first `warmup` steps, then decays with the inverse
square root of the step. The paper uses warmup = 4000, factor = 1, and Adam with
beta1 = 0.9, beta2 = 0.98, eps = 1e-9. Steps count from 1 (optimizer updates).

The training key `schedule` picks "noam" (the paper's) or "constant": the Noam peak
from the very first update, no warm-up and no decay. The second exists only to show
what warm-up is for (`transformer ablate`, see ablate.py).

The inverse square root never reaches zero: a run that ends on a budget (`steps`, or
`max_minutes` of wall time) stops with the rate still high, its weights still moving
around the minimum rather than settling in it. The training key `cooldown` (a fraction,
0 = off) multiplies the rate by a linear ramp down to zero over the last `cooldown` of
the budget, so the last updates take ever smaller steps:

    lrate = schedule(step) * min(1, (1 - done) / cooldown)

where `done` is the share of the budget spent (see `budget_spent` in loop.py).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR


def noam_lr(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """The learning rate for optimizer update number `step` (1-based)."""
    step = max(step, 1)
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def cooldown_factor(done: float, cooldown: float) -> float:
    """What multiplies the rate once a share `done` (0 to 1) of the budget is spent: 1
    until the last `cooldown` of the budget, then falling linearly to 0 at its end."""
    if cooldown <= 0:
        return 1.0
    return min(1.0, max(0.0, (1.0 - done) / cooldown))


class BudgetScheduler(LambdaLR):
    """`rate(update)` (1-based) times the cooldown, as a torch scheduler: call `.step()`
    once after every optimizer update, and `.spend(done)` whenever the share of the budget
    spent is known anew.

    LambdaLR multiplies the optimizer's base lr by the lambda, so the optimizer is built
    with lr=1.0 (see `adam`). Its counter starts at 0 for the first update, hence + 1.
    `done` is part of the state_dict, so a resumed run goes on from where the cooldown was.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, rate: Callable[[int], float],
                 cooldown: float = 0.0, last_epoch: int = -1) -> None:
        self.done = 0.0
        super().__init__(optimizer, lambda i: rate(i + 1) * cooldown_factor(self.done, cooldown),
                         last_epoch)

    def spend(self, done: float) -> None:
        """Set the share of the budget spent, and with it the rate of the coming update."""
        self.done = done
        for group, base_lr, lr_lambda in zip(self.optimizer.param_groups, self.base_lrs,
                                             self.lr_lambdas):
            group["lr"] = base_lr * lr_lambda(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class NoamScheduler(BudgetScheduler):
    """`noam_lr`, with an optional cooldown, as a torch scheduler."""

    def __init__(self, optimizer: torch.optim.Optimizer, d_model: int, warmup: int,
                 factor: float = 1.0, cooldown: float = 0.0, last_epoch: int = -1) -> None:
        super().__init__(optimizer, lambda step: noam_lr(step, d_model, warmup, factor),
                         cooldown, last_epoch)


def adam(params, lr: float = 1.0) -> torch.optim.Adam:
    """Adam with the paper's betas (0.9, 0.98) and eps 1e-9 (Section 5.3)."""
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.98), eps=1e-9)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, d_model: int, warmup: int,
                   factor: float = 1.0, cooldown: float = 0.0) -> BudgetScheduler:
    """The scheduler named by the training key `schedule` ("noam" or "constant")."""
    if schedule == "noam":
        return NoamScheduler(optimizer, d_model, warmup, factor, cooldown)
    peak = noam_lr(warmup, d_model, warmup, factor)  # "constant": the highest rate Noam reaches
    return BudgetScheduler(optimizer, lambda step: peak, cooldown)
