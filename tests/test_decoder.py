"""The decoder stack (Section 3.1): masked self-attention, encoder-decoder attention, FFN.

Pins down:
- shapes: embedded target (B, T, D), memory (B, S, D) -> (B, T, D), with T != S;
- the decoder computes exactly what torch.nn.TransformerDecoder computes with the same
  weights, post-LN (the paper, no final norm) and pre-LN (final norm), with padding in
  source and target; measured max abs diff on the test sizes: about 1e-6 or less (printed);
- causality: changing target token t leaves the outputs at positions < t unchanged (and
  does change position t), so the model cannot peek at what it has to predict;
- padding invariance: whatever sits under source or target padding, and how much of it
  there is, leaves every non-padding position's output unchanged (else a sentence's
  translation would depend on the batch it happens to share);
- incremental decoding with the KV cache gives the same logits as decoding the whole
  prefix at once, at every step, post-LN and pre-LN, also when the cache outgrows the
  capacity it started with;
- reordering the cache (beam search) moves the filled positions within their buffers,
  and decoding goes on from the reordered rows, past the buffers' first capacity.
"""

import pytest
import torch
from torch import nn

from transformer import Transformer, causal_mask, padding_mask
from transformer.model.decoder import Decoder, cache_length, reorder_cache
from transformer.model.masks import decoder_self_mask

from references import (
    BOS,
    PAD,
    VOCAB,
    assert_same_outputs,
    padded_batch,
    reference_decoder,
    tiny,
)


@pytest.mark.parametrize("attention", ["fused", "manual"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_same_as_nn_transformer_decoder(norm_first, attention):
    cfg = tiny(norm_first=norm_first, attention=attention)
    decoder = Decoder(cfg)
    ref = reference_decoder(decoder, cfg).train()  # dropout 0; no fast path, no other outputs
    src, tgt = padded_batch()
    x, memory = torch.randn(*tgt.shape, cfg.d_model), torch.randn(*src.shape, cfg.d_model)
    ours = decoder(x, memory, decoder_self_mask(tgt, PAD), padding_mask(src, PAD))
    T = tgt.size(1)
    theirs = ref(x, memory, tgt_mask=~causal_mask(T),  # nn: True = IGNORE, hence the ~
                 tgt_key_padding_mask=tgt == PAD, memory_key_padding_mask=src == PAD)
    assert_same_outputs(ours, theirs, f"decoder vs nn.TransformerDecoder "
                        f"({'pre' if norm_first else 'post'}-LN, {attention})")


@pytest.mark.parametrize("batch", [1, 3])
def test_shapes(batch):
    cfg = tiny()
    model = Transformer(cfg).eval()
    src, tgt = torch.randint(2, VOCAB, (batch, 9)), torch.randint(2, VOCAB, (batch, 5))
    memory = model.encode(src)
    y = model.tgt_embed(tgt)
    assert y.shape == (batch, 5, cfg.d_model)
    h = model.decoder(y, memory, decoder_self_mask(tgt, PAD), padding_mask(src, PAD))
    assert h.shape == (batch, 5, cfg.d_model)
    assert model.decode(tgt, memory, src).shape == (batch, 5, VOCAB)


@pytest.mark.parametrize("attention", ["fused", "manual"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_causality(norm_first, attention):
    model = Transformer(tiny(norm_first=norm_first, attention=attention)).eval()
    src, _ = padded_batch()
    tgt = torch.randint(2, VOCAB, (3, 7))
    memory = model.encode(src)
    logits = model.decode(tgt, memory, src)
    for t in range(7):
        changed = tgt.clone()
        changed[:, t] = changed[:, t] % (VOCAB - 2) + 2  # another non-pad token
        logits_changed = model.decode(changed, memory, src)
        torch.testing.assert_close(logits_changed[:, :t], logits[:, :t], rtol=0, atol=1e-5)
        assert (logits_changed[:, t] - logits[:, t]).abs().max() > 1e-3  # position t does see it


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_padding_invariance(norm_first):
    model = Transformer(tiny(norm_first=norm_first)).eval()
    src, tgt = padded_batch()
    src_keep, tgt_keep = src != PAD, tgt != PAD
    memory = model.encode(src)
    logits = model.decode(tgt, memory, src)

    # 1. Source: any ids under its padding (explicit mask), and extra pad columns.
    other_src = torch.where(src_keep, src, torch.randint(2, VOCAB, src.shape))
    src_mask = padding_mask(src, PAD)
    changed = model.decode(tgt, model.encode(other_src, src_mask), src_mask=src_mask)
    torch.testing.assert_close(changed[tgt_keep], logits[tgt_keep], rtol=0, atol=1e-5)
    longer_src = torch.cat([src, torch.full((3, 4), PAD)], dim=1)
    changed = model.decode(tgt, model.encode(longer_src), longer_src)
    torch.testing.assert_close(changed[tgt_keep], logits[tgt_keep], rtol=0, atol=1e-5)

    # 2. Target: extra pad columns, and each sentence alone without padding.
    longer_tgt = torch.cat([tgt, torch.full((3, 3), PAD)], dim=1)
    changed = model.decode(longer_tgt, memory, src)[:, :6]
    torch.testing.assert_close(changed[tgt_keep], logits[tgt_keep], rtol=0, atol=1e-5)
    full = model(src, tgt)
    for b in range(3):
        alone = model(src[b:b + 1, src_keep[b]], tgt[b:b + 1, tgt_keep[b]])[0]
        torch.testing.assert_close(alone, full[b, tgt_keep[b]], rtol=0, atol=1e-5)

    # 3. Extreme values under padding in the middle of the target (masked as a key for
    # the later positions) and under the memory's padding, straight into the stack.
    tgt_mid = tgt.clone()
    tgt_mid[1, 2] = PAD  # row 1: <bos> a <pad> b c d
    keep = tgt_mid != PAD
    y = model.tgt_embed(tgt_mid)
    self_mask, memory_mask = decoder_self_mask(tgt_mid, PAD), padding_mask(src, PAD)
    out = model.decoder(y, memory, self_mask, memory_mask)
    y_extreme = torch.where(keep[..., None], y, torch.full_like(y, 1e4))
    memory_extreme = torch.where(src_keep[..., None], memory, torch.full_like(memory, -1e4))
    out_extreme = model.decoder(y_extreme, memory_extreme, self_mask, memory_mask)
    torch.testing.assert_close(out_extreme[keep], out[keep], rtol=0, atol=1e-5)
    # ... and without the masks the same change does show: the check can fail.
    out_unmasked = model.decoder(y_extreme, memory_extreme, causal_mask(6), None)
    assert (out_unmasked[keep] - out[keep]).abs().max() > 1e-3

    # 4. Through the whole model, with the masks it derives from pad_id: the <pad> embedding
    # row (trained like any other once tied to the output projection) can hold anything.
    before = model(src, tgt_mid)
    with torch.no_grad():
        model.tgt_embed.token_embedding.weight[PAD] = 100.0  # tied "all": the source's too
    after = model(src, tgt_mid)
    # Every class but <pad>, whose output row is the row just changed.
    torch.testing.assert_close(after[keep][:, 1:], before[keep][:, 1:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("capacity", [None, 1], ids=["default-capacity", "grows"])
@pytest.mark.parametrize("attention", ["fused", "manual"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_kv_cache_matches_full_decode_at_every_step(norm_first, attention, capacity):
    model = Transformer(tiny(norm_first=norm_first, attention=attention)).eval()
    src, _ = padded_batch()
    tgt = torch.randint(2, VOCAB, (3, 8))
    tgt[:, 0] = BOS
    memory = model.encode(src)
    full = model.decode(tgt, memory, src)  # (B, T, V)

    cache = model.decoder.new_cache(capacity)
    for t in range(8):
        step = model.decode(tgt[:, t:t + 1], memory, src, cache=cache)  # (B, 1, V)
        assert cache_length(cache) == t + 1
        diff = (step[:, 0] - full[:, t]).abs().max().item()
        assert diff <= 1e-5, f"step {t}: max abs diff {diff:.2e}"

    # Several new positions at once, then one at a time, give the same logits too.
    cache = model.decoder.new_cache(capacity)
    first = model.decode(tgt[:, :3], memory, src, cache=cache)
    torch.testing.assert_close(first, full[:, :3], rtol=0, atol=1e-5)
    chunk = model.decode(tgt[:, 3:5], memory, src, cache=cache)
    torch.testing.assert_close(chunk, full[:, 3:5], rtol=0, atol=1e-5)
    step = model.decode(tgt[:, 5:6], memory, src, cache=cache)
    torch.testing.assert_close(step[:, 0], full[:, 5], rtol=0, atol=1e-5)


def test_reorder_cache_follows_the_reordered_rows():
    model = Transformer(tiny()).eval()
    src, _ = padded_batch()
    src = src[[0, 0, 0]]  # one sentence, three "beams": same memory on every row
    tgt = torch.randint(2, VOCAB, (3, 4))
    tgt[:, 0] = BOS
    memory = model.encode(src)
    cache = model.decoder.new_cache(capacity=4)
    model.decode(tgt[:, :3], memory, src, cache=cache)
    buffers = [layer["self"]["k_buffer"] for layer in cache]
    before = [layer["self"]["k"].clone() for layer in cache]
    order = torch.tensor([2, 2, 0])
    reorder_cache(cache, order)
    for layer, buffer, keys in zip(cache, buffers, before):
        assert layer["self"]["k_buffer"] is buffer  # the rows moved within the buffer
        assert torch.equal(layer["self"]["k"], keys[order])
    step = model.decode(tgt[order, 3:4], memory, src, cache=cache)
    full = model.decode(tgt[order], memory, src)
    torch.testing.assert_close(step[:, 0], full[:, 3], rtol=0, atol=1e-5)

    # Past the buffers' capacity of 4, the reordered rows go on as they should.
    longer = torch.cat([tgt[order], torch.randint(2, VOCAB, (3, 3))], dim=1)  # (3, 7)
    full = model.decode(longer, memory, src)
    for t in range(4, 7):
        step = model.decode(longer[:, t:t + 1], memory, src, cache=cache)
        torch.testing.assert_close(step[:, 0], full[:, t], rtol=0, atol=1e-5)
    assert cache_length(cache) == 7
    with pytest.raises(ValueError, match="number of rows"):
        reorder_cache(cache, torch.tensor([0, 1]))


def test_every_norm_is_nn_layer_norm():
    cfg = tiny(norm_first=True, layer_norm_eps=1e-6)
    decoder = Decoder(cfg)
    norms = [m for m in decoder.modules() if "norm" in type(m).__name__.lower()]
    assert len(norms) == 3 * cfg.n_decoder_layers + 1  # norm1..3 per layer + final_norm
    assert all(type(m) is nn.LayerNorm and m.eps == 1e-6 for m in norms)
    assert Decoder(tiny(norm_first=False)).final_norm is None
