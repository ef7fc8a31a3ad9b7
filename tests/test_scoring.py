"""Executable spec of scoring.py: forced decoding gives the log-probabilities decoding saw.

A sentence's score is the sum of its tokens' log-probabilities (<eos> included); scored
by teacher forcing it equals what greedy decoding computes token by token with its KV
cache, and what beam search ranks by (times the length penalty); batching and padding
change nothing. The model is the small trained translation run of conftest.py.
"""

from __future__ import annotations

import pytest
import torch

from transformer.data.batching import collate
from transformer.decoding.beam import beam_search, gnmt_length_penalty
from transformer.decoding.greedy import greedy_decode
from transformer.decoding.scoring import score_pairs, token_log_probs
from transformer.run.rundir import load_run

SENTENCES = ["a dog eats the ball .", "the cat likes a book .", "my friend holds the red car .",
             "a woman finds some bread .", "the man sees an apple ."]
MAX_OUT = 20


@pytest.fixture(scope="module")
def run(trained_translation_run):
    _run = load_run(trained_translation_run)
    model, tokenizer = _run.model, _run.source
    return model, tokenizer, [tokenizer.encode(s) for s in SENTENCES]


def batch(tok, ids) -> torch.Tensor:
    return collate([(row, []) for row in ids], tok.pad_id, tok.bos_id, tok.eos_id)[0]


def test_a_score_is_log_softmax_at_each_target_token(run):
    model, tok, ids = run
    target = tok.encode("ein hund isst den ball .")
    [scores] = score_pairs(model, [(ids[0], target)], tok.bos_id, tok.eos_id)
    assert len(scores) == len(target) + 1  # the tokens, then <eos>
    src, tgt_in, tgt_out = collate([(ids[0], target)], tok.pad_id, tok.bos_id, tok.eos_id)
    with torch.no_grad():
        expected = torch.log_softmax(model(src, tgt_in)[0], -1)  # (T, V), computed another way
    expected = expected[torch.arange(len(target) + 1), tgt_out[0]]
    assert torch.allclose(torch.tensor(scores), expected, atol=1e-5)
    assert all(s < 0 for s in scores)


def test_forced_decoding_of_greedy_output_gives_its_incremental_log_probs(run):
    model, tok, ids = run
    src = batch(tok, ids)
    hyps = greedy_decode(model, src, MAX_OUT, tok.bos_id, tok.eos_id)
    forced = score_pairs(model, list(zip(ids, hyps)), tok.bos_id, tok.eos_id)
    for i, hyp in enumerate(hyps):
        # Greedy's own steps, one token at a time with the KV cache, as decoding.py runs them.
        one = src[i: i + 1, : len(ids[i]) + 1]
        memory, cache = model.encode(one), model.decoder.new_cache()
        steps, token = [], tok.bos_id
        with torch.no_grad():
            for nxt in hyp + [tok.eos_id]:
                logits = model.decode(torch.tensor([[token]]), memory, src=one, cache=cache)
                log_probs = torch.log_softmax(logits[0, -1].float(), -1)
                assert nxt == tok.eos_id or int(log_probs[2:].argmax()) + 2 == nxt
                steps.append(log_probs[nxt].item())
                token = nxt
        assert forced[i] == pytest.approx(steps, abs=1e-5)


def test_forced_score_of_beam_hypotheses_is_their_beam_score(run):
    model, tok, ids = run
    found = beam_search(model, batch(tok, ids), beam_size=3, n_best=3, length_penalty=0.6,
                        max_len_a=0, max_len_b=MAX_OUT, bos_id=tok.bos_id, eos_id=tok.eos_id,
                        return_scores=True)
    checked = 0
    for i, hyps in enumerate(found):
        forced = score_pairs(model, [(ids[i], tokens) for tokens, _ in hyps], tok.bos_id, tok.eos_id)
        for (tokens, score), log_probs in zip(hyps, forced):
            assert len(tokens) < MAX_OUT  # each ended with <eos>: its score has that term
            lp = gnmt_length_penalty(len(tokens) + 1, 0.6)
            assert sum(log_probs) == pytest.approx(score * lp, abs=1e-4)
            checked += 1
    assert checked == 15


def test_batching_and_padding_change_nothing(run):
    model, tok, ids = run
    targets = [tok.encode(t) for t in ("ein hund .", "die katze mag ein buch .", "", "das rote auto",
                                       "eine frau findet etwas brot .")]
    pairs = list(zip(ids, targets))
    together = score_pairs(model, pairs, tok.bos_id, tok.eos_id)
    # A budget of one pair's logits at a time: every pair its own batch, no padding.
    one_by_one = score_pairs(model, pairs, tok.bos_id, tok.eos_id, logit_budget=1)
    assert [len(s) for s in together] == [len(t) + 1 for t in targets]
    for a, b in zip(together, one_by_one):
        assert a == pytest.approx(b, abs=1e-5)


def test_padding_positions_score_zero(run):
    model, tok, ids = run
    src, tgt_in, tgt_out = collate([(ids[0], [40, 41, 42, 43]), (ids[1], [44])], tok.pad_id,
                                   tok.bos_id, tok.eos_id)
    scores = token_log_probs(model, src, tgt_in, tgt_out)  # (2, 5)
    assert scores.shape == (2, 5) and scores.dtype == torch.float32
    assert scores[1, 2:].tolist() == [0.0, 0.0, 0.0]  # after <eos>: padding
    assert bool((scores[0] < 0).all()) and bool((scores[1, :2] < 0).all())


def test_longer_than_the_model_allows(run):
    model, tok, ids = run
    limit = model.cfg.max_len - 1
    assert len(score_pairs(model, [(ids[0], [40] * limit)], tok.bos_id, tok.eos_id)[0]) == limit + 1
    for pair in [(ids[0], [40] * (limit + 1)), ([40] * (limit + 1), [41])]:
        with pytest.raises(ValueError, match=f"pair 1: .* at most {limit}"):
            score_pairs(model, [(ids[1], [41]), pair], tok.bos_id, tok.eos_id)


def test_scored_in_eval_mode_and_the_mode_restored(run):
    model, tok, ids = run
    pairs = [(ids[0], tok.encode("ein hund ."))]
    expected = score_pairs(model, pairs, tok.bos_id, tok.eos_id)
    model.train()
    try:
        assert score_pairs(model, pairs, tok.bos_id, tok.eos_id) == expected  # no dropout
        assert model.training
    finally:
        model.eval()
