"""The training loop (Section 5): batches in, optimizer updates out, with everything a
long run needs around it.

`train()` reads in one screen: it sets up, then loops, and hands the work to named
functions:

    update()         (update.py) one optimizer update: `accum_steps` micro-batches,
                     weighted by their target tokens; no step at all when anything is
                     not finite on any rank
    evaluate()       (validation.py) validation loss, then BLEU or exact match (the
                     task's), logged
    save_state()     (below) a checkpoint of everything a resume needs (rank 0 writes
                     it, with every rank's RNG state); the oldest pruned

Around them: a tqdm progress bar, metrics.jsonl, exact resume (model, optimizer,
scheduler, step, data position, RNG; resume.py), SIGINT/SIGTERM -> checkpoint and exit
130, a guard that stops on a non-finite loss or gradient before it reaches the weights;
and from runtime.py bf16 autocast, torch.compile and data-parallel training over the
processes torchrun launches (distributed.py).
"""

from __future__ import annotations

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
from ..errors import UserError
from ..model.config import TransformerConfig
from ..model.transformer import Transformer
from .config import TrainConfig
from .distributed import Distributed, join, main_first, rank_max, resolve_device
from .metrics import METRICS_FILE, Meter, MetricsLog
from .resume import Progress, restore, rng_state, set_rng_state, train_state
from .runtime import check_precision, use_bf16, wrap_for_training
from .schedule import BudgetScheduler, adam, make_scheduler
from .tasks import Task
from .update import UpdateResult, next_update, update
from .validation import evaluate, format_eval, improves, out_of_patience, reached_target

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
    run = set_up(run_dir, model_cfg, train_cfg, task, resume, model, ctx)
    ctx, progress = run.ctx, run.progress
    save = lambda name=None: save_state(run, train_cfg.keep_last, name)  # noqa: E731
    report = Report(run_dir, train_cfg, ctx, progress.step, quiet)
    if not quiet:
        report.say(describe(run.model, train_cfg, progress.step, ctx))
    last_eval = {}
    try:
        with StopFlag() as stop:
            while progress.step < train_cfg.steps:
                # One update. A divergence rolls the data position and RNG back to where
                # the update began, so that the saved state is the last good one, whole.
                last_good = (progress.data, rng_state())
                micro, progress.data = next_update(run.stream, train_cfg.accum_steps, ctx.device)
                result = update(run.train_model, run.optimizer, run.scheduler, micro, train_cfg,
                                model_cfg.pad_id, ctx)
                if result.problem:
                    progress.data = last_good[0]
                    set_rng_state(last_good[1])
                    save()
                    raise diverged(result.problem, progress.step + 1, run_dir, ctx)
                progress.step += 1
                step = progress.step
                report.update(step, result)

                # Every rank must take the same branch below, or some would wait forever, and
                # the same rate for the next update: each takes the largest of every rank's
                # flags and share of the budget spent (its clock), in one exchange.
                elapsed, budget_s = report.elapsed(), 60 * train_cfg.max_minutes
                out_of_time = budget_s > 0 and elapsed > budget_s
                spent = budget_spent(train_cfg, step, elapsed, run.done_at_start)
                out_of_time, stopping, spent = rank_max(ctx, [out_of_time, stop.requested, spent])
                out_of_time, stopping = out_of_time > 0, stopping > 0
                final = step == train_cfg.steps or out_of_time
                if train_cfg.cooldown > 0:  # the next update's rate (schedule.py)
                    run.scheduler.spend(spent)

                # Evaluation; the best score so far is kept as checkpoints/best.
                if step % train_cfg.eval_every == 0 or final:
                    last_eval = evaluate(run.model, task, train_cfg, step, final, ctx.device)
                    report.evaluation(last_eval)
                    if improves(last_eval, progress):
                        save("best")
                    if reached_target(last_eval, train_cfg):
                        report.say(f"exact match {last_eval['exact_match']:.1%} reached at "
                                   f"step {step}")
                        save()
                        break
                    if out_of_patience(last_eval, train_cfg, progress):
                        report.say(f"early stop at step {step}: {train_cfg.early_stop_metric} "
                                   f"has not improved for {train_cfg.patience} evaluations")
                        save()
                        break

                # Checkpoints, and the two ways to stop early: the time budget and a signal.
                if step % train_cfg.save_every == 0 or step == train_cfg.steps:
                    save()
                if out_of_time:
                    report.say(f"time budget of {train_cfg.max_minutes} minutes reached at "
                               f"step {step}")
                    save()
                    break
                if stopping:
                    save()
                    raise Interrupted(f"interrupted at step {step}; resume with "
                                      f"`transformer train --resume {run_dir}`")
    finally:
        report.close()
    return dict(last_eval, steps=progress.step, wall_s=report.elapsed())


# --- set-up and what goes around the loop ---------------------------------------------------

@dataclass
class Run:
    """What the loop works with, set up: the model (and the module that trains it, wrapped
    for DDP or compiled), Adam, Noam, the progress so far and the batch stream."""
    run_dir: Path
    ctx: Distributed
    model: nn.Module
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: BudgetScheduler
    progress: Progress
    stream: object
    done_at_start: float  # the share of the budget spent when this process began (a resume)


def set_up(run_dir: Path, model_cfg: TransformerConfig, train_cfg: TrainConfig, task: Task,
           resume: bool, model: nn.Module | None, ctx: Distributed | None) -> Run:
    """Device, process group, seeds, model, optimizer, schedule; the checkpoint on resume."""
    if ctx is None:
        ctx = join(resolve_device(train_cfg.device))
    if train_cfg.threads > 0:  # tiny models run faster on one thread than on two
        torch.set_num_threads(train_cfg.threads)
    check_precision(train_cfg, ctx.device, ctx)
    torch.manual_seed(train_cfg.seed)
    random.seed(train_cfg.seed)
    model = (model if model is not None else Transformer(model_cfg)).to(ctx.device)
    optimizer = adam(model.parameters())
    scheduler = make_scheduler(optimizer, train_cfg.schedule, model_cfg.d_model,
                               train_cfg.warmup, train_cfg.lr_factor, train_cfg.cooldown)
    progress = restore(run_dir, model, optimizer, scheduler, ctx) if resume else Progress()
    train_model = wrap_for_training(model, train_cfg, ctx)
    stream = task.train_stream(progress.data, ctx.rank, ctx.world_size)
    model.train()
    return Run(run_dir, ctx, model, train_model, optimizer, scheduler, progress, stream,
               scheduler.done)


def budget_spent(train_cfg: TrainConfig, step: int, elapsed_s: float,
                 done_at_start: float) -> float:
    """The share of the training budget spent after update `step`: of `steps`, or of
    `max_minutes` where that runs out first. max_minutes counts from a resume, so the time
    it gives stretches over what the cooldown had left (`done_at_start`)."""
    done = step / train_cfg.steps
    if train_cfg.max_minutes > 0:
        by_time = elapsed_s / (60 * train_cfg.max_minutes)
        done = max(done, done_at_start + (1 - done_at_start) * by_time)
    return min(done, 1.0)


def save_state(run: Run, keep_last: int, name: str | None = None) -> None:
    """A checkpoint of everything a resume needs, then the oldest pruned. Every rank calls
    it: each rank's RNG state is gathered; rank 0 writes while the others wait (one
    exiting early would make torchrun stop them all)."""
    state = train_state(run.progress, run.ctx)

    def write() -> None:
        save_checkpoint(run.run_dir, run.progress.step, run.model, run.optimizer, run.scheduler,
                        state, name=name)
        prune(run.run_dir, keep_last)

    main_first(run.ctx, write)


def diverged(problem: str, step: int, run_dir: Path, ctx: Distributed) -> UserError:
    """The one line for a divergence, once the last good state is saved."""
    where = f"the last good state is saved in {run_dir}" if ctx.is_main \
        else f"rank {ctx.rank} stopped"  # rank 0 alone writes, and says so
    return UserError(f"training diverged: {problem} at step {step}; {where}")


class Report:
    """What a run tells: metrics.jsonl (a training record every `log_every` updates, every
    evaluation), the progress bar, and lines printed above it; rank 0 alone."""

    def __init__(self, run_dir: Path, train_cfg: TrainConfig, ctx: Distributed, step: int,
                 quiet: bool) -> None:
        self.train_cfg, self.is_main = train_cfg, ctx.is_main
        self.log = MetricsLog(run_dir / METRICS_FILE, ctx.is_main)
        self.bar = tqdm(total=train_cfg.steps, initial=step, disable=quiet or not ctx.is_main,
                        dynamic_ncols=True, file=sys.stdout, mininterval=1.0)
        self.meter = Meter(world_size=ctx.world_size)
        self.start = time.time()

    def elapsed(self) -> float:
        return time.time() - self.start

    def say(self, text: str) -> None:
        if self.is_main:  # tqdm.write would print on every rank
            self.bar.write(text)

    def update(self, step: int, result: UpdateResult) -> None:
        self.meter.add(result.loss_sum, result.nll_sum, result.n_tokens, result.lr)
        if step % self.train_cfg.log_every == 0 or step == self.train_cfg.steps:
            record = self.meter.record(step, self.elapsed())
            self.log.write(record)
            self.bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                                 tok_s=f"{record['tokens_per_s']:.0f}")
        self.bar.update(1)

    def evaluation(self, record: dict) -> None:
        self.log.write(record)
        self.say(format_eval(record))

    def close(self) -> None:
        self.bar.close()
        self.log.close()


def describe(model: nn.Module, train_cfg: TrainConfig, step: int, ctx: Distributed) -> str:
    """The one line that says what is about to be trained, and where."""
    where = f"{ctx.device}" + (f" x {ctx.world_size} processes" if ctx.world_size > 1 else "")
    precision = "bf16" if use_bf16(train_cfg, ctx.device) else "fp32"
    return (f"model: {model.num_parameters():,} parameters; training {train_cfg.task} "
            f"from step {step} to {train_cfg.steps} on {where} in {precision}")


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
