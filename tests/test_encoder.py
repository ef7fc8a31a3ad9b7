"""The encoder stack (Section 3.1) and its parts: feed-forward (3.3), residual + LayerNorm.

Pins down:
- shapes: embedded source (B, S, D) and mask (B, 1, 1, S) -> memory (B, S, D);
- the encoder computes exactly what torch.nn.TransformerEncoder computes with the same
  weights, for post-LN (the paper: x = LayerNorm(x + Sublayer(x)), no final norm) and for
  pre-LN (x = x + Sublayer(LayerNorm(x)), plus a final LayerNorm), with padding in the batch;
  measured max abs diff on the test sizes: about 1e-6 or less (the test prints it);
- padding invariance: what sits under the padding (any ids, extreme values, more of it)
  leaves every non-padding position's output unchanged (else a sentence's encoding would
  depend on the batch it happens to share);
- LayerNorm is nn.LayerNorm: biased variance, eps inside the square root (the common
  look-alike, unbiased std plus eps outside, is another function);
- FFN(x) = max(0, x W1 + b1) W2 + b2, applied to each position separately.
"""

import pytest
import torch
from torch import nn

from transformer import Transformer, padding_mask
from transformer.model.encoder import Encoder
from transformer.model.feedforward import PositionwiseFeedForward

from references import (
    PAD,
    VOCAB,
    assert_same_outputs,
    padded_source,
    reference_encoder,
    tiny,
)


@pytest.mark.parametrize("attention", ["fused", "manual"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_same_as_nn_transformer_encoder(norm_first, attention):
    cfg = tiny(norm_first=norm_first, attention=attention)
    encoder = Encoder(cfg)
    ref = reference_encoder(encoder, cfg)
    ref.train()  # dropout is 0; train() keeps nn's inference fast path (other outputs) out
    src = padded_source()
    x = torch.randn(*src.shape, cfg.d_model)
    ours = encoder(x, padding_mask(src, PAD))
    theirs = ref(x, src_key_padding_mask=src == PAD)  # nn: True = IGNORE
    assert_same_outputs(ours, theirs, f"encoder vs nn.TransformerEncoder "
                        f"({'pre' if norm_first else 'post'}-LN, {attention})")


@pytest.mark.parametrize("batch", [1, 3])
def test_shapes(batch):
    cfg = tiny()
    model = Transformer(cfg).eval()
    src = torch.randint(1, VOCAB, (batch, 11))
    x = model.src_embed(src)
    assert x.shape == (batch, 11, cfg.d_model)
    assert model.encoder(x, padding_mask(src, PAD)).shape == (batch, 11, cfg.d_model)
    assert model.encode(src).shape == (batch, 11, cfg.d_model)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_padding_invariance(norm_first):
    model = Transformer(tiny(norm_first=norm_first)).eval()
    src = padded_source()
    keep = src != PAD  # (B, S) the positions whose output matters
    memory = model.encode(src)

    # 1. Any ids under the padding, with the mask given explicitly.
    other_ids = torch.where(keep, src, torch.randint(1, VOCAB, src.shape))
    assert not torch.equal(other_ids, src)
    changed = model.encode(other_ids, src_mask=padding_mask(src, PAD))
    torch.testing.assert_close(changed[keep], memory[keep], rtol=0, atol=1e-5)

    # 2. Extreme values under the padding, straight into the stack.
    x = model.src_embed(src)
    x_extreme = torch.where(keep[..., None], x, torch.full_like(x, 1e4))
    out = model.encoder(x, padding_mask(src, PAD))
    out_extreme = model.encoder(x_extreme, padding_mask(src, PAD))
    torch.testing.assert_close(out_extreme[keep], out[keep], rtol=0, atol=1e-5)

    # 3. More padding: five extra pad columns, and each row alone with no padding at all.
    longer = torch.cat([src, torch.full((3, 5), PAD)], dim=1)
    torch.testing.assert_close(model.encode(longer)[:, :9][keep], memory[keep], rtol=0, atol=1e-5)
    for b in range(3):
        alone = src[b:b + 1, keep[b]]  # (1, length of row b)
        torch.testing.assert_close(model.encode(alone)[0], memory[b, keep[b]], rtol=0, atol=1e-5)

    # The checks can fail: changing a real token changes the outputs.
    real_changed = src.clone()
    real_changed[0, 0] = real_changed[0, 0] % (VOCAB - 1) + 1
    assert not torch.allclose(model.encode(real_changed)[0], memory[0], atol=1e-3)


def test_post_ln_layers_end_normalised_pre_ln_stack_ends_with_final_norm():
    x = torch.randn(2, 6, 32) * 5 + 3
    post = Encoder(tiny(norm_first=False))
    assert post.final_norm is None  # the paper's post-LN has no norm after the stack
    out = post(x, None)
    # LayerNorm with its initial weight 1 and bias 0 is the last thing each layer does.
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 6), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(2, 6), rtol=0, atol=1e-3)

    pre = Encoder(tiny(norm_first=True))
    assert isinstance(pre.final_norm, nn.LayerNorm)
    with torch.no_grad():
        pre.final_norm.weight.fill_(2.0)  # the stack's output is the final norm's
    out = pre(x, None)
    variance = out.var(-1, unbiased=False)
    torch.testing.assert_close(variance, torch.full((2, 6), 4.0), rtol=0, atol=1e-2)


def test_layer_norm_is_nn_layer_norm_biased_variance_eps_inside():
    cfg = tiny(layer_norm_eps=1e-3, norm_first=True)
    encoder = Encoder(cfg)
    norms = [m for m in encoder.modules() if "norm" in type(m).__name__.lower()]
    assert len(norms) == 2 * cfg.n_encoder_layers + 1  # norm1, norm2 per layer + final_norm
    assert all(type(m) is nn.LayerNorm and m.eps == 1e-3 for m in norms)

    # What nn.LayerNorm computes: (x - mean) / sqrt(biased var + eps), eps inside the root.
    norm = encoder.layers[0].norm1
    x = torch.randn(4, 32) * 0.03  # small variance, so eps and the bias of the variance matter
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased: divide by D, not D - 1
    torch.testing.assert_close(norm(x), (x - mean) / torch.sqrt(var + 1e-3), rtol=0, atol=1e-5)
    # The look-alike of some implementations (unbiased std, eps outside) is another function.
    wrong = (x - mean) / (x.std(-1, keepdim=True) + 1e-3)
    assert (norm(x) - wrong).abs().max() > 1e-2


def test_feed_forward_is_position_wise():
    ffn = PositionwiseFeedForward(32, 64)
    x = torch.randn(2, 7, 32)
    expected = torch.relu(x @ ffn.w_1.weight.T + ffn.w_1.bias) @ ffn.w_2.weight.T + ffn.w_2.bias
    torch.testing.assert_close(ffn(x), expected, rtol=0, atol=1e-5)
    # The same network at every position: permuting positions permutes the outputs.
    perm = torch.randperm(7)
    torch.testing.assert_close(ffn(x[:, perm]), ffn(x)[:, perm], rtol=0, atol=1e-6)
