"""Exact resume: what a checkpoint holds besides the weights, the optimizer and the
scheduler, and how a resumed run gets it back.

    Progress         the step, the data position, the best validation score, and the
                     early-stopping count
    train_state()    Progress plus the RNG states: under torchrun every rank's, since each
                     rank draws its own dropout masks (a collective: every rank calls it)
    restore()        the newest checkpoint into model, optimizer and scheduler; each rank
                     its own RNG state, or rank 0's (with a note) after a change of world size

A resume is exact when the same operations see the same numbers: the weights, Adam's
moments, the schedule, the next batch and the next random draw.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..checkpoint.catalogue import latest_checkpoint
from ..checkpoint.format import load_checkpoint
from ..errors import UserError
from .distributed import Distributed, gather_objects


@dataclass
class Progress:
    """What a checkpoint must hold besides the weights and the optimizer to resume exactly."""
    step: int = 0
    data: dict | None = None  # the task's position in its batch stream
    best: float | None = None  # the best validation score so far (for the "best" checkpoint)
    early_best: float | None = None  # the best early_stop_metric so far, higher is better
    stale: int = 0  # evaluations of early_stop_metric since it last improved


def train_state(progress: Progress, ctx: Distributed) -> dict:
    """What a checkpoint holds besides weights, optimizer and scheduler. Under torchrun each
    rank draws its own dropout masks, so every rank's RNG state is kept ("rng_per_rank";
    "rng" is rank 0's). A collective: every rank calls it."""
    rngs = gather_objects(ctx, rng_state())
    state = {"step": progress.step, "data": progress.data, "rng": rngs[0], "best": progress.best,
             "early_best": progress.early_best, "stale": progress.stale}
    if ctx.world_size > 1:
        state["rng_per_rank"] = rngs
    return state


def restore(run_dir: Path, model: nn.Module, optimizer, scheduler, ctx: Distributed) -> Progress:
    """Load the newest checkpoint of `run_dir` into model, optimizer and scheduler, and its
    RNG state for this rank."""
    latest = latest_checkpoint(run_dir)
    if latest is None:
        raise UserError(f"{run_dir}: no checkpoint to resume from")
    state = load_checkpoint(latest, model, optimizer, scheduler)
    set_rng_state(rank_rng_state(state, ctx, latest))
    return Progress(state["step"], state["data"], state.get("best"), state.get("early_best"),
                    state.get("stale", 0))


def rank_rng_state(state: dict, ctx: Distributed, checkpoint: Path) -> dict:
    """This rank's RNG state from a checkpoint's `train_state`. When the checkpoint holds
    another number of them (another world size, or none per rank), every rank takes rank 0's:
    the run goes on, but draws other dropout masks than an unbroken run; rank 0 says so."""
    per_rank = state.get("rng_per_rank") or [state["rng"]]
    if len(per_rank) == ctx.world_size:
        return per_rank[ctx.rank]
    if ctx.is_main:
        saved = f"{len(per_rank)} process" + ("es" if len(per_rank) > 1 else "")
        print(f"note: {checkpoint} holds the random state of {saved} and this run has "
              f"{ctx.world_size}: the random draws (dropout) differ from an unbroken run's",
              file=sys.stderr)
    return state["rng"]


def rng_state() -> dict:
    """The global RNG states (Python, torch CPU, CUDA): saved in checkpoints for an exact resume."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` captured, so that the next random draw is the same."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
