"""Token-count batching with length bucketing, and collation into (src, tgt_in, tgt_out)."""

from __future__ import annotations

import random

import pytest
import torch

from transformer.data.batching import (
    collate,
    example_lengths,
    padding_fraction,
    token_batches,
)
from transformer.errors import UserError


def multi30k_like_lengths(n: int = 5000, seed: int = 0) -> list[tuple[int, int]]:
    """Caption-length pairs: source mostly 8-25 tokens, a long tail, target near the source."""
    rng = random.Random(seed)
    lengths = []
    for _ in range(n):
        src = max(3, min(60, int(rng.lognormvariate(2.7, 0.35))))
        tgt = max(3, min(70, src + rng.randint(-3, 5)))
        lengths.append((src, tgt))
    return lengths


def as_lists(batches) -> list[list[int]]:
    return [batch.tolist() for batch in batches]


def padded_size(batch, lengths, side):
    return len(batch) * max(lengths[i][side] for i in batch)


@pytest.mark.parametrize("budget", [64, 500, 4000])
@pytest.mark.parametrize("shuffle", [True, False])
def test_no_batch_exceeds_the_budget_and_every_example_once(budget, shuffle):
    lengths = multi30k_like_lengths()
    batches = token_batches(lengths, budget, shuffle=shuffle, seed=3)
    for batch in batches:
        assert padded_size(batch, lengths, 0) <= budget
        assert padded_size(batch, lengths, 1) <= budget
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))


@pytest.mark.parametrize("shuffle", [True, False])
def test_an_epoch_of_batches_keeps_every_sentence_whole(shuffle):
    """Every example in exactly one batch, and collate keeps every token of it, in order:
    sentences longer than the whole budget too (each in a batch of its own)."""
    rng = random.Random(1)
    pad, bos, eos, budget = 0, 1, 2, 60
    examples = [([rng.randint(3, 99) for _ in range(rng.randint(1, 25))],
                 [rng.randint(3, 99) for _ in range(rng.randint(0, 25))]) for _ in range(300)]
    examples += [([7] * 80, [8] * 3), ([9] * 4, [10] * 70)]  # each over the budget alone
    batches = token_batches(example_lengths(examples), budget, shuffle=shuffle, seed=5)
    assert sorted(i for batch in batches for i in batch) == list(range(len(examples)))
    for batch in batches:
        src, tgt_in, tgt_out = collate([examples[i] for i in batch], pad, bos, eos)
        for row, i in enumerate(batch):
            source, target = examples[i]
            assert src[row][src[row] != pad].tolist() == source + [eos]
            assert tgt_in[row][tgt_in[row] != pad].tolist() == [bos] + target
            assert tgt_out[row][tgt_out[row] != pad].tolist() == target + [eos]
            # Padding only at the end (what the decoder's causal fast path relies on).
            assert src[row, :len(source) + 1].ne(pad).all()
            assert tgt_in[row, :len(target) + 1].ne(pad).all()
    alone = [batch for batch in batches if len(examples) - 2 in batch or len(examples) - 1 in batch]
    assert sorted(map(len, alone)) == [1, 1]


def test_batches_are_full_not_just_under_budget():
    lengths = [(10, 10)] * 100
    batches = token_batches(lengths, 100, shuffle=False)
    assert [len(b) for b in batches] == [10] * 10


def test_budget_binds_on_the_longer_side():
    lengths = [(2, 20)] * 10
    assert all(len(b) == 5 for b in token_batches(lengths, 100))


def test_example_longer_than_the_budget_gets_a_batch_of_its_own():
    lengths = [(5, 5), (500, 7), (6, 6), (5, 400)]
    batches = token_batches(lengths, 100, shuffle=False)
    assert sorted(map(sorted, batches)) == [[0, 2], [1], [3]]


def test_bucketing_wastes_less_padding_than_random_batches():
    lengths = multi30k_like_lengths()
    bucketed = token_batches(lengths, 2000, seed=0)
    # Random batches with exactly the same sizes, so only the grouping differs.
    order = list(range(len(lengths)))
    random.Random(0).shuffle(order)
    sizes = [len(b) for b in bucketed]
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    unsorted = [order[s:s + n] for s, n in zip(starts, sizes)]
    assert padding_fraction(bucketed, lengths) < 0.10
    assert padding_fraction(unsorted, lengths) > 3 * padding_fraction(bucketed, lengths)


def test_same_seed_same_batches_other_seed_other_order():
    lengths = multi30k_like_lengths(2000)
    first = as_lists(token_batches(lengths, 1000, seed=7))
    assert as_lists(token_batches(lengths, 1000, seed=7)) == first
    other = as_lists(token_batches(lengths, 1000, seed=8))
    assert other != first
    assert sorted(i for b in other for i in b) == list(range(len(lengths)))
    assert [b[0] for b in other[:10]] != [b[0] for b in first[:10]]  # the order of batches moved


def test_shuffle_mixes_the_order_of_batches():
    lengths = multi30k_like_lengths(2000)
    longest = [max(max(lengths[i]) for i in b) for b in token_batches(lengths, 1000, seed=0)]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)


def test_shuffle_regroups_examples_of_equal_length():
    lengths = [(5, 5)] * 100
    groups = [{frozenset(b) for b in token_batches(lengths, 50, seed=seed)} for seed in (0, 1)]
    assert all(len(b) == 10 for b in groups[0])
    assert groups[0] != groups[1]


def test_no_shuffle_is_sorted_and_ignores_the_seed():
    lengths = multi30k_like_lengths(500)
    batches = as_lists(token_batches(lengths, 300, shuffle=False, seed=1))
    assert batches == as_lists(token_batches(lengths, 300, shuffle=False, seed=2))
    longest = [max(max(lengths[i]) for i in b) for b in batches]
    assert longest == sorted(longest)


def test_bad_budget_is_a_user_error():
    with pytest.raises(UserError, match="^batch_tokens: "):
        token_batches([(3, 3)], 0)


def test_padding_fraction_counts_both_sides():
    lengths = [(2, 4), (4, 4)]
    # padded: 2 * 4 + 2 * 4 = 16 positions; real: 2 + 4 + 4 + 4 = 14.
    assert padding_fraction([[0, 1]], lengths) == pytest.approx(2 / 16)
    assert padding_fraction([[0], [1]], lengths) == 0.0
    assert padding_fraction([], lengths) == 0.0


def test_collate_shapes_and_contents():
    pad, bos, eos = 0, 1, 2
    examples = [([10, 11, 12], [20]), ([13], [21, 22, 23, 24])]
    src, tgt_in, tgt_out = collate(examples, pad, bos, eos)
    assert src.dtype == tgt_in.dtype == tgt_out.dtype == torch.int64
    assert src.shape == (2, 4) and tgt_in.shape == tgt_out.shape == (2, 5)
    assert src.tolist() == [[10, 11, 12, eos], [13, eos, pad, pad]]
    assert tgt_in.tolist() == [[bos, 20, pad, pad, pad], [bos, 21, 22, 23, 24]]
    assert tgt_out.tolist() == [[20, eos, pad, pad, pad], [21, 22, 23, 24, eos]]
    # tgt_out is tgt_in shifted left by one wherever tgt_in is not padding.
    assert torch.equal(tgt_in[:, 1:][tgt_in[:, 1:] != pad], tgt_out[:, :-1][tgt_in[:, 1:] != pad])


def test_example_lengths_match_collate():
    examples = [([5, 6, 7], [8, 9]), ([5], [])]
    lengths = example_lengths(examples)
    assert lengths == [(4, 3), (2, 1)]
    src, tgt_in, _ = collate(examples, 0, 1, 2)
    assert [int((row != 0).sum()) for row in src] == [s for s, _ in lengths]
    assert [int((row != 0).sum()) for row in tgt_in] == [t for _, t in lengths]
