"""One optimizer update (Section 5.3): `accum_steps` micro-batches, each forward ->
label-smoothed loss -> backward, weighted by its share of the update's target tokens;
the gradient's norm (clipped if asked); the finiteness check, agreed by every rank;
then Adam and the Noam schedule, or, when anything is not finite, no step at all.

    micro [(src (B, S), tgt_in (B, T), tgt_out (B, T)), ...]  ->  UpdateResult
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import TrainConfig
from .distributed import Distributed, any_rank, gather_objects, global_sum
from .loss import label_smoothed_loss
from .runtime import autocast


@dataclass
class UpdateResult:
    loss_sum: float  # label-smoothed loss summed over this rank's target tokens
    nll_sum: float
    n_tokens: int  # this rank's real target tokens
    lr: float  # the learning rate the update used
    problem: str | None = None  # what was not finite ("the loss is nan"): no step was taken


def next_update(stream, accum_steps: int, device: torch.device) -> tuple[list, dict]:
    """The micro-batches of one update, on the device, and the stream position after them."""
    micro = []
    for _ in range(accum_steps):
        batch, data_state = next(stream)
        micro.append(tuple(t.to(device, non_blocking=True) for t in batch))
    return micro, data_state


def update(train_model: nn.Module, optimizer, scheduler, micro: list, train_cfg: TrainConfig,
           pad_id: int, ctx: Distributed) -> UpdateResult:
    """One optimizer update over the micro-batches `micro`; no step at all, on any rank, if a
    loss or the gradient is not finite on any rank."""
    counts = [int((tgt_out != pad_id).sum()) for _, _, tgt_out in micro]
    n_tokens = sum(counts)
    # Weight each micro-batch by its share of the update's real target tokens, so that
    # k micro-batches (on every rank) give the gradient of one batch holding all of them:
    # averaging k per-batch means would over-weight the short batches. DDP averages
    # gradients over ranks, hence the factor world_size.
    weight = ctx.world_size / max(global_sum(ctx, n_tokens), 1)
    # loss_sum, nll_sum: on the device till the end, so micro-batches never wait for a read
    sums = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    for i, (src, tgt_in, tgt_out) in enumerate(micro):
        # Gradients are synchronised across ranks once, on the last micro-batch.
        last = i == len(micro) - 1
        no_sync = train_model.no_sync if not last and hasattr(train_model, "no_sync") \
            else contextlib.nullcontext
        with no_sync(), autocast(train_cfg, ctx.device):
            # The loss ignores <pad> targets: the decoder may take its causal fast path.
            logits = train_model(src, tgt_in, pad_outputs_unused=True)
            out = label_smoothed_loss(logits, tgt_out, train_cfg.label_smoothing, pad_id)
        # Backward even after a non-finite loss: under DDP the other ranks wait for this
        # one in the gradients' all-reduce. The step is skipped below, by every rank.
        with no_sync():
            (out.loss * (counts[i] * weight)).backward()
        sums += torch.stack([out.loss.detach().double() * counts[i], out.nll_sum.double()])
    # The gradient's total norm, at every update: a finite loss can still give an infinite
    # gradient. A max_norm of inf measures without clipping.
    max_norm = train_cfg.clip_norm if train_cfg.clip_norm > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(train_model.parameters(), max_norm).to(sums)
    # The update's one read from the device: the guard must know now whether to step.
    loss_sum, nll_sum, grad_norm = torch.cat([sums, norm.reshape(1)]).tolist()
    result = UpdateResult(loss_sum, nll_sum, n_tokens, scheduler.get_last_lr()[0])
    result.problem = divergence(ctx, result.loss_sum, grad_norm)
    if result.problem is None:  # else the weights stay those of the last good update
        optimizer.step()
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return result


def divergence(ctx: Distributed, loss_sum: float, grad_norm: float) -> str | None:
    """What is not finite in this update on any rank, in the same words on every rank ("the
    loss is nan on rank 1"); None, on every rank, when all is finite. (A sum of losses is
    non-finite exactly when one of them is.)"""
    if not any_rank(ctx, [not (math.isfinite(loss_sum) and math.isfinite(grad_norm))])[0]:
        return None
    seen = gather_objects(ctx, (loss_sum, grad_norm))
    # A non-finite loss makes the gradient non-finite too: name the cause, the loss, first.
    for index, what in enumerate(("the loss", "the gradient norm")):
        for rank, values in enumerate(seen):
            if not math.isfinite(values[index]):
                where = f" on rank {rank}" if ctx.world_size > 1 else ""
                return f"{what} is {values[index]}{where}"
    return None
