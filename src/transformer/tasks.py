"""Which data a run trains on: a synthetic task or a translation corpus.

Every task object offers the same few things to the training loop: `vocab_size`,
`pad_id`/`bos_id`/`eos_id`, `train_stream(state, rank, world_size)`, `eval_batches()`
and `decode_metrics(model, train_cfg, device, step)`.
"""

from __future__ import annotations

from pathlib import Path

from .data.synthetic import TASKS as SYNTHETIC_TASKS
from .data.synthetic import SyntheticTask
from .recipe import TrainConfig


def make_task(train_cfg: TrainConfig, run_dir: Path, model_keys: dict, quiet: bool = False):
    if train_cfg.task in SYNTHETIC_TASKS:
        return SyntheticTask(train_cfg.task, train_cfg.num_symbols, train_cfg.min_length,
                             train_cfg.max_length, train_cfg.batch_size, train_cfg.seed,
                             train_cfg.eval_examples)
    from .data.translation import TranslationTask
    return TranslationTask(train_cfg, run_dir, max_len=model_keys.get("max_len", 256), quiet=quiet)
