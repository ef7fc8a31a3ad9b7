"""Executable spec of decoding.py: greedy decoding and beam search with the KV cache.

The model is a tiny Transformer trained for a few dozen steps on a toy copy task: enough
that its outputs vary from sentence to sentence and end with <eos> at different lengths,
which is what the search has to cope with.
"""

import math
from types import SimpleNamespace

import pytest
import torch

import transformer as T
from transformer.decoding.beam import beam_search
from transformer.decoding.greedy import greedy_decode
from transformer.model.attention import append_to_cache

PAD, BOS, EOS, VOCAB = 0, 1, 2, 40


def lp(length, alpha):
    """GNMT's length penalty, written out again here so the test does not trust the code's."""
    return ((5 + length) / 6) ** alpha


def toy_batch(lengths, seed):
    """Random sources of the given lengths, padded on the right: (B, max(lengths))."""
    g = torch.Generator().manual_seed(seed)
    src = torch.full((len(lengths), max(lengths)), PAD, dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(3, VOCAB, (n,), generator=g)
    return src


def unpadded(src, i):
    """Sentence i alone, without its padding: (1, n)."""
    n = int((src[i] != PAD).sum())
    return src[i: i + 1, :n]


@pytest.fixture(autouse=True)
def _one_thread():
    # Tensors this small gain nothing from a second thread, which on a busy machine only
    # spins waiting for the first. (Module fixtures are built before this runs: see model.)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(3)
    model = T.Transformer(T.TransformerConfig.tiny(vocab_size=VOCAB, dropout=0.0))
    # 60 steps of sign-SGD (the shape of Adam's first steps, without torch.optim's import
    # time) on "copy the source, then <eos>": half-trained, so the outputs are varied.
    g = torch.Generator().manual_seed(3)
    for step in range(60):
        body = torch.randint(3, VOCAB, (16, 2 + step % 7), generator=g)
        tgt = torch.cat([torch.full((16, 1), BOS), body, torch.full((16, 1), EOS)], dim=1)
        logits = model(body, tgt[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tgt[:, 1:].reshape(-1))
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 5e-3 * p.grad.sign()
                p.grad = None
    torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def src():
    return toy_batch([3, 7, 5, 9, 4, 6, 8, 2, 5, 7, 3, 6], seed=1)


@torch.no_grad()
def rescore(model, src_row, tokens, max_len, alpha):
    """The model's own score of a returned hypothesis, by teacher forcing: L(Y) / lp(Y).

    A hypothesis shorter than `max_len` ended with <eos>, which is scored too; one of
    exactly `max_len` tokens was cut at the limit and has no <eos> term.
    """
    target = tokens + [EOS] if len(tokens) < max_len else tokens
    tgt_in = torch.tensor([[BOS] + target[:-1]])
    log_probs = model(src_row, tgt_in)[0].float().log_softmax(-1)  # (len(target), V)
    total = log_probs[torch.arange(len(target)), torch.tensor(target)].sum().item()
    return total / lp(len(target), alpha)


def reference_beam_search(model, src_row, K, alpha, max_len, n_best):
    """The same search written plainly for one sentence: Python lists, no cache, no batch.

    It stops only at K finished hypotheses or at max_len, never on the score bound, so
    agreeing with it (for n_best < K, where the bound can fire) also checks that the
    bound never changes the answer.
    """
    beams = [(0.0, [])]  # (log-prob, tokens); one live beam to start
    finished = []  # (score, tokens)
    for length in range(1, max_len + 1):
        tgt_in = torch.tensor([[BOS] + tokens for _, tokens in beams])
        with torch.no_grad():
            logits = model(src_row.expand(len(beams), -1), tgt_in)[:, -1]
        log_probs = logits.float().log_softmax(-1)
        log_probs[:, [PAD, BOS]] = float("-inf")
        candidates = [(score + lp_v, tokens + [v])
                      for (score, tokens), row in zip(beams, log_probs.tolist())
                      for v, lp_v in enumerate(row)]
        candidates = sorted(candidates, key=lambda c: c[0], reverse=True)[: 2 * K]
        finished += [(s / lp(length, alpha), t[:-1]) for s, t in candidates[:K] if t[-1] == EOS]
        beams = [c for c in candidates if c[1][-1] != EOS][:K]
        if length == max_len:
            finished += [(s / lp(length, alpha), t) for s, t in beams]
        if len(finished) >= K:
            break
    best = sorted(finished, key=lambda h: h[0], reverse=True)[:n_best]
    return [(tokens, score) for score, tokens in best]


class Biased(torch.nn.Module):
    """A model with constants added to some logits, e.g. {EOS: -inf}: it never ends."""

    def __init__(self, model, bias):
        super().__init__()
        self.model, self.cfg, self.decoder, self.bias = model, model.cfg, model.decoder, bias

    def encode(self, *args, **kwargs):
        return self.model.encode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        logits = self.model.decode(*args, **kwargs)
        for token, value in self.bias.items():
            logits[..., token] += value
        return logits


class Scripted(torch.nn.Module):
    """A stand-in model whose next-token probabilities come from a table keyed by the prefix.

    `table` maps a prefix (tuple of tokens after <bos>) to {token: probability}; the rest
    of the mass goes to the other tokens (<eos> and 3 .. V-1), a little less to each
    next one so that no two tie. Unlisted prefixes get `default`. The prefix of every row
    is kept in the self-attention cache slot ("k"), so the search's reorder_cache moves it
    with the beams exactly as it moves real keys and values.
    """

    def __init__(self, table, default=None, vocab=10):
        super().__init__()
        self.table, self.default, self.vocab = table, default or {EOS: 0.05}, vocab
        self.cfg = T.TransformerConfig.tiny(vocab_size=vocab)  # pad_id and max_len
        self.decoder = SimpleNamespace(new_cache=lambda capacity=None: [{"self": {}, "cross": {}}])
        self.steps = 0  # calls to decode

    def encode(self, src, src_mask=None):
        return torch.zeros(src.size(0), src.size(1), 1)

    def decode(self, tgt_in, memory, src=None, src_mask=None, cache=None):
        self.steps += 1
        state = cache[0]["self"]
        new = tgt_in[:, None, :, None].float()  # (N, 1, 1, 1) like keys (N, H, T, d_k)
        keys, _ = append_to_cache(state, new, new)  # as the real self-attention stores them
        prefixes = keys[:, 0, 1:, 0].long().tolist()  # (N, t) without <bos>
        return torch.stack([self.log_probs(tuple(p)) for p in prefixes])[:, None, :]  # (N, 1, V)

    def log_probs(self, prefix):
        probs = self.table.get(prefix, self.default)
        others = [t for t in [EOS, *range(3, self.vocab)] if t not in probs]
        weights = torch.tensor([1.0 / (1 + i) for i in range(len(others))])
        row = torch.zeros(self.vocab)  # <pad> and <bos> keep probability 0
        row[others] = (1 - sum(probs.values())) * weights / weights.sum()
        for token, p in probs.items():
            row[token] = p
        return row.log()


# --- greedy ----------------------------------------------------------------------------

def test_incremental_greedy_equals_recomputing_the_prefix(model, src):
    cached = greedy_decode(model, src, 12, BOS, EOS)
    recomputed = greedy_decode(model, src, 12, BOS, EOS, use_cache=False)
    assert cached == recomputed
    # The model is not degenerate: outputs differ in content and in length.
    assert len({tuple(out) for out in cached}) >= 6
    assert len({len(out) for out in cached}) >= 3


def cut_limit(model, src):
    """A max length one below the longest greedy output: some outputs end before it and
    some are cut at it. (The half-trained model decides how long its outputs are; how
    long exactly moves with PyTorch's numerics from version to version.)"""
    return max(len(out) for out in greedy_decode(model, src, 12, BOS, EOS)) - 1


def test_greedy_stops_at_eos_and_never_emits_pad_or_bos(model, src):
    limit = cut_limit(model, src)
    outputs = greedy_decode(model, src, limit, BOS, EOS)
    assert any(len(out) < limit for out in outputs) and any(len(out) == limit for out in outputs)
    for i, out in enumerate(outputs):
        assert len(out) <= limit and not {PAD, BOS, EOS} & set(out)
        # Teacher-forced argmax reproduces the output, and predicts <eos> right after it
        # unless the output was cut at max_len.
        with torch.no_grad():
            logits = model(unpadded(src, i), torch.tensor([[BOS] + out]))[0]
        logits[:, [PAD, BOS]] = float("-inf")
        expected = out + [EOS] if len(out) < limit else out + [logits[-1].argmax().item()]
        assert logits.argmax(-1).tolist() == expected


def test_cached_decoding_equals_recomputing_past_the_caches_first_capacity(monkeypatch):
    """A random model (it rarely ends a sentence) decodes 20 tokens per sentence with caches
    that start with room for one position, so their buffers are outgrown again and again
    (and beam search reorders them at every step): greedy and beam search give what they
    give without a cache, recomputing the whole prefix at every step."""
    torch.manual_seed(5)
    model = T.Transformer(T.TransformerConfig.tiny(vocab_size=VOCAB, dropout=0.0)).eval()
    new_cache = model.decoder.new_cache
    monkeypatch.setattr(model.decoder, "new_cache", lambda capacity=None: new_cache(capacity=1))
    src = toy_batch([3, 7, 5, 9], seed=4)

    cached = greedy_decode(model, src, 20, BOS, EOS)
    assert cached == greedy_decode(model, src, 20, BOS, EOS, use_cache=False)
    assert max(len(out) for out in cached) == 20
    kwargs = dict(beam_size=3, n_best=3, max_len_a=0, max_len_b=20, return_scores=True)
    beams = beam_search(model, src, **kwargs)
    recomputed = beam_search(model, src, use_cache=False, **kwargs)
    assert [[t for t, _ in h] for h in beams] == [[t for t, _ in h] for h in recomputed]
    for hypotheses, again in zip(beams, recomputed):
        assert [s for _, s in hypotheses] == pytest.approx([s for _, s in again], abs=1e-5)
    assert max(len(t) for h in beams for t, _ in h) > 10


# --- beam search -----------------------------------------------------------------------

def test_beam_size_one_is_greedy(model, src):
    # One max length for all: max_len_a=0.
    assert beam_search(model, src, beam_size=1, max_len_a=0, max_len_b=12) == \
        greedy_decode(model, src, 12, BOS, EOS)
    # Per-sentence max lengths floor(a * n + b): compare sentence by sentence.
    beams = beam_search(model, src, beam_size=1, max_len_a=0.5, max_len_b=2)
    for i, out in enumerate(beams):
        n = int((src[i] != PAD).sum())
        assert out == greedy_decode(model, src[i: i + 1], int(0.5 * n + 2), BOS, EOS)[0]


def test_n_best_hypotheses_are_distinct_and_sorted_best_first(model, src):
    results = beam_search(model, src, beam_size=4, n_best=4, max_len_b=6, return_scores=True)
    best_only = beam_search(model, src, beam_size=4, max_len_b=6)
    assert len(results) == len(best_only) == src.size(0)
    for hypotheses, best in zip(results, best_only):
        assert len(hypotheses) == 4
        scores = [score for _, score in hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(tokens) for tokens, _ in hypotheses}) == 4
        assert hypotheses[0][0] == best


@pytest.mark.parametrize("alpha", [0.6, 0.0])
def test_scores_are_the_models_own_score_of_frozen_hypotheses(model, src, alpha):
    """Every hypothesis returned scores exactly what the model gives it by teacher forcing.

    A finished hypothesis that was extended, or recorded from the wrong beam after a
    reorder, or scored with the wrong length, would not.
    """
    max_len = cut_limit(model, src)
    results = beam_search(model, src, beam_size=4, n_best=4, length_penalty=alpha,
                          max_len_a=0, max_len_b=max_len, return_scores=True)
    lengths = set()
    for i, hypotheses in enumerate(results):
        for tokens, score in hypotheses:
            assert len(tokens) <= max_len and not {PAD, BOS, EOS} & set(tokens)
            expected = rescore(model, unpadded(src, i), tokens, max_len, alpha)
            assert score == pytest.approx(expected, abs=1e-4)
            lengths.add(len(tokens))
    # Both kinds occurred: ended with <eos> (shorter) and cut at the limit.
    assert max_len in lengths and len(lengths) >= 3


def test_batched_search_equals_one_sentence_at_a_time(model, src):
    batched = beam_search(model, src, beam_size=4, n_best=2, max_len_a=1.0, max_len_b=3,
                          return_scores=True)
    for i, hypotheses in enumerate(batched):
        alone = beam_search(model, unpadded(src, i), beam_size=4, n_best=2, max_len_a=1.0,
                            max_len_b=3, return_scores=True)[0]
        assert [tokens for tokens, _ in hypotheses] == [tokens for tokens, _ in alone]
        assert [s for _, s in hypotheses] == pytest.approx([s for _, s in alone], abs=1e-5)


def test_never_emits_pad_or_bos_even_when_the_model_prefers_them(model, src):
    loves_pad = Biased(model, {PAD: 20.0, BOS: 20.0})
    for hypotheses in beam_search(loves_pad, src, n_best=4, max_len_b=5, return_scores=True):
        assert all(not {PAD, BOS} & set(tokens) for tokens, _ in hypotheses)
    # Greedy's choice among the other tokens does not change at all.
    assert greedy_decode(loves_pad, src, 8, BOS, EOS) == greedy_decode(model, src, 8, BOS, EOS)


A, B = 3, 4  # two ordinary tokens of the scripted model
LONGER_WINS = {(): {EOS: 0.5, A: 0.45}, (A,): {A: 0.99}, (A, A): {A: 0.99}, (A, A, A): {EOS: 0.99}}


def test_a_longer_hypothesis_can_win_after_the_best_one_ended():
    """Do not stop because the top hypothesis ended: a longer open one can still win.

    <eos> is the most likely first token (0.5), but "a a a <eos>" (0.45 * 0.99^3) has a
    better length-normalised score. The search must keep going: after step 1 the open
    beam "a" (log 0.45 = -0.80) is below the finished score (log 0.5 = -0.69), yet it can
    still reach -0.80 / lp(max_len); a bound using the current length would prune it.
    """
    model = Scripted(LONGER_WINS)
    [[(tokens, score)]] = beam_search(model, torch.tensor([[5, 6, 7]]), beam_size=2,
                                      max_len_a=0, max_len_b=8, return_scores=True)
    assert tokens == [A, A, A]
    assert score == pytest.approx(math.log(0.45 * 0.99 ** 3) / lp(4, 0.6), abs=1e-6)


def test_a_done_sentence_gains_nothing_while_the_batch_runs_on():
    """The same script for two sentences with max lengths 2 and 6 (a=1, b=0): the short
    one must not pick up "a a a" while the long one is still searching."""
    model = Scripted(LONGER_WINS)
    src = torch.tensor([[5, 6, PAD, PAD, PAD, PAD], [5, 6, 7, 8, 9, 5]])
    results = beam_search(model, src, beam_size=2, max_len_a=1.0, max_len_b=0,
                          return_scores=True)
    assert [hypotheses[0][0] for hypotheses in results] == [[], [A, A, A]]
    assert model.steps == 4  # the batch stopped as soon as the long sentence was done
    for i in range(2):
        alone = beam_search(model, unpadded(src, i), beam_size=2, max_len_a=1.0, max_len_b=0,
                            return_scores=True)
        assert alone[0][0] == results[i][0]


def test_stops_once_no_open_beam_can_win():
    """<eos> first with probability 0.9: every open beam has log-prob < log 0.1 and can
    reach at most log 0.1 / lp(50) = -0.61 < log 0.9 = -0.11. One step, not fifty."""
    model = Scripted({(): {EOS: 0.9}})
    assert beam_search(model, torch.tensor([[5, 6, 7]]), max_len_a=0, max_len_b=50) == [[]]
    assert model.steps == 1


def test_n_best_keeps_searching_while_an_open_beam_can_beat_the_last_of_them():
    """With n_best=2 the search may stop only when no open beam can beat the 2nd best.

    After step 2 the finished ones are "" (-0.69) and "a" (log 0.18 / lp(2) = -1.56); the
    open beam "b b" (log 0.188 = -1.67) cannot beat the first but can beat the second,
    and does: "b b <eos>" scores -1.68 / lp(3) = -1.42.
    """
    model = Scripted({(): {EOS: 0.5, A: 0.3, B: 0.19}, (A,): {EOS: 0.6, A: 0.39},
                      (B,): {B: 0.99}, (B, B): {EOS: 0.99}})
    [hypotheses] = beam_search(model, torch.tensor([[5, 6, 7]]), beam_size=3, n_best=2,
                               max_len_a=0, max_len_b=8, return_scores=True)
    assert [tokens for tokens, _ in hypotheses] == [[], [B, B]]
    assert hypotheses[1][1] == pytest.approx(math.log(0.19 * 0.99 * 0.99) / lp(3, 0.6), abs=1e-6)


@pytest.mark.parametrize("K, alpha, n_best", [(4, 0.6, 4), (4, 0.6, 1), (3, 1.0, 2)])
def test_search_equals_a_plain_reference_implementation(model, K, alpha, n_best):
    src = toy_batch([4, 6, 3, 8, 5], seed=2)
    results = beam_search(model, src, beam_size=K, n_best=n_best, length_penalty=alpha,
                          max_len_a=0, max_len_b=8, return_scores=True)
    for i, hypotheses in enumerate(results):
        expected = reference_beam_search(model, unpadded(src, i), K, alpha, 8, n_best)
        assert [tokens for tokens, _ in hypotheses] == [tokens for tokens, _ in expected]
        assert [s for _, s in hypotheses] == pytest.approx([s for _, s in expected], abs=1e-4)


def test_beam_usually_finds_a_better_scored_output_than_greedy(model):
    """Beam 4 against greedy, both judged by the same score L(Y) / lp(Y).

    Not a theorem: pruning can drop greedy's own prefix (K other prefixes may be more
    likely after a few steps even though greedy's later tokens are near-certain), and the
    search stops once it has K finished hypotheses. So the assertion is a clear majority,
    plus a few cases where the beam is strictly better.
    """
    src = toy_batch([2, 3, 4, 5, 6, 7, 8, 9] * 3, seed=3)
    max_len = 10
    greedy = greedy_decode(model, src, max_len, BOS, EOS)
    beams = beam_search(model, src, beam_size=4, max_len_a=0, max_len_b=max_len,
                        return_scores=True)
    at_least_as_good = strictly_better = 0
    for i, (out, hypotheses) in enumerate(zip(greedy, beams)):
        greedy_score = rescore(model, unpadded(src, i), out, max_len, 0.6)
        beam_score = hypotheses[0][1]
        at_least_as_good += beam_score >= greedy_score - 1e-5
        strictly_better += beam_score > greedy_score + 1e-3
    assert at_least_as_good >= 0.8 * len(greedy)
    assert strictly_better >= 3


def test_max_length_per_sentence_is_floor_of_a_n_plus_b(model):
    never_ends = Biased(model, {EOS: float("-inf")})
    src = toy_batch([3, 7, 5], seed=4)  # floor(1.5 n + 1) = 5, 11, 8
    outputs = beam_search(never_ends, src, max_len_a=1.5, max_len_b=1)
    assert [len(out) for out in outputs] == [5, 11, 8]


def test_max_length_is_capped_by_the_positional_table():
    short = T.Transformer(T.TransformerConfig.tiny(vocab_size=VOCAB, dropout=0.0, max_len=10))
    never_ends = Biased(short.eval(), {EOS: float("-inf")})
    outputs = beam_search(never_ends, toy_batch([3, 5], seed=5), beam_size=2, max_len_b=50)
    assert [len(out) for out in outputs] == [9, 9]  # max_len - 1 new tokens after <bos>


def test_runs_in_eval_mode_and_restores_the_mode():
    noisy = T.Transformer(T.TransformerConfig.tiny(vocab_size=VOCAB, dropout=0.5))
    src = toy_batch([4, 6], seed=6)
    expected = beam_search(noisy.eval(), src, max_len_b=5, n_best=2, return_scores=True)
    noisy.train()
    # Same result in train mode: the search switched dropout off.
    assert beam_search(noisy, src, max_len_b=5, n_best=2, return_scores=True) == expected
    assert noisy.training
    noisy.eval()
    beam_search(noisy, src, max_len_b=5)
    assert not noisy.training


@pytest.mark.parametrize("kwargs", [dict(beam_size=0), dict(beam_size=2, n_best=3), dict(n_best=0)])
def test_rejects_bad_beam_arguments(model, src, kwargs):
    with pytest.raises(ValueError):
        beam_search(model, src, **kwargs)
