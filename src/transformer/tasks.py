"""What a run trains on: a synthetic task (copy, reverse, sort) or a translation corpus.

The training loop knows a task only through the `Task` protocol below: exactly the
members it uses, written down once. `make_task` picks the class for a recipe.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from .data.synthetic import TASKS as SYNTHETIC_TASKS
from .data.synthetic import SyntheticTask
from .data.translation import TranslationTask
from .recipe import TrainConfig

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # src (B, S), tgt_in (B, T), tgt_out (B, T)


class Task(Protocol):
    vocab_size: int  # one vocabulary for source and target
    pad_id: int

    def train_stream(self, state: dict | None, rank: int, world_size: int
                     ) -> Iterator[tuple[Batch, dict]]:
        """Training batches forever, each with the stream's position after it (a small dict
        for the checkpoint); `state` is such a position to resume from, None to start.
        Rank `rank` of `world_size` gets its own share of the batches."""

    def eval_batches(self) -> Iterator[Batch]:
        """The held-out batches, the same at every call."""

    def decode_metrics(self, model: nn.Module, train_cfg: TrainConfig, device: torch.device,
                       step: int, final: bool) -> dict:
        """Scores of real decoding on the held-out data at `step`: {"exact_match": ...} or
        {"bleu": ..., "bleu_signature": ...}; may be {} at steps where it is not due."""


def make_task(train_cfg: TrainConfig, run_dir: Path, model_keys: dict, quiet: bool = False) -> Task:
    if train_cfg.task in SYNTHETIC_TASKS:
        return SyntheticTask(train_cfg.task, train_cfg.num_symbols, train_cfg.min_length,
                             train_cfg.max_length, train_cfg.batch_size, train_cfg.seed,
                             train_cfg.eval_examples)
    return TranslationTask(train_cfg, run_dir, max_len=model_keys.get("max_len", 256), quiet=quiet)
