"""One sentence through a model: its translation and everything behind it, as plain JSON.

`analyze(model, vocab, text)` runs beam search for the hypotheses, then ONE teacher-forced
forward pass of them (decoder input <bos> + hypothesis, targets hypothesis + <eos>) for
what the search does not keep: the probability of every output token, the tokens the
model weighed against it at each position and, on request, every attention map.
`analyze_sources` does the same for many sources in batched calls (the server's batches);
its answers are those of `analyze` one source at a time, up to float rounding.

    text (str) -> src (1, S): the source ids + <eos>, S <= max_len
               -> hypotheses, each n tokens; the best one gives T = n + 1 target positions
               -> {"translation": str, ..., "attention": {"encoder": [L][H][S][S], ...}}

The answer holds only lists, dicts, strings, numbers and None, ready for `json.dumps`;
attention weights are rounded to 3 decimals to keep it small (a 30-token sentence in a
6-layer, 8-head model is still some 100,000 numbers).

`vocab` is the run's vocabulary: its BPE `Tokenizer`, or the `SymbolVocabulary` of a
synthetic task ("3 7 1" -> tokens "3", "7", "1"). The source is read as every other
command reads it (data/sources.py): unknown symbols left out; past the limit, refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.batching import collate
from ..data.sources import encode_sources
from ..errors import UserError
from .attention_maps import collect_attention, recording_attention
from .eval_mode import eval_mode
from .translate import DecodingOptions, translate

ATTENTION_DECIMALS = 3
TEACHER_FORCED_ROWS = 32  # hypotheses per teacher-forced pass: its log-probabilities are
# rows x T x vocabulary floats (32 x 30 x 8,000 x 4 bytes = 31 MB)


def encode_source(vocab, text: str, max_len: int) -> list[int]:
    """The source ids of `text` without <eos>; UserError if empty or past the limit `max_len`."""
    if not text.strip():
        raise UserError("text is empty")
    sources = encode_sources(vocab, [text], max_len)
    if not sources.ids[0]:
        raise UserError("text is empty once the symbols the vocabulary lacks are left out")
    if sources.cut:
        raise UserError(f"text is {sources.cut[0]} tokens, longer than the model's limit of "
                        f"{sources.limit} tokens (max_len={max_len})")
    return sources.ids[0]


@torch.no_grad()
def analyze(model, vocab, text: str, options: DecodingOptions, beam: int | None = None,
            n_best: int = 1, attention: bool = False, alternatives: int = 5,
            target=None) -> dict:
    """Translate `text` with beam search as the run decodes (`options`; `beam` overrides
    its beam size) and explain the best translation. `vocab` reads the source; `target`,
    for a run with separate vocabularies, names the output's tokens.

    The answer (T = len(target_tokens), S = len(source_tokens)):
        translation           the best hypothesis as text
        hypotheses            the `n_best` best, best first, each {"text", "score",
                              "log_prob", "tokens"}: score is what beam search ranks by,
                              log_prob / GNMT length penalty; log_prob is the sum of the
                              log-probabilities of its tokens and of the <eos> after them;
                              tokens are its output pieces (no <eos>). A hypothesis cut at
                              the length limit ended without <eos>: its score leaves the
                              <eos> term out, its log_prob does not.
        source_tokens         the model's input: the source pieces, then "<eos>" (S)
        target_tokens         the best hypothesis' pieces, then "<eos>" (T)
        decoder_input_tokens  "<bos>", then the pieces: what the decoder read (T)
        token_probs           P(target_tokens[t] | source, decoder_input_tokens[:t+1]) (T)
        alternatives          per position, the `alternatives` most likely tokens, each
                              {"token", "prob"}, most likely first (<pad> and <bos> left
                              out: decoding never picks them)
        checkpoint            None: the caller fills it in
        attention             (attention=True) {"encoder": [L][H][S][S], "decoder":
                              [L][H][T][T], "cross": [L][H][T][S]}: row t of decoder and
                              cross attention is the query that predicted target_tokens[t];
                              rows sum to 1 (before rounding to 3 decimals)
    UserError for an empty text or one longer than the model's max_len - 1 tokens.
    """
    src_ids = encode_source(vocab, text, model.cfg.max_len)
    return analyze_sources(model, vocab, [src_ids], options, beam, n_best, attention,
                           alternatives, target)[0]


@torch.no_grad()
def analyze_sources(model, vocab, sources: list[list[int]], options: DecodingOptions,
                    beam: int | None = None, n_best: int = 1, attention: bool = False,
                    alternatives: int = 5, target=None) -> list[dict]:
    """`analyze` for many sources at once (ids from `encode_source`), one answer each: beam
    search over all of them in length-sorted batches, then the teacher-forced passes
    `TEACHER_FORCED_ROWS` hypotheses at a time. Attention maps for one source only."""
    if isinstance(alternatives, bool) or not isinstance(alternatives, int) or alternatives < 0:
        raise ValueError(f"alternatives={alternatives!r} must be an integer >= 0")
    if attention and len(sources) != 1:
        raise ValueError("attention maps are recorded for one source at a time")
    found = translate(model, vocab, sources, options, n_best=n_best, beam_size=beam)
    answers = []
    for chunk in _chunks(found, TEACHER_FORCED_ROWS):
        pairs = [(sources[i], tokens) for i in chunk for tokens, _ in found[i]]
        log_probs, maps = _teacher_forced(model, pairs, vocab, attention)
        row = 0
        for i in chunk:
            answers.append(_answer(vocab, target or vocab, sources[i], found[i],
                                   log_probs[row: row + len(found[i])], alternatives))
            row += len(found[i])
    if attention:
        answers[0]["attention"] = _attention_lists(maps, len(answers[0]["target_tokens"]))
    return answers


def _chunks(found, rows: int) -> list[list[int]]:
    """The sources' indices in order, cut where their hypotheses would pass `rows`."""
    chunks, size = [[]], 0
    for i, hypotheses in enumerate(found):
        if chunks[-1] and size + len(hypotheses) > rows:
            chunks.append([])
            size = 0
        chunks[-1].append(i)
        size += len(hypotheses)
    return chunks


def _answer(vocab, out, src_ids: list[int], found, log_probs: torch.Tensor,
            alternatives: int) -> dict:
    """One source's answer (see `analyze`); `log_probs` (n_best, T_max, V) are its rows of
    the teacher-forced pass, the best hypothesis first; `out` is the output's vocabulary."""
    best = found[0][0]
    T = len(best) + 1
    target_ids = best + [out.eos_id]
    return {
        "translation": out.decode(best),
        "hypotheses": [_hypothesis(out, tokens, score, log_probs[i])
                       for i, (tokens, score) in enumerate(found)],
        "source_tokens": _tokens(vocab, src_ids + [vocab.eos_id]),
        "target_tokens": _tokens(out, target_ids),
        "decoder_input_tokens": _tokens(out, [out.bos_id] + best),
        "token_probs": _target_log_probs(log_probs[0], target_ids).exp().tolist(),
        "alternatives": _alternatives(out, log_probs[0, :T], alternatives),
        "checkpoint": None,
    }


def _teacher_forced(model, pairs: list[tuple[list[int], list[int]]], vocab,
                    attention: bool) -> tuple[torch.Tensor, dict | None]:
    """One forward pass of every (source, hypothesis) pair.

    Returns the log-probabilities (N, T_max, V), float32, and with `attention` the maps of
    the first pair (batch element 0) as `collect_attention` gives them, else None.
    """
    device = next(model.parameters()).device
    src, tgt_in, _ = (t.to(device) for t in collate(pairs, vocab.pad_id, vocab.bos_id,
                                                    vocab.eos_id))
    with eval_mode(model):  # no dropout: the probabilities the search saw
        if attention:
            with recording_attention(model):
                logits = model(src, tgt_in)  # (N, T_max, V)
            maps = collect_attention(model)
        else:
            logits, maps = model(src, tgt_in), None  # the fused path: no weights to keep
    # Float32 as beam search scores; <pad>/<bos> are not renormalised away, as there.
    return torch.log_softmax(logits.float(), dim=-1), maps


def _tokens(vocab, ids: Sequence[int]) -> list[str]:
    return [vocab.token(i) for i in ids]


def _hypothesis(vocab, tokens: list[int], score: float,
                log_probs: torch.Tensor) -> dict:
    """One hypothesis as JSON; `log_probs` (T_max, V) is its row of the teacher-forced pass."""
    log_prob = _target_log_probs(log_probs, tokens + [vocab.eos_id]).sum().item()
    return {"text": vocab.decode(tokens), "score": score, "log_prob": log_prob,
            "tokens": _tokens(vocab, tokens)}


def _target_log_probs(log_probs: torch.Tensor, target: list[int]) -> torch.Tensor:
    """log P(target[t]) at each position t: (T,) from `log_probs` (T_max >= T, V)."""
    index = torch.tensor(target, device=log_probs.device)[:, None]  # (T, 1)
    return log_probs[: len(target)].gather(1, index)[:, 0]


def _alternatives(vocab, log_probs: torch.Tensor, k: int) -> list[list[dict]]:
    """The k most likely tokens at each of the T positions of `log_probs` (T, V)."""
    log_probs = log_probs.clone()
    log_probs[:, [vocab.pad_id, vocab.bos_id]] = float("-inf")  # never candidates when decoding
    top = log_probs.topk(min(k, log_probs.size(-1) - 2), dim=-1)
    return [[{"token": vocab.token(i), "prob": p} for i, p in zip(ids, probs)]
            for ids, probs in zip(top.indices.tolist(), top.values.exp().tolist())]


def _attention_lists(maps: dict[str, list[torch.Tensor]], T: int) -> dict:
    """collect_attention's maps as nested lists, cut to the best hypothesis' T positions.

    In the batched pass a shorter best hypothesis was padded; its padding queries are
    dropped here and its padding keys were masked to exactly 0, so its rows still sum to 1.
    """
    def plain(weights: torch.Tensor) -> list:
        # Rounded in float64: a float32 0.004 prints as 0.004000000189989805 in JSON,
        # five times the bytes of the number it stands for.
        return weights.double().round(decimals=ATTENTION_DECIMALS).tolist()

    return {
        "encoder": [plain(w) for w in maps["encoder"]],  # (H, S, S) per layer
        "decoder": [plain(w[:, :T, :T]) for w in maps["decoder_self"]],
        "cross": [plain(w[:, :T]) for w in maps["cross"]],
    }
