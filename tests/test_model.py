"""The whole Transformer (Section 3, Figure 1): embeddings, encoder, decoder, output projection.

Pins down:
- the shape of every stage, for batch 1 and batch > 1, every dimension a different size so
  that none can hide: embeddings (B, S, D); per-head q, k, v (B, H, S, D/H); weights
  (B, H, T, S); encoder (B, S, D); decoder (B, T, D); logits (B, T, V);
- the model computes what torch.nn.TransformerEncoder/Decoder compute with the same
  weights (+ our embeddings and output projection), post-LN and pre-LN, with padding in
  the batch; measured max abs diffs, float32, on the test sizes (the test prints them):
  0 with the fused attention path; with the manual one, post-LN encoder 7.2e-7, decoder
  8.9e-7, logits 9.5e-7, pre-LN encoder 7.2e-7, decoder 8.1e-7, logits 8.3e-7;
- parameter counts of the paper's models: base 63.08 M (paper: 65 M), big 214.25 M
  (paper: 213 M) with a 37000-token shared vocabulary; weight tying (Section 3.4) shares
  one storage, and each untied matrix adds exactly V * d_model parameters;
- robustness: a fully padded source row gives finite outputs and finite gradients
  everywhere, and `torch.autograd.gradcheck` passes through encoder and decoder in float64;
- training's causal fast path (`pad_outputs_unused=True`): on a right-padded target the
  decoder's fused self-attention runs with `is_causal=True` and no mask tensor, and the
  logits at every real position, the loss and every gradient are those of the explicit
  mask; a left-padded or gapped target, a cached decode, the manual path and a call
  that does not ask all keep the explicit mask; the training update asks.
"""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from transformer import (
    Transformer,
    TransformerConfig,
    padding_mask,
    scaled_dot_product_attention,
)
from transformer.model.masks import decoder_self_mask
from transformer.training.config import TrainConfig
from transformer.training.distributed import Distributed
from transformer.training.loss import label_smoothed_loss
from transformer.training.schedule import adam, make_scheduler
from transformer.training.update import update

from references import (
    PAD,
    VOCAB,
    ignore_masks,
    padded_batch,
    reference_transformer,
    tiny,
)

# --- shapes ---------------------------------------------------------------------------

def record_split_heads(module) -> list:
    """Make `module.split_heads` note the shape of every per-head tensor it returns."""
    seen = []
    split_heads = module.split_heads

    def recording(x):
        out = split_heads(x)
        seen.append(tuple(out.shape))
        return out

    module.split_heads = recording
    return seen


@pytest.mark.parametrize("batch", [1, 3])
def test_shapes_of_every_stage(batch):
    cfg = tiny()
    D, H, V, S, T = cfg.d_model, cfg.n_heads, VOCAB, 9, 5  # all different, so no dim can hide
    model = Transformer(cfg).eval()
    outputs = {}
    for name in ("src_embed", "tgt_embed", "encoder", "decoder", "generator"):
        getattr(model, name).register_forward_hook(
            lambda module, args, out, name=name: outputs.__setitem__(name, out.shape))
    heads = {}  # attention module name -> shapes of q, k, v, in the order split_heads sees them
    attention = {n: m for n, m in model.named_modules() if n.endswith("attn")}
    for name, module in attention.items():
        module.record_weights = True  # keeps the (B, H, T, S) weights of the last call
        heads[name] = record_split_heads(module)

    logits = model(torch.randint(2, V, (batch, S)), torch.randint(2, V, (batch, T)))

    assert outputs == {"src_embed": (batch, S, D), "tgt_embed": (batch, T, D),
                       "encoder": (batch, S, D), "decoder": (batch, T, D),
                       "generator": (batch, T, V)}
    assert logits.shape == (batch, T, V)
    d_k = D // H
    for name, module in attention.items():
        if name.startswith("encoder"):  # self-attention over the source
            assert heads[name] == [(batch, H, S, d_k)] * 3
            assert module.weights.shape == (batch, H, S, S)
        elif name.endswith("cross_attn"):  # queries from the target, keys/values from the source
            assert heads[name] == [(batch, H, T, d_k), (batch, H, S, d_k), (batch, H, S, d_k)]
            assert module.weights.shape == (batch, H, T, S)
        else:  # masked self-attention over the target
            assert heads[name] == [(batch, H, T, d_k)] * 3
            assert module.weights.shape == (batch, H, T, T)
    assert len(attention) == cfg.n_encoder_layers + 2 * cfg.n_decoder_layers


def test_forward_is_decode_of_encode():
    model = Transformer(tiny()).eval()
    src, tgt = padded_batch()
    memory = model.encode(src)
    torch.testing.assert_close(model(src, tgt), model.decode(tgt, memory, src), rtol=0, atol=0)
    # Without the source, cross-attention would also look at the memory's padding.
    assert not torch.allclose(model.decode(tgt, memory), model(src, tgt), atol=1e-4)


# --- equivalence with torch.nn.Transformer ----------------------------------------------

@pytest.mark.parametrize("attention", ["fused", "manual"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_same_as_nn_transformer(norm_first, attention):
    model = Transformer(tiny(norm_first=norm_first, attention=attention)).train()  # dropout 0
    ref = reference_transformer(model).train()  # train(): no fast path, no other outputs
    src, tgt = padded_batch()
    # nn.Transformer's masks: True = IGNORE, the opposite of ours; convert here, at the boundary.
    ignore = ignore_masks(src, tgt)
    src_x, tgt_x = model.src_embed(src), model.tgt_embed(tgt)

    memory = model.encode(src)
    ref_memory = ref.encoder(src_x, src_key_padding_mask=ignore["src_key_padding_mask"])
    out = model.decoder(tgt_x, memory, decoder_self_mask(tgt, PAD), padding_mask(src, PAD))
    ref_out = ref.decoder(tgt_x, ref_memory, tgt_mask=ignore["tgt_mask"],
                          tgt_key_padding_mask=ignore["tgt_key_padding_mask"],
                          memory_key_padding_mask=ignore["memory_key_padding_mask"])
    logits = model(src, tgt)
    ref_logits = model.generator(ref(src_x, tgt_x, **ignore))

    diffs = {"encoder": (memory - ref_memory).abs().max().item(),
             "decoder": (out - ref_out).abs().max().item(),
             "logits": (logits - ref_logits).abs().max().item()}
    print(f"vs nn.Transformer ({'pre' if norm_first else 'post'}-LN, {attention}): "
          + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    assert all(d <= 1e-5 for d in diffs.values()), diffs
    assert logits.abs().max() > 0.1  # a real comparison, not of two near-zero tensors


# --- the causal fast path of training ---------------------------------------------------

def record_fused_calls(monkeypatch) -> list:
    """Note (queries, keys, is_causal, mask given) of every F.scaled_dot_product_attention call."""
    functional = torch.nn.functional
    calls, real = [], functional.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False):
        calls.append((q.size(2), k.size(2), is_causal, attn_mask is not None))
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)

    monkeypatch.setattr(functional, "scaled_dot_product_attention", recording)
    return calls


def self_attention_calls(calls: list, T: int) -> set:
    """(is_causal, mask given) of the decoder self-attention calls: T queries, T keys (S != T)."""
    return {(causal, masked) for q, k, causal, masked in calls if q == k == T}


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_causal_fast_path_gives_the_same_loss_and_gradients(norm_first, monkeypatch):
    model = Transformer(tiny(norm_first=norm_first)).train()  # dropout 0
    src, tgt = padded_batch()  # right-padded target: rows of 4, 6 and 2 real positions
    keep = tgt != PAD
    tgt_out = torch.randint(2, VOCAB, tgt.shape).masked_fill(~keep, PAD)
    calls = record_fused_calls(monkeypatch)

    def run(fast: bool):
        calls.clear()
        model.zero_grad()
        logits = model(src, tgt, pad_outputs_unused=fast)
        loss = label_smoothed_loss(logits, tgt_out, 0.1, PAD).loss
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        return logits.detach(), loss.detach(), grads, self_attention_calls(calls, 6)

    explicit, loss, grads, slow_calls = run(fast=False)
    causal, fast_loss, fast_grads, fast_calls = run(fast=True)
    assert slow_calls == {(False, True)} and fast_calls == {(True, False)}
    torch.testing.assert_close(causal[keep], explicit[keep], rtol=0, atol=1e-5)
    # The <pad> positions did see other keys (so the kernel really had no mask), and
    # nothing of that reached the loss or the gradients.
    assert (causal[~keep] - explicit[~keep]).abs().max() > 1e-3
    torch.testing.assert_close(fast_loss, loss, rtol=0, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_causal_fast_path_only_where_it_is_valid(monkeypatch):
    model = Transformer(tiny()).eval()
    src, tgt = padded_batch()
    left = torch.stack([row.roll(int((row == PAD).sum())) for row in tgt])  # pads first
    gap = tgt.clone()
    gap[1, 2] = PAD  # <bos> a <pad> b c d
    calls = record_fused_calls(monkeypatch)
    for target in (left, gap):
        calls.clear()
        fast = model(src, target, pad_outputs_unused=True)
        assert self_attention_calls(calls, 6) == {(False, True)}  # the explicit mask
        torch.testing.assert_close(fast, model(src, target), rtol=0, atol=0)

    # A cached decode never: its new positions come after the cached keys.
    calls.clear()
    memory, cache = model.encode(src), model.decoder.new_cache()
    for t in range(3):
        model.decode(tgt[:, t:t + 1], memory, src, cache=cache, pad_outputs_unused=True)
    assert not any(causal for _, _, causal, _ in calls)

    # The manual path reads the explicit mask, whatever the caller says: an ablation's
    # attention_fn sees what it always saw.
    manual = Transformer(tiny(attention="manual")).eval()
    seen = []

    def recording(q, k, v, mask=None, dropout_p=0.0):
        seen.append(mask)
        return scaled_dot_product_attention(q, k, v, mask, dropout_p)

    for layer in manual.decoder.layers:
        layer.self_attn.attention_fn = recording
    manual(src, tgt, pad_outputs_unused=True)
    assert len(seen) == 2 and all(torch.equal(m, decoder_self_mask(tgt, PAD)) for m in seen)


def test_the_training_update_takes_the_fast_path(monkeypatch):
    model = Transformer(tiny())
    optimizer = adam(model.parameters())
    scheduler = make_scheduler(optimizer, "noam", model.cfg.d_model, 10, 1.0)
    src, tgt = padded_batch()
    tgt_out = torch.randint(2, VOCAB, tgt.shape).masked_fill(tgt == PAD, PAD)
    calls = record_fused_calls(monkeypatch)
    result = update(model, optimizer, scheduler, [(src, tgt, tgt_out)], TrainConfig(), PAD,
                    Distributed())
    assert self_attention_calls(calls, 6) == {(True, False)}
    assert result.problem is None and result.n_tokens == int((tgt_out != PAD).sum())
    assert isinstance(result.loss_sum, float) and isinstance(result.nll_sum, float)


# --- parameter counts and weight tying ---------------------------------------------------

def expected_parameters(cfg: TransformerConfig) -> int:
    """Counted by hand from the paper's layers (biases and LayerNorm gains included)."""
    D, F = cfg.d_model, cfg.d_ff
    attention = 4 * D * D + 4 * D  # W^Q, W^K, W^V, W^O and their biases
    feed_forward = D * F + F + F * D + D
    norm = 2 * D  # gain and bias
    encoder = cfg.n_encoder_layers * (attention + feed_forward + 2 * norm)
    decoder = cfg.n_decoder_layers * (2 * attention + feed_forward + 3 * norm)
    final_norms = 2 * norm if cfg.norm_first else 0
    # The (V, D) matrices left after tying: source table, target table, output projection.
    rows = {"all": [cfg.src_vocab_size],
            "decoder": [cfg.src_vocab_size, cfg.tgt_vocab_size],
            "none": [cfg.src_vocab_size, cfg.tgt_vocab_size, cfg.tgt_vocab_size]}
    embeddings = sum(V * D for V in rows[cfg.tie_embeddings])
    return encoder + decoder + final_norms + embeddings


def test_base_model_size_and_tying():
    cfg = TransformerConfig.base(vocab_size=37000)
    model = Transformer(cfg)  # the real thing, built once (a second or so)
    n = model.num_parameters()
    print(f"base, tie 'all': {n:,} parameters")
    assert 63e6 <= n <= 66e6  # paper, Table 3: 65 M
    assert n == expected_parameters(cfg)
    # One storage for source embedding, target embedding and pre-softmax projection.
    table = model.src_embed.token_embedding.weight
    assert model.tgt_embed.token_embedding.weight is table
    assert model.generator.weight is table
    assert model.generator.weight.data_ptr() == table.data_ptr()


@pytest.mark.parametrize("tie", ["all", "decoder", "none"])
def test_untied_matrices_add_v_times_d_model(tie):
    cfg = tiny(vocab_size=300)
    V, D = 300, cfg.d_model
    n_all = Transformer(cfg).num_parameters()
    n_tie = Transformer(cfg.replace(tie_embeddings=tie)).num_parameters()
    assert n_tie - n_all == {"all": 0, "decoder": V * D, "none": 2 * V * D}[tie]


def test_big_model_size():
    cfg = TransformerConfig.big(vocab_size=37000)
    with torch.device("meta"):  # 214 M parameters: count them without allocating 0.9 GB
        model = Transformer(cfg)
    n = model.num_parameters()
    print(f"big, tie 'all': {n:,} parameters")
    assert 205e6 <= n <= 216e6  # paper, Table 3: 213 M
    assert n == expected_parameters(cfg)


@pytest.mark.parametrize("tie", ["all", "decoder", "none"])
def test_tying_shares_storage_and_training_updates(tie):
    model = Transformer(tiny(tie_embeddings=tie))
    src_w = model.src_embed.token_embedding.weight
    tgt_w = model.tgt_embed.token_embedding.weight
    gen_w = model.generator.weight
    assert (src_w is tgt_w) == (tie == "all")
    assert (gen_w is tgt_w) == (tie in ("all", "decoder"))
    assert model.num_parameters() == expected_parameters(model.cfg)
    # A tied matrix takes the gradient of all its uses, and one step moves every use.
    src, tgt = padded_batch()
    model(src, tgt).logsumexp(-1).sum().backward()
    before = gen_w.detach().clone()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(gen_w, before)
    if tie != "none":
        assert torch.equal(tgt_w, gen_w)


def test_learned_positions_add_one_table_per_side():
    cfg = tiny(positional="learned")
    extra = Transformer(cfg).num_parameters() - Transformer(tiny()).num_parameters()
    assert extra == 2 * cfg.max_len * cfg.d_model  # source and target each have their own


def test_initialisation():
    cfg = tiny(d_model=64, tie_embeddings="none")
    model = Transformer(cfg)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):  # Xavier uniform: |w| <= sqrt(6 / (fan_in + fan_out))
            bound = (6 / (module.in_features + module.out_features)) ** 0.5
            assert module.weight.abs().max() <= bound, name
            assert module.weight.abs().max() > 0.9 * bound, name
            assert module.bias is None or torch.all(module.bias == 0), name
    for table in (model.src_embed.token_embedding, model.tgt_embed.token_embedding):
        # N(0, d_model^-0.5): times sqrt(d_model), unit variance at the input.
        std = table.weight[1:].std().item()
        assert abs(std - cfg.d_model ** -0.5) < 0.1 * cfg.d_model ** -0.5


def test_pad_embedding_starts_at_zero():
    model = Transformer(tiny(tie_embeddings="none", pad_id=3))
    assert torch.all(model.src_embed.token_embedding.weight[3] == 0)
    assert torch.all(model.tgt_embed.token_embedding.weight[3] == 0)


# --- robustness ------------------------------------------------------------------------

@pytest.mark.parametrize("attention", ["fused", "manual"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_fully_padded_source_row_stays_finite(norm_first, attention):
    model = Transformer(tiny(norm_first=norm_first, attention=attention, dropout=0.1)).train()
    src, tgt = padded_batch()
    src[1] = PAD  # nothing at all to attend to, in encoder self-attention and cross-attention
    logits = model(src, tgt)
    assert torch.isfinite(logits).all()
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=PAD)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # The other sentences do not notice the empty one.
    model.eval()
    full = model(src, tgt)
    for b in (0, 2):
        torch.testing.assert_close(model(src[b:b + 1], tgt[b:b + 1])[0], full[b], rtol=0, atol=1e-5)


@pytest.mark.parametrize("attention", ["fused", "manual"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_gradcheck_through_encoder_and_decoder(norm_first, attention):
    cfg = TransformerConfig(src_vocab_size=11, tgt_vocab_size=11, d_model=8, n_heads=2,
                            n_encoder_layers=1, n_decoder_layers=1, d_ff=12, dropout=0.0,
                            max_len=8, norm_first=norm_first, attention=attention)
    model = Transformer(cfg).double()
    src = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0], [0, 0, 0, 0]])  # padded and fully padded rows
    tgt = torch.tensor([[1, 9, 2], [1, 5, 0], [1, 3, 4]])
    src_mask, self_mask = padding_mask(src, PAD), decoder_self_mask(tgt, PAD)
    src_x = model.src_embed(src).detach().requires_grad_()
    tgt_x = model.tgt_embed(tgt).detach().requires_grad_()
    name = "layers.0.cross_attn.w_qkv.weight"
    weight = model.decoder.get_parameter(name).detach().clone().requires_grad_()

    def logits(src_x, tgt_x, weight):
        memory = model.encoder(src_x, src_mask)
        h = functional_call(model.decoder, {name: weight}, (tgt_x, memory, self_mask, src_mask))
        return model.generator(h)

    # fast_mode checks a random projection u^T J v of the Jacobian against finite
    # differences: a wrong entry anywhere shows, at a hundredth of the full check's cost.
    assert torch.autograd.gradcheck(logits, (src_x, tgt_x, weight), eps=1e-6, atol=1e-5,
                                    fast_mode=True)
