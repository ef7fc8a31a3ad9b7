"""Forced decoding: how likely the model finds a given translation of a given source.

Teacher forcing, as in training, but without label smoothing and without dropout: the
decoder reads <bos> y_1 .. y_n and at every position t the model's distribution is
asked for the probability of the true next token, y_{t+1} (then <eos>). The sum

    log P(Y | X) = sum_{t=1..n+1} log P(y_t | y_<t, X),   y_{n+1} = <eos>

is the sentence's log-probability: the number beam search ranks by (before the length
penalty), so scoring the beam's own output gives back the beam's number. One forward
pass scores a whole batch, each target's padding masked out.

    src (B, S), tgt_in (B, T), tgt_out (B, T) int64  ->  token log-probs (B, T) float32
    [(source ids, target ids), ...]                   ->  per pair, n + 1 log-probs
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.batching import collate
from .eval_mode import eval_mode

# Logits held at once, batch x positions x vocabulary (float32: 4 bytes each); batches are
# sized to it, so a large vocabulary takes fewer sentences per pass.
LOGIT_BUDGET = 2 ** 24


@torch.no_grad()
def token_log_probs(model, src: torch.Tensor, tgt_in: torch.Tensor,
                    tgt_out: torch.Tensor) -> torch.Tensor:
    """log P(tgt_out[b, t] | src[b], tgt_in[b, :t+1]): (B, T) float32, 0 where tgt_out is <pad>.

    In eval mode (no dropout), whatever mode the model was in, which it is left in.
    """
    with eval_mode(model):
        logits = model(src, tgt_in).float()  # (B, T, V)
    # log_softmax at the chosen tokens only: logit - logsumexp, without a (B, T, V) copy.
    picked = logits.gather(-1, tgt_out[..., None])[..., 0] - logits.logsumexp(dim=-1)  # (B, T)
    return picked.masked_fill(tgt_out == model.cfg.pad_id, 0.0)


def score_pairs(model, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], bos_id: int,
                eos_id: int, logit_budget: int = LOGIT_BUDGET) -> list[list[float]]:
    """Per pair (source ids, target ids), without <bos>/<eos>: the log-probabilities of
    each target token and then of <eos> (n + 1 floats), in input order.

    Pairs are batched by target length so that little is padding. ValueError for a side
    longer than the model's positions allow (max_len - 1 tokens, the <eos> or <bos> added).
    """
    limit = model.cfg.max_len - 1
    for i, (src_ids, tgt_ids) in enumerate(pairs):
        if len(src_ids) > limit or len(tgt_ids) > limit:
            raise ValueError(f"pair {i}: {len(src_ids)} source and {len(tgt_ids)} target tokens; "
                             f"at most {limit} each (max_len={model.cfg.max_len})")
    device = next(model.parameters()).device
    vocab = model.cfg.tgt_vocab_size
    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][1]), len(pairs[i][0])))
    scores: list[list[float]] = [[] for _ in pairs]
    start = 0
    while start < len(order):
        # Targets come shortest first, so the newest is the longest: grow the batch while
        # (pairs) x (its positions) x (vocabulary) logits fit the budget. One pair always goes.
        end = start + 1
        while end < len(order):
            positions = len(pairs[order[end]][1]) + 1  # the target and <eos>
            if (end + 1 - start) * positions * vocab > logit_budget:
                break
            end += 1
        chunk = order[start:end]
        src, tgt_in, tgt_out = (t.to(device) for t in collate([pairs[i] for i in chunk],
                                                              model.cfg.pad_id, bos_id, eos_id))
        log_probs = token_log_probs(model, src, tgt_in, tgt_out).tolist()  # (b, T)
        for i, row in zip(chunk, log_probs):
            scores[i] = row[: len(pairs[i][1]) + 1]
        start = end
    return scores
