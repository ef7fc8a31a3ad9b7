"""Batches by token count, with length bucketing (Section 5.1), and collation into tensors.

"Sentence pairs were batched together by approximate sequence length. Each training
batch contained a set of sentence pairs containing approximately 25000 source tokens and
25000 target tokens." A fixed number of sentences per batch would waste memory on short
sentences and overflow it on long ones; a token budget keeps each step's work steady.

    example_lengths(pairs_ids)           -> [(S_i, T_i)]     lengths as collate pads them
    token_batches(lengths, batch_tokens) -> [indices, ...]  one array of example indices per batch
    padding_fraction(batches, lengths)   -> float            share of padded positions that are <pad>
    collate(examples, pad, bos, eos)     -> src (B, S), tgt_in (B, T), tgt_out (B, T), int64

The budget counts padded positions, `len(batch) * longest`, on each side separately, so
it bounds the memory a batch really takes, not just its real tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import UserError


def example_lengths(pairs_ids: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[tuple[int, int]]:
    """(source, target) lengths after collate: the source gains <eos>, each target side one token."""
    return [(len(src) + 1, len(tgt) + 1) for src, tgt in pairs_ids]


def _bucket_order(lengths: np.ndarray, shuffle: bool, rng: np.random.Generator) -> np.ndarray:
    """Example indices sorted by longer side, then source length, then target length.

    The longer side first because it is what the budget binds on (on Multi30k this
    wastes about a third less padding than sorting by source length alone). With
    shuffle, ties are broken at random, so examples of equal length meet different
    neighbours each epoch; without it, ties keep their original order.
    """
    src, tgt = lengths[:, 0], lengths[:, 1]
    tie_break = rng.random(len(lengths)) if shuffle else np.arange(len(lengths))
    return np.lexsort((tie_break, tgt, src, np.maximum(src, tgt)))  # the last key sorts first


def _cut(order: np.ndarray, lengths: np.ndarray, batch_tokens: int) -> list[np.ndarray]:
    """Walk the sorted examples and start a new batch when the next one would break the budget."""
    starts, size, max_src, max_tgt = [], 0, 0, 0
    # Plain ints for the walk, one list per side: far faster than indexing numpy scalars,
    # and lengths below 257 are Python's shared small ints (8 bytes a pointer each).
    sources, targets = (lengths[order, side].tolist() for side in (0, 1))
    for position, (src_len, tgt_len) in enumerate(zip(sources, targets)):
        new_src, new_tgt = max(max_src, src_len), max(max_tgt, tgt_len)
        if size and ((size + 1) * new_src > batch_tokens or (size + 1) * new_tgt > batch_tokens):
            starts.append(position)
            size, new_src, new_tgt = 0, src_len, tgt_len
        size += 1
        max_src, max_tgt = new_src, new_tgt
    return np.split(order, starts) if len(order) else []


def token_batches(lengths, batch_tokens: int, shuffle: bool = True,
                  seed: int = 0) -> list[np.ndarray]:
    """Group example indices into batches of about `batch_tokens` padded tokens per side.

    lengths: (source length, target length) per example, already counting <bos>/<eos>
    (see `example_lengths`): a list of pairs or an (n, 2) array. Every batch satisfies, on
    each side, `len(batch) * max(length in batch) <= batch_tokens`, with one exception: an
    example longer than `batch_tokens` on its own forms a batch of one (over the budget,
    but never dropped; filter long sentences beforehand if memory is tight).

    With shuffle, the order of the batches is random too. The result depends only on the
    arguments: pass `seed + epoch` for a new order each epoch that a resumed run replays.
    Every example appears in exactly one batch. The sorting and shuffling are done on
    arrays, so an epoch of millions of pairs is cut in seconds.
    """
    if isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int) or batch_tokens < 1:
        raise UserError(f"batch_tokens: must be a positive integer, got {batch_tokens!r}")
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1, 2)
    rng = np.random.default_rng(seed)
    batches = _cut(_bucket_order(lengths, shuffle, rng), lengths, batch_tokens)
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def padding_fraction(batches: Sequence[Sequence[int]], lengths) -> float:
    """Padding positions / all positions, source and target together (0.0 = no waste)."""
    batches = [np.asarray(batch, dtype=np.int64) for batch in batches if len(batch)]
    if not batches:
        return 0.0
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1, 2)
    sizes = np.array([len(batch) for batch in batches])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    per_example = lengths[np.concatenate(batches)]  # (examples, 2), batch after batch
    longest = np.maximum.reduceat(per_example, starts, axis=0)  # (batches, 2)
    padded = int((sizes[:, None] * longest).sum())
    return 1.0 - int(per_example.sum()) / padded if padded else 0.0


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
    # tolist: ids may come as numpy arrays (views of a prepared corpus) or lists
    sources = [s.tolist() if hasattr(s, "tolist") else list(s) for s, _ in examples]
    targets = [t.tolist() if hasattr(t, "tolist") else list(t) for _, t in examples]
    src = _pad_rows([s + [eos_id] for s in sources], pad_id)
    tgt_in = _pad_rows([[bos_id] + t for t in targets], pad_id)
    tgt_out = _pad_rows([t + [eos_id] for t in targets], pad_id)
    return src, tgt_in, tgt_out
