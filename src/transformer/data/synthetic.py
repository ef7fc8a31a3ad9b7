"""Synthetic tasks: copy, reverse and sort sequences of random symbols.

The sanity check of any Transformer (The Annotated Transformer does the same): a model
whose masks and schedule are right learns to copy in a few hundred steps, one whose
decoder can peek at the future gets a suspiciously low training loss and then fails to
decode. Nothing is downloaded; every batch is generated from (seed, step), so a resumed
run sees exactly the batches it would have seen, and DDP ranks see different ones.

Ids 0-3 are <pad>, <bos>, <eos>, <unk> as everywhere; symbols are 4 .. 4 + num_symbols - 1.
Held-out examples are drawn once from their own seed and never appear in training.
How the training loop scores them, exact match of greedy decodes, is training/tasks.py's.

    batch -> src (B, S) = symbols + <eos>; tgt_in (B, T) = <bos> + target; tgt_out (B, T) = target + <eos>
"""

from __future__ import annotations

import random

from .batching import collate
from .tokenizer import BOS_ID, EOS_ID, PAD_ID

TASKS = ("copy", "reverse", "sort")
FIRST_SYMBOL = 4


def make_target(task: str, src: list[int]) -> list[int]:
    if task == "copy":
        return list(src)
    if task == "reverse":
        return src[::-1]
    if task == "sort":
        return sorted(src)
    raise ValueError(f"unknown synthetic task {task!r}")


class SyntheticSequences:
    def __init__(self, name: str, num_symbols: int, min_length: int, max_length: int,
                 batch_size: int, seed: int, eval_examples: int) -> None:
        self.name = name
        self.vocab_size = FIRST_SYMBOL + num_symbols
        self.pad_id, self.bos_id, self.eos_id = PAD_ID, BOS_ID, EOS_ID
        self.num_symbols, self.min_length, self.max_length = num_symbols, min_length, max_length
        self.batch_size, self.seed = batch_size, seed
        held_out_rng = random.Random(f"held-out-{seed}")
        self.eval_pairs = [self._pair(held_out_rng) for _ in range(eval_examples)]
        self._held_out = {tuple(src) for src, _ in self.eval_pairs}

    def _pair(self, rng: random.Random) -> tuple[list[int], list[int]]:
        length = rng.randint(self.min_length, self.max_length)
        src = [rng.randrange(FIRST_SYMBOL, self.vocab_size) for _ in range(length)]
        return src, make_target(self.name, src)

    def train_batch(self, step: int, rank: int = 0):
        """The batch of optimizer step `step` (and micro-batch/rank `rank`): a pure function."""
        rng = random.Random(f"train-{self.seed}-{step}-{rank}")
        pairs = []
        while len(pairs) < self.batch_size:
            pair = self._pair(rng)
            if tuple(pair[0]) not in self._held_out:  # held-out means never trained on
                pairs.append(pair)
        return collate(pairs, self.pad_id, self.bos_id, self.eos_id)

    def train_stream(self, state: dict | None, rank: int = 0, world_size: int = 1):
        """Yields (batch, data_state) forever; `state` resumes where a checkpoint left off."""
        index = state["batches"] if state else 0
        while True:
            batch = self.train_batch(index, rank)
            index += 1
            yield batch, {"batches": index}

    def eval_batches(self, batch_size: int = 100):
        for i in range(0, len(self.eval_pairs), batch_size):
            yield collate(self.eval_pairs[i: i + batch_size], self.pad_id, self.bos_id, self.eos_id)

    def to_text(self, ids: list[int]) -> str:
        return " ".join(str(t - FIRST_SYMBOL) for t in ids)
