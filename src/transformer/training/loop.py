"""The training loop (Section 5): batches in, optimizer updates out, with everything a
long run needs around it.

`train()` reads in one screen: it sets up, then loops, and hands the work to named
functions:

    update()         (below) one optimizer update: `accum_steps` micro-batches, each
                     forward -> label-smoothed loss -> backward, weighted by its share of
                     the update's target tokens; the gradient norm (clipped if asked); the
                     finiteness check, agreed by every rank; Adam; Noam
    evaluate()       (validation.py) validation loss, then BLEU or exact match (the
                     task's), logged
    save()           (inside train) a checkpoint of everything a resume needs (rank 0
                     writes it, with every rank's RNG state); the oldest pruned

Around them: a tqdm progress bar, metrics.jsonl, exact resume (model, optimizer,
scheduler, step, data position, RNG), SIGINT/SIGTERM -> checkpoint and exit 130, a
guard that stops on a non-finite loss or gradient before it reaches the weights; and from
runtime.py bf16 autocast, torch.compile and data-parallel training over the processes
torchrun launches (distributed.py).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..checkpoint.catalogue import prune
from ..checkpoint.format import save_checkpoint
from ..model.config import TransformerConfig
from .distributed import (Distributed, any_rank, gather_objects, global_sum, join, main_first,
                          resolve_device)
from ..errors import UserError
from .loss import label_smoothed_loss
from .metrics import METRICS_FILE, Meter, MetricsLog
from ..model.transformer import Transformer
from .config import TrainConfig
from .resume import Progress, restore, rng_state, set_rng_state, train_state
from .schedule import adam, make_scheduler
from .tasks import Task
from .runtime import autocast, check_precision, use_bf16, wrap_for_training
from .validation import evaluate, format_eval, improves, reached_target

INTERRUPTED_EXIT_CODE = 130


class Interrupted(Exception):
    """Raised after a SIGINT/SIGTERM once the checkpoint is safely written."""


def train(run_dir: Path, model_cfg: TransformerConfig, train_cfg: TrainConfig, task: Task,
          resume: bool = False, quiet: bool = False, model: Transformer | None = None,
          ctx: Distributed | None = None) -> dict:
    """Train `task` into `run_dir`; returns the final evaluation record.

    `model`: train this model rather than a new `Transformer(model_cfg)` (an ablation
    passes one whose attention it changed). `ctx`: the process group the command joined
    (distributed.process_group), else joined here. Raises Interrupted after saving on
    SIGINT/SIGTERM, UserError after saving the last good state when training diverges.
    """
    # Set-up: device, process group, seeds, model, optimizer, schedule, resume.
    if ctx is None:
        ctx = join(resolve_device(train_cfg.device))
    device = ctx.device
    if train_cfg.threads > 0:  # tiny models run faster on one thread than on two
        torch.set_num_threads(train_cfg.threads)
    check_precision(train_cfg, device, ctx)
    torch.manual_seed(train_cfg.seed)
    random.seed(train_cfg.seed)
    model = (model if model is not None else Transformer(model_cfg)).to(device)
    optimizer = adam(model.parameters())
    scheduler = make_scheduler(optimizer, train_cfg.schedule, model_cfg.d_model,
                               train_cfg.warmup, train_cfg.lr_factor)
    progress = restore(run_dir, model, optimizer, scheduler, ctx) if resume else Progress()
    train_model = wrap_for_training(model, train_cfg, ctx)
    stream = task.train_stream(progress.data, ctx.rank, ctx.world_size)

    def save(name: str | None = None) -> None:
        state = train_state(progress, ctx)  # with every rank's RNG state: a collective
        # Rank 0 writes, the others wait: one exiting early would make torchrun stop all.
        def write() -> None:
            save_checkpoint(run_dir, progress.step, model, optimizer, scheduler, state, name=name)
            prune(run_dir, train_cfg.keep_last)

        main_first(ctx, write)

    if ctx.is_main and not quiet:
        print(describe(model, train_cfg, progress.step, ctx), flush=True)
    log = MetricsLog(run_dir / METRICS_FILE, ctx.is_main)
    bar = tqdm(total=train_cfg.steps, initial=progress.step, disable=quiet or not ctx.is_main,
               dynamic_ncols=True, file=sys.stdout, mininterval=1.0)
    say = bar.write if ctx.is_main else (lambda text: None)  # tqdm.write prints on every rank
    meter = Meter(world_size=ctx.world_size)
    start, last_eval = time.time(), {}
    model.train()
    try:
        with StopFlag() as stop:
            while progress.step < train_cfg.steps:
                # One update. A divergence rolls the data position and RNG back to where
                # the update began, so that the saved state is the last good one, whole.
                last_good = (progress.data, rng_state())
                micro, progress.data = next_update(stream, train_cfg.accum_steps, device)
                result = update(train_model, optimizer, scheduler, micro, train_cfg,
                                model_cfg.pad_id, ctx)
                if result.problem:
                    progress.data = last_good[0]
                    set_rng_state(last_good[1])
                    save()
                    where = f"the last good state is saved in {run_dir}" if ctx.is_main \
                        else f"rank {ctx.rank} stopped"  # rank 0 alone writes, and says so
                    raise UserError(f"training diverged: {result.problem} at step "
                                    f"{progress.step + 1}; {where}")
                progress.step += 1
                step = progress.step

                # Logging: a record every `log_every` updates, the progress bar every update.
                meter.add(result.loss_sum, result.nll_sum, result.n_tokens, result.lr)
                if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                    record = meter.record(step, time.time() - start)
                    log.write(record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                                    tok_s=f"{record['tokens_per_s']:.0f}")
                bar.update(1)

                # Every rank must take the same branch below, or some would wait forever.
                out_of_time = train_cfg.max_minutes > 0 and time.time() - start > 60 * train_cfg.max_minutes
                out_of_time, stopping = any_rank(ctx, [out_of_time, stop.requested])
                final = step == train_cfg.steps or out_of_time

                # Evaluation; the best score so far is kept as checkpoints/best.
                if step % train_cfg.eval_every == 0 or final:
                    last_eval = evaluate(model, task, train_cfg, step, final, device)
                    log.write(last_eval)
                    say(format_eval(last_eval))
                    if improves(last_eval, progress):
                        save("best")
                    if reached_target(last_eval, train_cfg):
                        say(f"exact match {last_eval['exact_match']:.1%} reached at step {step}")
                        save()
                        break

                # Checkpoints, and the two ways to stop early: the time budget and a signal.
                if step % train_cfg.save_every == 0 or step == train_cfg.steps:
                    save()
                if out_of_time:
                    say(f"time budget of {train_cfg.max_minutes} minutes reached at step {step}")
                    save()
                    break
                if stopping:
                    save()
                    raise Interrupted(f"interrupted at step {step}; resume with "
                                      f"`transformer train --resume {run_dir}`")
    finally:
        bar.close()
        log.close()
    return dict(last_eval, steps=progress.step, wall_s=time.time() - start)


# --- set-up ---------------------------------------------------------------------------------

def describe(model: nn.Module, train_cfg: TrainConfig, step: int, ctx: Distributed) -> str:
    """The one line that says what is about to be trained, and where."""
    where = f"{ctx.device}" + (f" x {ctx.world_size} processes" if ctx.world_size > 1 else "")
    precision = "bf16" if use_bf16(train_cfg, ctx.device) else "fp32"
    return (f"model: {model.num_parameters():,} parameters; training {train_cfg.task} "
            f"from step {step} to {train_cfg.steps} on {where} in {precision}")


# --- one update -----------------------------------------------------------------------------

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


# --- stop -----------------------------------------------------------------------------------

class StopFlag:
    """SIGINT/SIGTERM ask for a stop at the next update boundary; a second SIGINT stops now."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            os._exit(INTERRUPTED_EXIT_CODE)  # the user insists: checkpoints are atomic, leave now
        self.requested = True

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
