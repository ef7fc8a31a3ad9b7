"""Batches by token count, with length bucketing (Section 5.1), and collation into tensors.

"Sentence pairs were batched together by approximate sequence length. Each training
batch contained a set of sentence pairs containing approximately 25000 source tokens and
25000 target tokens." A fixed number of sentences per batch would waste memory on short
sentences and overflow it on long ones; a token budget keeps each step's work steady.

    example_lengths(pairs_ids)           -> [(S_i, T_i)]     lengths as collate pads them
    token_batches(lengths, batch_tokens) -> [[index, ...]]   one list of example indices per batch
    padding_fraction(batches, lengths)   -> float            share of padded positions that are <pad>
    collate(examples, pad, bos, eos)     -> src (B, S), tgt_in (B, T), tgt_out (B, T), int64

The budget counts padded positions, `len(batch) * longest`, on each side separately, so
it bounds the memory a batch really takes, not just its real tokens.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from ..errors import UserError


def example_lengths(pairs_ids: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[tuple[int, int]]:
    """(source, target) lengths after collate: the source gains <eos>, each target side one token."""
    return [(len(src) + 1, len(tgt) + 1) for src, tgt in pairs_ids]


def _bucket_order(lengths: Sequence[tuple[int, int]], shuffle: bool, rng: random.Random) -> list[int]:
    """Example indices sorted by longer side, then source length, then target length.

    The longer side first because it is what the budget binds on (on Multi30k this
    wastes about a third less padding than sorting by source length alone). With
    shuffle, ties are broken at random, so examples of equal length meet different
    neighbours each epoch; without it, ties keep their original order.
    """
    tie_break = [rng.random() for _ in lengths] if shuffle else range(len(lengths))

    def key(i: int) -> tuple:
        src_len, tgt_len = lengths[i]
        return max(src_len, tgt_len), src_len, tgt_len, tie_break[i]

    return sorted(range(len(lengths)), key=key)


def _cut(order: Sequence[int], lengths: Sequence[tuple[int, int]], batch_tokens: int) -> list[list[int]]:
    """Walk the sorted examples and start a new batch when the next one would break the budget."""
    batches: list[list[int]] = []
    batch: list[int] = []
    max_src = max_tgt = 0
    for i in order:
        src_len, tgt_len = lengths[i]
        new_src, new_tgt = max(max_src, src_len), max(max_tgt, tgt_len)
        size = len(batch) + 1
        if batch and (size * new_src > batch_tokens or size * new_tgt > batch_tokens):
            batches.append(batch)
            batch, new_src, new_tgt = [], src_len, tgt_len
        batch.append(i)
        max_src, max_tgt = new_src, new_tgt
    if batch:
        batches.append(batch)
    return batches


def token_batches(lengths: Sequence[tuple[int, int]], batch_tokens: int,
                  shuffle: bool = True, seed: int = 0) -> list[list[int]]:
    """Group example indices into batches of about `batch_tokens` padded tokens per side.

    lengths: (source length, target length) per example, already counting <bos>/<eos>
    (see `example_lengths`). Every batch satisfies, on each side,
    `len(batch) * max(length in batch) <= batch_tokens`, with one exception: an example
    longer than `batch_tokens` on its own forms a batch of one (over the budget, but never
    dropped; filter long sentences beforehand if memory is tight).

    With shuffle, the order of the batches is random too. The result depends only on the
    arguments: pass `seed + epoch` for a new order each epoch that a resumed run replays.
    Every example appears in exactly one batch.
    """
    if not isinstance(batch_tokens, int) or batch_tokens < 1:
        raise UserError(f"batch_tokens: must be a positive integer, got {batch_tokens!r}")
    rng = random.Random(seed)
    batches = _cut(_bucket_order(lengths, shuffle, rng), lengths, batch_tokens)
    if shuffle:
        rng.shuffle(batches)
    return batches


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[tuple[int, int]]) -> float:
    """Padding positions / all positions, source and target together (0.0 = no waste)."""
    real = padded = 0
    for batch in batches:
        src = [lengths[i][0] for i in batch]
        tgt = [lengths[i][1] for i in batch]
        real += sum(src) + sum(tgt)
        padded += len(batch) * (max(src, default=0) + max(tgt, default=0))
    return 1.0 - real / padded if padded else 0.0


def _pad_rows(rows: Sequence[list[int]], pad_id: int) -> torch.Tensor:
    """Right-pad lists of ids to the longest: (B, L) int64."""
    width = max(len(row) for row in rows)
    return torch.tensor([row + [pad_id] * (width - len(row)) for row in rows], dtype=torch.int64)


def collate(examples: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int, bos_id: int,
            eos_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A list of (source ids, target ids) -> three int64 tensors, right-padded with pad_id.

        src     (B, S)  x_1 .. x_n <eos>      S = 1 + longest source
        tgt_in  (B, T)  <bos> y_1 .. y_m      T = 1 + longest target; the decoder's input,
        tgt_out (B, T)  y_1 .. y_m <eos>          shifted right against what it must predict

    Position t of tgt_in sees only <bos> y_1 .. y_t (the causal mask) and is trained to
    predict position t of tgt_out.
    """
    if not examples:
        raise ValueError("collate needs at least one example")
    src = _pad_rows([list(s) + [eos_id] for s, _ in examples], pad_id)
    tgt_in = _pad_rows([[bos_id] + list(t) for _, t in examples], pad_id)
    tgt_out = _pad_rows([list(t) + [eos_id] for _, t in examples], pad_id)
    return src, tgt_in, tgt_out
