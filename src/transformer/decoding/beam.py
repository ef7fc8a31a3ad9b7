"""Beam search (Section 6.1: "beam search with a beam size of 4 and length penalty
alpha = 0.6"): the `beam_size` best partial translations per sentence at every step,
finished ones scored with the length penalty of GNMT (Wu et al., 2016).

It runs incrementally, as greedy decoding does (greedy.py); after each step the cache's
rows follow the beams they now hold (`reorder_cache`). `use_cache=False` recomputes
the prefix at every step: the same check as greedy's.

    src (B, S) int64  ->  list of B token-id lists, without <bos> and <eos>
"""

from __future__ import annotations

import math

import torch

from ..model.decoder import keep_rows, reorder_cache
from ..model.masks import padding_mask
from .eval_mode import eval_mode


def gnmt_length_penalty(length: int, alpha: float) -> float:
    """lp(Y) = ((5 + |Y|) / 6) ** alpha, GNMT's length penalty (Wu et al., 2016, eq. 14).

    A finished hypothesis is ranked by log P(Y | X) / lp(Y): without it the sum of
    log-probabilities, which only falls with every token, favours short outputs.
    """
    return ((5.0 + length) / 6.0) ** alpha


@torch.inference_mode()  # no_grad, and no version counters either: 1.05x on the CPU here
def beam_search(model, src: torch.Tensor, beam_size: int = 4, length_penalty: float = 0.6,
                max_len_a: float = 1.0, max_len_b: int = 50, bos_id: int = 1, eos_id: int = 2,
                n_best: int = 1, return_scores: bool = False, use_cache: bool = True) -> list:
    """Beam search over a batch: the `beam_size` best partial outputs per sentence at every step.

    Scoring. A hypothesis Y = y_1 ... y_n <eos> has the log-probability
    L(Y) = sum_t log P(y_t | y_<t, X) (log_softmax in float32, <eos> included) and is
    ranked by L(Y) / lp(Y) with GNMT's lp(Y) = ((5 + |Y|) / 6) ** length_penalty, where
    |Y| counts the generated tokens including <eos> (so n + 1). The paper uses beam 4
    and length_penalty 0.6 (Section 6.1). length_penalty = 0 ranks by L(Y) alone.

    Length. A sentence of n non-pad source tokens gets at most
    floor(max_len_a * n + max_len_b) output tokens, capped by the model's max_len - 1 (and
    at least 1). A hypothesis that reaches that length without <eos> is finished as it
    stands: L(Y) without an <eos> term, |Y| = its length.

    Each step takes the 2 * beam_size best extensions of the open beams (<pad> and <bos>
    are never chosen); those ending in <eos> among the best beam_size are finished and
    frozen, and the best beam_size others stay open. A sentence is done when it has
    beam_size finished hypotheses, when no open beam can still beat its n_best-th best
    finished one, or at its maximum length; the batch stops when all are done. Each
    sentence is searched on its own rows, so results do not depend on the batch.

    src (B, S) int64. Returns, per sentence, the best hypothesis as a token-id list
    without <bos> and <eos>; with `return_scores`, the `n_best` best as a list of
    (tokens, score) pairs, best first, score = L(Y) / lp(Y).
    """
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size={beam_size!r} must be an integer >= 1")
    if isinstance(n_best, bool) or not isinstance(n_best, int) or not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best={n_best!r} must be an integer in [1, beam_size={beam_size}]")
    with eval_mode(model):
        finished = _beam_search(model, src, beam_size, length_penalty, max_len_a, max_len_b,
                                bos_id, eos_id, n_best, use_cache)
    results = []
    for hypotheses in finished:  # per sentence: (score, tokens) in the order they finished
        best = sorted(hypotheses, key=lambda h: h[0], reverse=True)[:n_best]  # a stable sort
        if return_scores:
            results.append([(tokens, score) for score, tokens in best])
        else:
            results.append(best[0][1])
    return results


def _beam_search(model, src, K, alpha, max_len_a, max_len_b, bos_id, eos_id, n_best, use_cache):
    """The search itself; returns per sentence a list of finished (score, tokens)."""
    pad_id = model.cfg.pad_id
    B, device = src.size(0), src.device
    src_lengths = (src != pad_id).sum(dim=1).tolist()
    max_lens = [max(1, min(math.floor(max_len_a * n + max_len_b), model.cfg.max_len - 1))
                for n in src_lengths]

    src_mask = padding_mask(src, pad_id)  # (B, 1, 1, S)
    memory = model.encode(src, src_mask)  # (B, S, D), once
    # Sentence b's K beams live on the K consecutive rows b*K .. b*K + K-1, and stay there:
    # reordering moves beams within a sentence only, so the memory, the source mask and
    # the cross-attention keys/values (all the same on those K rows) never move. When a
    # sentence is done, its K rows leave every tensor and the cache: the sentences after
    # it move up, and the search goes on with fewer rows.
    memory = memory.repeat_interleave(K, dim=0)  # (B*K, S, D)
    src_mask = src_mask.repeat_interleave(K, dim=0)  # (B*K, 1, 1, S)
    first_row = torch.arange(B, device=device)[:, None] * K  # (B, 1)

    tokens = torch.full((B * K, 1), bos_id, dtype=torch.long, device=device)  # (B*K, 1 + t)
    # Open beams' log-probabilities. Only beam 0 is live at first: K beams holding the same
    # <bos> would otherwise offer every extension K times and fill the beam with copies.
    scores = torch.full((B, K), float("-inf"), device=device)  # (B, K) float32
    scores[:, 0] = 0.0
    results: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    finished = list(results)  # the lists of the sentences still searched, in row order
    done = [False] * B
    cache = model.decoder.new_cache(capacity=max(max_lens)) if use_cache else None

    for length in range(1, max(max_lens) + 1):  # `length` tokens generated after this step
        step_in = tokens[:, -1:] if use_cache else tokens  # only the newest token when cached
        logits = model.decode(step_in, memory, src_mask=src_mask, cache=cache)
        log_probs = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (B*K, V)
        log_probs[:, [pad_id, bos_id]] = float("-inf")  # never chosen; the rest not renormalised
        top_scores, top_row, top_token = _best_extensions(scores, log_probs, first_row)
        _finish_ended(finished, done, tokens, top_scores, top_row, top_token, eos_id,
                      gnmt_length_penalty(length, alpha))
        tokens, scores, rows = _keep_open(tokens, top_scores, top_row, top_token, eos_id)
        if cache is not None:
            reorder_cache(cache, rows)
        _mark_done(finished, done, tokens, scores, length, max_lens, alpha, n_best)
        if all(done):
            break
        if any(done):  # a done sentence's rows leave the batch: no more work on them
            keep = [b for b, is_done in enumerate(done) if not is_done]
            index = torch.tensor(keep, device=device)
            rows = (index[:, None] * K + torch.arange(K, device=device)).view(-1)  # (b*K,)
            tokens, scores = tokens.index_select(0, rows), scores.index_select(0, index)
            memory, src_mask = memory.index_select(0, rows), src_mask.index_select(0, rows)
            if cache is not None:
                keep_rows(cache, rows)
            finished = [finished[b] for b in keep]
            max_lens = [max_lens[b] for b in keep]
            done = [False] * len(keep)
            first_row = torch.arange(len(keep), device=device)[:, None] * K
    return results


def _best_extensions(scores, log_probs, first_row):
    """The 2K best one-token extensions of each sentence's open beams, best first.

    scores (B, K) open beams' log-probs, log_probs (B*K, V) of their next token. Returns
    (B, 2K) each: the extension's total log-prob, the row of the beam it extends, its token.
    2K because at most K of them end in <eos> (one per beam), so K open ones remain.
    """
    B, K = scores.shape
    V = log_probs.size(-1)
    candidates = (scores.view(B * K, 1) + log_probs).view(B, K * V)  # (B, K*V)
    top_scores, top_index = candidates.topk(2 * K, dim=1)  # (B, 2K), best first
    return top_scores, first_row + top_index // V, top_index % V


def _finish_ended(finished, done, tokens, top_scores, top_row, top_token, eos_id, lp):
    """Candidates ending in <eos> among the best K: finished, kept apart, never extended.

    Each is recorded with its score L(Y) / lp, lp that of the length the step reached
    (|Y| = length, <eos> included), unless its sentence is already done.
    """
    K = top_scores.size(1) // 2
    ended = (top_token[:, :K] == eos_id) & torch.isfinite(top_scores[:, :K])  # (B, K)
    if not bool(ended.any()):
        return
    for b, j in ended.nonzero().tolist():
        if not done[b]:
            prefix = tokens[top_row[b, j]].tolist()[1:]  # without <bos>; <eos> left off
            finished[b].append((top_scores[b, j].item() / lp, prefix))


def _keep_open(tokens, top_scores, top_row, top_token, eos_id):
    """The best K candidates not ending in <eos> become the open beams.

    Returns the new tokens (B*K, 1 + length), their scores (B, K), and the rows (B*K,)
    their prefixes came from (for the cache to follow).
    """
    K = top_scores.size(1) // 2
    # A stable sort on the <eos> flag moves those candidates to the back and keeps the
    # others in order.
    keep = torch.sort(top_token == eos_id, dim=1, stable=True).indices[:, :K]  # (B, K)
    rows = top_row.gather(1, keep).view(-1)  # (B*K,)
    scores = top_scores.gather(1, keep)  # (B, K)
    new_tokens = top_token.gather(1, keep).view(-1, 1)  # (B*K, 1)
    return torch.cat([tokens.index_select(0, rows), new_tokens], dim=1), scores, rows


def _mark_done(finished, done, tokens, scores, length, max_lens, alpha, n_best):
    """Mark the sentences whose answer can no longer change; at its maximum length a
    sentence's open beams finish as they stand (no <eos> term, |Y| = length)."""
    K = scores.size(1)
    best_open = scores.max(dim=1).values.tolist()  # (B,)
    for b in range(len(done)):
        if done[b]:
            continue
        if length == max_lens[b]:  # out of room: the open beams finish as they stand
            lp = gnmt_length_penalty(length, alpha)  # |Y| = length, no <eos>
            for k, score in enumerate(scores[b].tolist()):
                if math.isfinite(score):
                    finished[b].append((score / lp, tokens[b * K + k].tolist()[1:]))
            done[b] = True
        elif len(finished[b]) >= K:
            done[b] = True
        elif len(finished[b]) >= n_best:
            # An open beam with log-prob L <= 0 can only finish with a log-prob L' <= L
            # (log-probs only fall as tokens are added) at a length n in
            # (length, max_len], so with a score L' / lp(n) <= L / (the largest lp(n)).
            # lp is monotone in n, so the largest is at one end: lp(max_len) for
            # alpha >= 0. If even that cannot beat the n_best-th best finished score,
            # nothing left in this sentence can change the answer.
            lp_max = max(gnmt_length_penalty(length + 1, alpha),
                         gnmt_length_penalty(max_lens[b], alpha))
            nth_best = sorted((h[0] for h in finished[b]), reverse=True)[n_best - 1]
            if best_open[b] / lp_max <= nth_best:
                done[b] = True
