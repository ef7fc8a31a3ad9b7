"""Ancestral sampling: each output token drawn at random from the model's distribution.

Greedy decoding takes the most likely token at every step, beam search the most likely
sentence it can find. Sampling draws y_t ~ P(. | y_<t, X) instead, one token at a time,
each draw fed back as the next input. Its outputs vary from run to run, and most of
them are worse translations than the beam's: sampling shows the spread of sentences the
model finds plausible, and with it why decoding searches rather than draws.

Two knobs reshape the distribution before each draw:
    temperature T   softmax(logits / T): T < 1 sharpens it (T -> 0 is greedy), T > 1 flattens it
    top_k K         only the K most likely tokens may be drawn (K = 1 is greedy; 0: all of them)

It runs incrementally with the decoder's KV cache, as greedy_decode does (greedy.py).

    src (B, S) int64  ->  list of B token-id lists, without <bos> and <eos>
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch

from ..model.masks import padding_mask
from .eval_mode import eval_mode


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """logits (B, V) -> (B, V) float32: divided by `temperature`, -inf outside the `top_k`
    largest of each row (top_k = 0 keeps the whole row). A softmax of it is what is drawn from."""
    logits = logits.float() / temperature
    if 0 < top_k < logits.size(-1):
        # Exactly k survivors per row (scatter, not a threshold that keeps every tie).
        top = logits.topk(top_k, dim=-1)  # values, indices (B, k)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, top.indices, top.values)
    return logits


def row_generators(seed: int, keys: Sequence[tuple[int, ...]],
                   device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One random generator per row, seeded from (seed, *key) by a hash.

    A row's draws then depend on its key (say: line number, sample number) and on
    nothing else, not on which rows share its batch: line 3 of a file samples the same
    whether the file is translated in batches or typed line by line at the prompt.
    """
    generators = []
    for key in keys:
        digest = hashlib.blake2b(repr((seed, *key)).encode(), digest_size=8).digest()
        generator = torch.Generator(device=device)
        generator.manual_seed(int.from_bytes(digest, "little"))
        generators.append(generator)
    return generators


@torch.no_grad()
def sample_decode(model, src: torch.Tensor, bos_id: int, eos_id: int, temperature: float = 1.0,
                  top_k: int = 0, max_len_a: float = 1.0, max_len_b: int = 50,
                  generators: Sequence[torch.Generator] | None = None) -> list[list[int]]:
    """Sample one output per row of `src`; stops per row at <eos>, for the batch when all have.

    Each row of n source tokens gets at most floor(max_len_a * n + max_len_b) output
    tokens, capped by the model's max_len - 1 (as beam_search). <pad> and <bos> are never
    drawn. `generators`: one torch.Generator per row (see `row_generators`) for draws
    that do not depend on the batch; None draws from torch's global generator.
    """
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature={temperature!r} must be a finite number > 0")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k={top_k!r} must be an integer >= 0 (0: the whole vocabulary)")
    B, device, pad_id = src.size(0), src.device, model.cfg.pad_id
    if generators is not None and len(generators) != B:
        raise ValueError(f"{len(generators)} generators for {B} rows: give one per row")
    lengths = (src != pad_id).sum(dim=1).tolist()
    max_lens = torch.tensor([max(1, min(math.floor(max_len_a * n + max_len_b), model.cfg.max_len - 1))
                             for n in lengths], device=device)  # (B,)

    with eval_mode(model):
        src_mask = padding_mask(src, pad_id)  # (B, 1, 1, S)
        memory = model.encode(src, src_mask)  # (B, S, D), once
        ys = torch.full((B, 1), bos_id, dtype=torch.long, device=device)  # (B, 1 + t)
        finished = torch.zeros(B, dtype=torch.bool, device=device)
        cache = model.decoder.new_cache()
        for step in range(1, int(max_lens.max()) + 1):
            logits = model.decode(ys[:, -1:], memory, src_mask=src_mask, cache=cache,
                                  last_only=True)[:, -1]  # (B, V)
            logits[:, [pad_id, bos_id]] = float("-inf")
            probs = torch.softmax(filter_logits(logits, temperature, top_k), dim=-1)  # (B, V)
            if generators is None:
                next_token = torch.multinomial(probs, 1)[:, 0]  # (B,)
            else:  # row by row, each with its own generator
                next_token = torch.cat([torch.multinomial(p[None], 1, generator=g)[0]
                                        for p, g in zip(probs, generators)])
            next_token = next_token.masked_fill(finished, pad_id)  # a finished row only pads
            ys = torch.cat([ys, next_token[:, None]], dim=1)
            finished |= (next_token == eos_id) | (max_lens == step)
            if bool(finished.all()):
                break
    rows = ys[:, 1:].tolist()
    return [row[: row.index(eos_id)] if eos_id in row else [t for t in row if t != pad_id]
            for row in rows]
