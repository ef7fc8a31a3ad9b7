"""Executable spec of sampling.py: ancestral sampling, its temperature and top-k, its seeds.

The model is the small trained translation run of conftest.py: its distributions are
peaked where it has learnt the corpus and spread where it has not, so samples both agree
with greedy decoding and stray from it, which is what the knobs are about.
"""

from __future__ import annotations

import pytest
import torch

from transformer.data.batching import collate
from transformer.decoding.greedy import greedy_decode
from transformer.decoding.sampling import filter_logits, row_generators, sample_decode
from transformer.run.rundir import load_run

SENTENCES = ["a dog eats the ball .", "the cat likes a book .", "my friend holds the red car .",
             "a woman finds some bread .", "the man sees an apple ."]
MAX_OUT = 12  # output tokens: enough for the corpus's sentences and their <eos>


@pytest.fixture(scope="module")
def run(trained_translation_run):
    _run = load_run(trained_translation_run)
    model, tokenizer = _run.model, _run.source
    src = collate([(tokenizer.encode(s), []) for s in SENTENCES], tokenizer.pad_id,
                  tokenizer.bos_id, tokenizer.eos_id)[0]  # (5, S), padded
    return model, tokenizer, src


def sample(run, **options) -> list[list[int]]:
    model, tok, src = run
    return sample_decode(model, src, tok.bos_id, tok.eos_id, max_len_a=0, max_len_b=MAX_OUT,
                         **options)


def greedy(run) -> list[list[int]]:
    model, tok, src = run
    return greedy_decode(model, src, MAX_OUT, tok.bos_id, tok.eos_id)


def seeded(seed: int, rows: int = len(SENTENCES)) -> list[torch.Generator]:
    return row_generators(seed, [(row,) for row in range(rows)])


def test_top_k_1_is_greedy(run):
    for seed in range(3):
        assert sample(run, top_k=1, temperature=1.5, generators=seeded(seed)) == greedy(run)
    assert sample(run, top_k=1) == greedy(run)  # torch's global generator alike


def test_a_low_temperature_approaches_greedy(run):
    expected = greedy(run)

    def strays(temperature: float) -> int:  # samples unlike the greedy output, of 20
        return sum(a != b for seed in range(4) for a, b in
                   zip(sample(run, temperature=temperature, generators=seeded(seed)), expected))

    # This model has a near-tie (logits 6.862 and 6.857 for one sentence's 4th token): only
    # a temperature well below that gap of 0.004 makes the choice as greedy's.
    counts = [strays(t) for t in (3.0, 0.01, 1e-4)]
    assert counts[0] > counts[1] > counts[2] == 0, counts


def test_filter_logits_sharpens_and_keeps_exactly_k():
    logits = torch.tensor([[2.0, 1.0, 1.0, 0.5, -1.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    peaks = [torch.softmax(filter_logits(logits, t), -1)[0].max().item() for t in (2.0, 1.0, 0.1, 0.01)]
    assert peaks == sorted(peaks) and peaks[-1] > 0.9999  # T -> 0: all mass on the argmax
    assert torch.equal(filter_logits(logits, 2.0), logits / 2)
    kept = torch.isfinite(filter_logits(logits, 1.0, top_k=2))
    assert kept.sum(1).tolist() == [2, 2]  # ties (the second row) never let more through
    assert kept[0].tolist() == [True, True, False, False, False] or \
        kept[0].tolist() == [True, False, True, False, False]
    assert torch.equal(filter_logits(logits, 1.0, top_k=0), logits)
    assert torch.equal(filter_logits(logits, 1.0, top_k=99), logits)


def test_seeded_samples_are_reproducible_and_vary_without_a_seed(run):
    options = {"temperature": 2.0}
    first = sample(run, generators=seeded(7), **options)
    assert sample(run, generators=seeded(7), **options) == first
    assert sample(run, generators=seeded(8), **options) != first
    unseeded = [sample(run, **options) for _ in range(3)]  # torch's global generator moves on
    assert unseeded[0] != unseeded[1] or unseeded[1] != unseeded[2]


def test_a_rows_sample_does_not_depend_on_its_batch(run):
    model, tok, src = run
    together = sample(run, temperature=2.0, generators=row_generators(5, [(i,) for i in range(5)]))
    for i in range(len(SENTENCES)):
        alone = src[i: i + 1, : int((src[i] != tok.pad_id).sum())]  # (1, n + 1), no padding
        assert sample_decode(model, alone, tok.bos_id, tok.eos_id, temperature=2.0, max_len_a=0,
                             max_len_b=MAX_OUT, generators=row_generators(5, [(i,)])) == [together[i]]


def test_every_sampled_token_is_within_the_top_k(run):
    model, tok, src = run
    k, strays = 3, 0
    for seed in range(4):
        hyps = sample(run, top_k=k, temperature=5.0, generators=seeded(seed))
        # Each sample's own prefixes, teacher-forced: the distributions it was drawn from.
        _, tgt_in, tgt_out = collate([([], h) for h in hyps], tok.pad_id, tok.bos_id, tok.eos_id)
        with torch.no_grad():
            logits = model(src, tgt_in)  # (5, T, V)
        logits[..., [tok.pad_id, tok.bos_id]] = float("-inf")
        rank = (logits > logits.gather(-1, tgt_out[..., None])).sum(-1)  # (5, T): 0 = the argmax
        real = tgt_out != tok.pad_id
        for row, h in enumerate(hyps):
            if len(h) == MAX_OUT:  # out of room: the <eos> collate put after it was not drawn
                real[row, MAX_OUT] = False
        assert bool((rank[real] < k).all())
        strays += int((rank[real] > 0).sum())
    assert strays > 0  # the test has teeth: not every draw was the argmax


def test_never_pad_or_bos_and_lengths_bounded(run):
    model, tok, src = run
    hyps = sample_decode(model, src, tok.bos_id, tok.eos_id, temperature=10.0, max_len_a=0.5,
                         max_len_b=1, generators=seeded(0))
    lengths = (src != tok.pad_id).sum(1).tolist()  # source tokens + <eos>
    for hyp, n in zip(hyps, lengths):
        assert len(hyp) <= int(0.5 * n + 1)
        assert tok.pad_id not in hyp and tok.bos_id not in hyp and tok.eos_id not in hyp


@pytest.mark.parametrize("options", [{"temperature": 0.0}, {"temperature": -1.0},
                                     {"temperature": float("inf")}, {"top_k": -1},
                                     {"top_k": 1.5}, {"generators": []}])
def test_bad_arguments(run, options):
    with pytest.raises(ValueError):
        sample(run, **options)


def test_model_mode_is_restored(run):
    model = run[0]
    model.train()
    try:
        assert sample(run, top_k=1) == greedy(run)  # no dropout while sampling
        assert model.training
    finally:
        model.eval()
