"""Scaled dot-product and multi-head attention (Sections 3.2.1 and 3.2.2).

Pins down:
- Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V, with masked keys (True = may attend)
  getting exactly zero weight, whatever values they hold: a padding key must not leak
  into any output;
- a query row with nothing to attend to gives zeros, never NaN, and finite gradients, on
  both paths: one NaN would spread through the backward pass to the whole batch;
- the readable "manual" path and the "fused" path (F.scaled_dot_product_attention) agree
  to 1e-5, with and without masks;
- MultiHead(Q, K, V) = Concat(head_1..head_h) W^O with head_i = Attention(Q W_i^Q, ...),
  i.e. the same function as nn.MultiheadAttention with the same (3D, D) in-projection;
- shapes: per-head q, k, v (B, H, S, D/H), weights (B, H, T, S), output (B, T, D);
- the KV cache reproduces full causal self-attention one position at a time, writing
  each step into its buffers in place and replacing a full buffer by one twice as long;
- `is_causal=True` (a caller's promise that the causal mask will do): the fused path
  calls the kernel with no mask tensor, the manual path still applies the mask it got,
  and a call with cached keys before the queries is refused;
- the manual path's function is an attribute of each module: setting it on one model
  changes that model and no other.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transformer import (
    MultiHeadAttention,
    Transformer,
    TransformerConfig,
    causal_mask,
    scaled_dot_product_attention,
)

B, H, T, S, D = 3, 4, 5, 7, 32


def qkv(batch=B, t=T, s=S, d_k=D // H, dtype=torch.float32):
    return (torch.randn(batch, H, t, d_k, dtype=dtype), torch.randn(batch, H, s, d_k, dtype=dtype),
            torch.randn(batch, H, s, d_k, dtype=dtype))


def masks_with_an_empty_row():
    """A few masks broadcastable to (B, H, T, S); the last one leaves query 2 of batch row 1
    (in every head) with no key at all."""
    padding = torch.ones(B, 1, 1, S, dtype=torch.bool)
    padding[0, ..., 4:] = False
    padding[2, ..., 1:3] = False
    random = torch.rand(B, H, T, S) > 0.5
    random[..., 0] = True  # every row keeps at least one key ...
    empty_row = random.clone()
    empty_row[1, :, 2, :] = False  # ... except this one
    return {"padding": padding, "random": random, "empty_row": empty_row}


def test_formula_on_a_small_example():
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0]])  # one query, d_k = 4
    k = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])  # two keys
    v = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    out, weights = scaled_dot_product_attention(q, k, v)
    # scores = q.k / sqrt(4) = [1, 0]
    w0 = math.exp(1) / (math.exp(1) + 1)
    assert weights[0].tolist() == pytest.approx([w0, 1 - w0], abs=1e-6)
    expected = [w0 * 1 + (1 - w0) * 3, w0 * 10 + (1 - w0) * 30]
    assert out[0].tolist() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("batch", [1, B])
def test_function_shapes_and_weight_rows(batch):
    q, k, v = qkv(batch)
    out, weights = scaled_dot_product_attention(q, k, v)
    assert out.shape == (batch, H, T, D // H)
    assert weights.shape == (batch, H, T, S)
    torch.testing.assert_close(weights.sum(-1), torch.ones(batch, H, T))


def test_masked_keys_get_zero_weight_and_no_influence():
    q, k, v = qkv()
    mask = masks_with_an_empty_row()["padding"]
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    assert torch.all(weights.masked_select(~mask.expand_as(weights)) == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, T))
    # Extreme values under the mask change nothing, on either path.
    k2, v2 = k.clone(), v.clone()
    hidden = ~mask[:, 0, 0]  # (B, S)
    rows, cols = hidden.nonzero(as_tuple=True)
    k2[rows, :, cols] = 1e4
    v2[rows, :, cols] = -1e4
    assert not torch.equal(k, k2)
    out2, _ = scaled_dot_product_attention(q, k2, v2, mask)
    torch.testing.assert_close(out2, out, rtol=0, atol=1e-6)
    fused2 = F.scaled_dot_product_attention(q, k2, v2, attn_mask=mask)
    torch.testing.assert_close(fused2, out, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", [None, "causal", "padding", "random", "empty_row"])
def test_manual_and_fused_functions_agree(name):
    q, k, v = qkv(s=T if name == "causal" else S)
    mask = causal_mask(T) if name == "causal" else masks_with_an_empty_row().get(name)
    manual, _ = scaled_dot_product_attention(q, k, v, mask)
    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    diff = (manual - fused).abs().max().item()
    print(f"manual vs fused ({name}): max abs diff {diff:.2e}")
    assert diff <= 1e-5


def make_pair(d_model=D, n_heads=H):
    """A manual and a fused MultiHeadAttention with the same weights."""
    manual = MultiHeadAttention(d_model, n_heads, fused=False)
    fused = MultiHeadAttention(d_model, n_heads, fused=True)
    fused.load_state_dict(manual.state_dict())
    return manual, fused


@pytest.mark.parametrize("name", [None, "padding", "random", "empty_row"])
def test_manual_and_fused_modules_agree(name):
    manual, fused = make_pair()
    x, memory = torch.randn(B, T, D), torch.randn(B, S, D)
    mask = masks_with_an_empty_row().get(name)
    cross = (manual(x, memory, mask), fused(x, memory, mask))
    self_mask = None if mask is None else mask[..., :T]
    self_ = (manual(x, mask=self_mask), fused(x, mask=self_mask))
    for a, b in (cross, self_):
        assert a.shape == (B, T, D)
        assert (a - b).abs().max().item() <= 1e-5


@pytest.mark.parametrize("fused", [False, True])
def test_a_row_with_nothing_to_attend_to_gives_zeros_and_finite_gradients(fused):
    q, k, v = (t.requires_grad_() for t in qkv())
    mask = masks_with_an_empty_row()["empty_row"]
    if fused:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    else:
        out, weights = scaled_dot_product_attention(q, k, v, mask)
        assert torch.all(weights[1, :, 2] == 0)
    assert torch.all(out[1, :, 2] == 0)
    assert torch.isfinite(out).all()
    (out ** 2).sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.all(q.grad[1, :, 2] == 0)  # the empty row's query gets no gradient

    # The same through the module: the empty row is w_o's bias, and every gradient is finite.
    mha = MultiHeadAttention(D, H, fused=fused)
    x, memory = torch.randn(B, T, D, requires_grad=True), torch.randn(B, S, D, requires_grad=True)
    y = mha(x, memory, mask)
    torch.testing.assert_close(y[1, 2], mha.w_o.bias.detach(), rtol=0, atol=1e-6)
    y.sum().backward()
    grads = [x.grad, memory.grad] + [p.grad for p in mha.parameters()]
    assert all(torch.isfinite(g).all() for g in grads)


def test_multi_head_is_the_concatenation_of_single_heads():
    mha = MultiHeadAttention(D, H, fused=False)
    x, memory = torch.randn(B, T, D), torch.randn(B, S, D)
    d_k = D // H
    w, b = mha.w_qkv.weight, mha.w_qkv.bias
    w_q, w_k, w_v = w.split(D)  # (D, D) each: rows h*d_k .. (h+1)*d_k belong to head h
    b_q, b_k, b_v = b.split(D)
    heads = []
    for h in range(H):
        rows = slice(h * d_k, (h + 1) * d_k)
        q_h = x @ w_q[rows].T + b_q[rows]  # (B, T, d_k)
        k_h = memory @ w_k[rows].T + b_k[rows]  # (B, S, d_k)
        v_h = memory @ w_v[rows].T + b_v[rows]
        weights = torch.softmax(q_h @ k_h.transpose(1, 2) / math.sqrt(d_k), dim=-1)
        heads.append(weights @ v_h)
    expected = mha.w_o(torch.cat(heads, dim=-1))  # Concat(head_1..head_h) W^O
    torch.testing.assert_close(mha(x, memory), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_same_function_as_nn_multihead_attention(fused):
    ours = MultiHeadAttention(D, H, fused=fused)
    ref = nn.MultiheadAttention(D, H, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.w_qkv.weight)  # the same (3D, D) layout
        ref.in_proj_bias.copy_(ours.w_qkv.bias)
        ref.out_proj.weight.copy_(ours.w_o.weight)
        ref.out_proj.bias.copy_(ours.w_o.bias)
    x, memory = torch.randn(B, T, D), torch.randn(B, S, D)
    keep = masks_with_an_empty_row()["padding"]  # (B, 1, 1, S), True = may attend
    ours_out = ours(x, memory, keep)
    # nn.MultiheadAttention: key_padding_mask (B, S) with True = IGNORE, hence the ~.
    ref_out, _ = ref(x, memory, memory, key_padding_mask=~keep[:, 0, 0], need_weights=False)
    diff = (ours_out - ref_out).abs().max().item()
    print(f"MultiHeadAttention vs nn.MultiheadAttention (fused={fused}): max abs diff {diff:.2e}")
    assert diff <= 1e-5
    # Self-attention with a causal mask: nn's attn_mask is (T, T), True = IGNORE.
    ref_self, _ = ref(x, x, x, attn_mask=~causal_mask(T), need_weights=False)
    assert (ours(x, mask=causal_mask(T)) - ref_self).abs().max().item() <= 1e-5


@pytest.mark.parametrize("batch", [1, B])
def test_module_shapes_per_head_and_weights(batch):
    mha = MultiHeadAttention(D, H)
    mha.record_weights = True  # keeps the (B, H, T, S) weights of the last call
    seen = []
    split_heads = mha.split_heads

    def recording_split_heads(t):
        out = split_heads(t)
        seen.append(tuple(out.shape))
        return out

    mha.split_heads = recording_split_heads
    x, memory = torch.randn(batch, T, D), torch.randn(batch, S, D)
    y = mha(x, memory)
    assert y.shape == (batch, T, D)
    assert seen == [(batch, H, T, D // H), (batch, H, S, D // H), (batch, H, S, D // H)]  # q, k, v
    assert mha.weights.shape == (batch, H, T, S)
    seen.clear()
    assert mha(x).shape == (batch, T, D)
    assert seen == [(batch, H, T, D // H)] * 3
    assert mha.weights.shape == (batch, H, T, T)


@pytest.mark.parametrize("fused", [False, True])
def test_kv_cache_reproduces_causal_self_attention(fused):
    mha = MultiHeadAttention(D, H, fused=fused)
    x = torch.randn(B, T, D)
    full = mha(x, mask=causal_mask(T))
    cache = {}
    for t in range(T):
        step = mha(x[:, t:t + 1], cache=cache)  # one new position sees all cached ones
        assert cache["k"].shape == (B, H, t + 1, D // H)
        torch.testing.assert_close(step[:, 0], full[:, t], rtol=0, atol=1e-5)
    # Cross-attention computes the memory's keys/values once and reuses them.
    memory = torch.randn(B, S, D)
    cross_cache = {}
    first = mha(x[:, :1], memory, cache=cross_cache)
    assert cross_cache["k"].shape == (B, H, S, D // H)
    again = mha(x[:, :1], torch.zeros_like(memory), cache=cross_cache)  # memory not read again
    torch.testing.assert_close(again, first)


def test_kv_cache_writes_in_place_and_doubles_when_full():
    mha = MultiHeadAttention(D, H)
    x = torch.randn(B, 9, D)
    full = mha(x, mask=causal_mask(9))
    cache = {"capacity": 2}
    buffers = []  # (address, capacity) of the key buffer after each step
    for t in range(9):
        step = mha(x[:, t:t + 1], cache=cache)
        torch.testing.assert_close(step[:, 0], full[:, t], rtol=0, atol=1e-5)
        assert cache["k"].shape == (B, H, t + 1, D // H)
        assert cache["k"].data_ptr() == cache["k_buffer"].data_ptr()  # a view, not a copy
        buffers.append((cache["k_buffer"].data_ptr(), cache["k_buffer"].size(2)))
    # One buffer per capacity 2, 4, 8, 16: the other steps wrote into the buffer they had.
    assert [capacity for _, capacity in buffers] == [2, 2, 4, 4, 8, 8, 8, 8, 16]
    assert len({address for address, _ in buffers}) == 4


@pytest.mark.parametrize("fused", [False, True])
def test_is_causal_replaces_the_mask_on_the_fused_path_only(fused, monkeypatch):
    mha = MultiHeadAttention(D, H, fused=fused)
    x = torch.randn(B, T, D)
    explicit = mha(x, mask=causal_mask(T))
    calls = []

    def recording(q, k, v, mask=None, dropout_p=0.0):
        calls.append(mask)
        return scaled_dot_product_attention(q, k, v, mask, dropout_p)

    real_fused = F.scaled_dot_product_attention

    def recording_fused(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False):
        calls.append((attn_mask, is_causal))
        return real_fused(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)

    mha.attention_fn = recording
    monkeypatch.setattr(F, "scaled_dot_product_attention", recording_fused)
    padding = torch.ones(B, 1, 1, T, dtype=torch.bool)  # not causal: only the manual path reads it
    torch.testing.assert_close(mha(x, mask=causal_mask(T), is_causal=True), explicit,
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(mha(x, is_causal=True), explicit, rtol=0, atol=1e-5)
    mha(x, mask=padding, is_causal=True)
    if fused:
        assert calls == [(None, True)] * 3
    else:  # the mask as given; the causal mask built only when none is given
        assert torch.equal(calls[0], causal_mask(T)) and torch.equal(calls[1], causal_mask(T))
        assert calls[2] is padding
    with pytest.raises(ValueError, match="is_causal"):  # keys cached before the queries
        cache = {}
        mha(x[:, :2], cache=cache)
        mha(x[:, 2:], cache=cache, is_causal=True)


def test_the_attention_function_is_set_per_model():
    torch.manual_seed(0)
    cfg = TransformerConfig.tiny(vocab_size=20, dropout=0.0, attention="manual")
    changed, other = Transformer(cfg).eval(), Transformer(cfg).eval()
    other.load_state_dict(changed.state_dict())
    src, tgt_in = torch.tensor([[5, 6, 7, 2, 0]]), torch.tensor([[1, 5, 6]])

    def uniform_attention(q, k, v, mask=None, dropout_p=0.0):  # zero queries: equal weights
        return scaled_dot_product_attention(torch.zeros_like(q), k, v, mask, dropout_p)

    with torch.no_grad():
        before = changed(src, tgt_in)
        for module in changed.modules():
            if isinstance(module, MultiHeadAttention):
                module.attention_fn = uniform_attention
        after, untouched = changed(src, tgt_in), other(src, tgt_in)
    assert not torch.allclose(after, before, atol=1e-4)
    assert torch.equal(untouched, before)
    assert all(m.attention_fn is scaled_dot_product_attention
               for m in other.modules() if isinstance(m, MultiHeadAttention))


@pytest.mark.parametrize("autocast,grad,math_alone", [(True, True, True), (True, False, False),
                                                      (False, True, False)])
def test_bf16_training_on_the_cpu_asks_for_the_math_kernel(autocast, grad, math_alone,
                                                             monkeypatch):
    # PyTorch's CPU flash kernel trains several times slower in bf16 at these sizes; where
    # it is left to PyTorch, the flash kernel stays allowed.
    mha = MultiHeadAttention(D, H, fused=True)
    allowed = []
    real_fused = F.scaled_dot_product_attention

    def recording_fused(*args, **kwargs):
        allowed.append((torch.backends.cuda.flash_sdp_enabled(),
                        torch.backends.cuda.math_sdp_enabled()))
        return real_fused(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording_fused)
    x = torch.randn(B, T, D)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), \
            torch.set_grad_enabled(grad):
        out = mha(x, is_causal=True)
    reference = mha(x, is_causal=True).detach()  # float32, PyTorch's choice
    assert allowed[0] == ((False, True) if math_alone else (True, True))
    assert torch.backends.cuda.flash_sdp_enabled()  # the choice does not outlive the call
    torch.testing.assert_close(out.float().detach(), reference, rtol=0, atol=5e-2)
