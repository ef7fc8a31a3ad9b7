"""Greedy decoding (Section 6.1's simplest alternative to beam search): the most likely
token at every step.

It runs incrementally: the encoder runs once, the cross-attention keys/values of its
output are computed once, and each step feeds only the newest token, the decoder's
self-attention keys/values of the earlier positions being kept in a per-layer cache
(model/decoder.py `new_cache`, filled by model/attention.py). `use_cache=False`
recomputes the whole prefix at every step instead: slower, the same tokens, and a check
on the cache.

    src (B, S) int64  ->  list of B token-id lists, without <bos> and <eos>
"""

from __future__ import annotations

import torch

from ..model.masks import padding_mask
from .eval_mode import eval_mode


def _trim(row: list[int], eos_id: int, pad_id: int) -> list[int]:
    """Tokens up to (not including) the first <eos>; never any <pad>."""
    if eos_id in row:
        row = row[: row.index(eos_id)]
    return [t for t in row if t != pad_id]


@torch.no_grad()
def greedy_decode(model, src: torch.Tensor, max_len: int, bos_id: int, eos_id: int,
                  use_cache: bool = True) -> list[list[int]]:
    """Greedy decoding of a batch; stops per sentence at <eos>, for the batch when all have.

    `max_len` bounds the number of generated tokens (also by the model's max_len).
    """
    with eval_mode(model):
        pad_id = model.cfg.pad_id
        max_len = min(max_len, model.cfg.max_len - 1)
        src_mask = padding_mask(src, pad_id)  # (B, 1, 1, S), built once
        memory = model.encode(src, src_mask)  # (B, S, D), computed once
        B = src.size(0)
        ys = torch.full((B, 1), bos_id, dtype=torch.long, device=src.device)  # (B, 1 + t)
        finished = torch.zeros(B, dtype=torch.bool, device=src.device)
        # Room for every position the loop can feed: the cache never has to grow.
        cache = model.decoder.new_cache(capacity=max_len) if use_cache else None
        for _ in range(max_len):
            step_in = ys[:, -1:] if use_cache else ys  # only the newest token when cached
            logits = model.decode(step_in, memory, src_mask=src_mask, cache=cache,
                                  last_only=True)[:, -1]  # (B, V)
            logits[:, [pad_id, bos_id]] = float("-inf")  # never emit <pad> or <bos>
            next_token = logits.argmax(-1)  # (B,)
            # A finished sentence gets <pad>: its later tokens are never looked at.
            next_token = next_token.masked_fill(finished, pad_id)
            ys = torch.cat([ys, next_token[:, None]], dim=1)
            finished |= next_token == eos_id
            if bool(finished.all()):
                break
    return [_trim(row, eos_id, pad_id) for row in ys[:, 1:].tolist()]
