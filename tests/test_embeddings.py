"""Embeddings and positional encodings (Sections 3.4 and 3.5).

Pins down:
- the output is `embedding(token) * sqrt(d_model) + PE(position)`, shape (B, S, d_model);
- the sinusoids follow the paper's formula PE(pos, 2i) = sin(pos / 10000^(2i/d_model)),
  PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)), and are a non-persistent buffer: no
  parameters, nothing in the state dict;
- learned positions (Table 3, row E) add exactly max_len * d_model parameters per table;
- `start` offsets the positions (incremental decoding) and a sequence running past
  max_len raises ValueError instead of silently wrapping or crashing inside indexing.
"""

import math

import pytest
import torch
from torch import nn

from transformer.model.embeddings import Embeddings, sinusoidal_table

D, MAX_LEN, VOCAB = 16, 32, 50


def make(positional="sinusoidal", d_model=D, dropout=0.0):
    return Embeddings(nn.Embedding(VOCAB, d_model), MAX_LEN, positional, dropout)


def test_sinusoidal_table_follows_the_papers_formula():
    d_model = 512
    table = sinusoidal_table(200, d_model)
    assert table.shape == (200, d_model)
    for pos in (0, 1, 7, 42, 199):
        # The table is float32: its angles carry a relative error of about 1e-7, so the
        # absolute error grows with the position (about 1e-5 at position 199).
        tol = 1e-6 + 1e-7 * pos
        for i in (0, 1, 10, 100, 255):
            angle = pos / 10000 ** (2 * i / d_model)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=tol)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=tol)
    # Position 0 is (0, 1, 0, 1, ...): sin(0) on even columns, cos(0) on odd ones.
    assert torch.equal(table[0, 0::2], torch.zeros(256))
    assert torch.equal(table[0, 1::2], torch.ones(256))


def test_sinusoidal_table_with_odd_d_model():
    table = sinusoidal_table(10, 5)  # 3 sine columns, 2 cosine columns
    assert table.shape == (10, 5)
    angle = 3 / 10000 ** (4 / 5)
    assert table[3, 4].item() == pytest.approx(math.sin(angle), abs=1e-6)


def test_sinusoids_are_a_non_persistent_buffer():
    emb = make("sinusoidal")
    params = dict(emb.named_parameters())
    assert list(params) == ["token_embedding.weight"]  # nothing learned besides the tokens
    assert "positions" in dict(emb.named_buffers())
    assert "positions" not in emb.state_dict()


def test_learned_positions_add_max_len_times_d_model_parameters():
    sinusoidal = sum(p.numel() for p in make("sinusoidal").parameters())
    learned = sum(p.numel() for p in make("learned").parameters())
    assert learned - sinusoidal == MAX_LEN * D
    assert "positions" not in dict(make("learned").named_buffers())


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
@pytest.mark.parametrize("batch", [1, 3])
def test_output_is_scaled_embedding_plus_position(positional, batch):
    emb = make(positional).eval()
    tokens = torch.randint(0, VOCAB, (batch, 9))
    out = emb(tokens)
    assert out.shape == (batch, 9, D)
    pos = emb.positions if positional == "sinusoidal" else emb.learned_positions.weight
    expected = emb.token_embedding.weight[tokens] * math.sqrt(D) + pos[:9]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    # The scale really is sqrt(d_model): without it the outputs differ.
    unscaled = emb.token_embedding.weight[tokens] + pos[:9]
    assert not torch.allclose(out, unscaled, atol=1e-3)


def test_start_offsets_the_positions():
    emb = make().eval()
    tokens = torch.randint(0, VOCAB, (2, 10))
    full = emb(tokens)
    for t in (0, 4, 9):
        step = emb(tokens[:, t:t + 1], start=t)  # (B, 1, D)
        torch.testing.assert_close(step[:, 0], full[:, t], rtol=0, atol=1e-6)


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_longer_than_max_len_raises(positional):
    emb = make(positional)
    assert emb(torch.zeros(1, MAX_LEN, dtype=torch.long)).shape == (1, MAX_LEN, D)
    with pytest.raises(ValueError, match="max_len"):
        emb(torch.zeros(1, MAX_LEN + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="max_len"):
        emb(torch.zeros(1, 1, dtype=torch.long), start=MAX_LEN)


def test_dropout_only_in_training():
    emb = make(dropout=0.5)
    tokens = torch.randint(1, VOCAB, (2, 20))
    emb.eval()
    torch.testing.assert_close(emb(tokens), emb(tokens))
    emb.train()
    dropped = emb(tokens)
    assert (dropped == 0).float().mean() > 0.2  # about half the entries are zeroed
