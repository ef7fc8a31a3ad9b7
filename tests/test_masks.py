"""Attention masks (Section 3.2.3): which keys each query may look at.

Pins down the project-wide convention: boolean masks, True = may attend (the polarity of
`F.scaled_dot_product_attention`, the opposite of nn.Transformer's: mixing the two up
silently inverts a mask), shaped to
broadcast against the scores (B, H, T, S):
- `causal_mask(S)` is (S, S), lower triangle True: query i sees keys 0..i;
- `padding_mask(tokens, pad)` is (B, 1, 1, S), False exactly at <pad> keys;
- the decoder's self-attention mask is their AND, (B, 1, T, T);
- `causal_suffices` says yes exactly when the plain causal mask may stand in for a mask
  at every used position: right padding yes; left padding, a gap, or a mask that shows
  or hides any other key, no.
"""

import torch

from transformer import causal_mask, padding_mask
from transformer.model.masks import causal_suffices, decoder_self_mask


def test_causal_mask_is_lower_triangular():
    S = 5
    mask = causal_mask(S)
    assert mask.shape == (S, S) and mask.dtype == torch.bool
    for i in range(S):
        for j in range(S):
            assert mask[i, j].item() == (j <= i)  # query i may see key j iff j <= i
    assert causal_mask(1).tolist() == [[True]]


def test_padding_mask_marks_pad_keys_false():
    tokens = torch.tensor([[5, 6, 7, 0, 0],
                           [8, 0, 9, 1, 0]])
    mask = padding_mask(tokens, pad_id=0)
    assert mask.shape == (2, 1, 1, 5) and mask.dtype == torch.bool
    assert mask[:, 0, 0].tolist() == [[True, True, True, False, False],
                                      [True, False, True, True, False]]
    # Another pad id: only that id is masked.
    assert padding_mask(tokens, pad_id=1)[1, 0, 0].tolist() == [True, True, True, False, True]


def test_masks_broadcast_against_the_scores():
    B, H, T, S = 2, 4, 3, 5
    scores = torch.zeros(B, H, T, S)
    src = torch.randint(1, 10, (B, S))
    assert (scores.masked_fill(~padding_mask(src, 0), 1.0)).shape == (B, H, T, S)
    self_scores = torch.zeros(B, H, T, T)
    assert (self_scores.masked_fill(~causal_mask(T), 1.0)).shape == (B, H, T, T)


def test_decoder_self_mask_is_causal_and_not_pad():
    tgt = torch.tensor([[1, 4, 0, 5],
                        [1, 0, 0, 0]])
    mask = decoder_self_mask(tgt, pad_id=0)
    assert mask.shape == (2, 1, 4, 4)
    expected = causal_mask(4)[None, None] & (tgt != 0)[:, None, None, :]
    assert torch.equal(mask, expected)
    # Row 0, query 3 sees keys 0, 1, 3: not key 2 (pad), and nothing in the future.
    assert mask[0, 0, 3].tolist() == [True, True, False, True]
    assert mask[0, 0, 1].tolist() == [True, True, False, False]


def test_masks_follow_the_device_of_their_input():
    tokens = torch.ones(1, 3, dtype=torch.long)
    assert padding_mask(tokens, 0).device == tokens.device
    assert causal_mask(3, device="cpu").device.type == "cpu"


def test_causal_suffices_for_a_right_padded_target_only():
    right = torch.tensor([[1, 4, 5, 0, 0],
                          [1, 6, 7, 8, 9],
                          [1, 0, 0, 0, 0]])
    # The decoder's mask differs from the causal one on the <pad> query rows alone (they
    # may not see <pad> keys), and those rows are not used.
    mask = decoder_self_mask(right, 0)
    assert not torch.equal(mask, causal_mask(5).expand_as(mask))
    assert causal_suffices(mask, right != 0)
    assert causal_suffices(causal_mask(5), torch.ones(2, 5, dtype=torch.bool))
    # If the <pad> rows were used, it would not do.
    assert not causal_suffices(mask, torch.ones(3, 5, dtype=torch.bool))

    left = torch.tensor([[0, 0, 1, 4, 5], [1, 6, 7, 8, 9]])  # a real query sees <pad> keys
    assert not causal_suffices(decoder_self_mask(left, 0), left != 0)
    gap = torch.tensor([[1, 4, 0, 5, 0], [1, 6, 7, 8, 9]])  # <pad> inside the sentence
    assert not causal_suffices(decoder_self_mask(gap, 0), gap != 0)


def test_causal_suffices_compares_the_mask_itself():
    tgt = torch.tensor([[1, 4, 5, 0], [1, 6, 7, 8]])
    keep = tgt != 0
    # A mask without the causal part lets a query see later keys: never the causal one.
    assert not causal_suffices(padding_mask(tgt, 0), keep)
    # One hidden key on a used row is enough to say no; the same on an unused row is not.
    mask = decoder_self_mask(tgt, 0).clone()
    mask[1, 0, 3, 1] = False
    assert not causal_suffices(mask, keep)
    mask = decoder_self_mask(tgt, 0).clone()
    mask[0, 0, 3, 1] = False  # row 0, position 3 is <pad>
    assert causal_suffices(mask, keep)
