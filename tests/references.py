"""What the model tests compare against: tiny configs, padded batches, PyTorch's own stacks.

Shared by test_encoder.py, test_decoder.py, test_model.py and benchmarks/speed.py (not a
test file itself). Our encoder, decoder and model are proven right by loading the same
weights into `nn.TransformerEncoder`, `nn.TransformerDecoder` and `nn.Transformer`, an
independent implementation of the same function, and comparing the outputs. Only the
names differ (`w_qkv` is their `in_proj`, `cross_attn` their `multihead_attn`, ...), and
the layout: the paper's post-LN has no LayerNorm after either stack (its layers already
end with one), so the references get none there; pre-LN gets a final one, as ours does.

Compare in train() mode with dropout 0: in eval() nn.Transformer takes its inference fast
path (fused kernels, padded positions zeroed), which changes the outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from transformer import Transformer, TransformerConfig, causal_mask

VOCAB, PAD, BOS = 40, 0, 1


def tiny(**overrides) -> TransformerConfig:
    """A model small enough that a forward pass takes milliseconds; dropout 0."""
    fields = dict(vocab_size=VOCAB, d_model=32, n_heads=4, d_ff=64, dropout=0.0, max_len=64)
    fields.update(overrides)
    return TransformerConfig.tiny(**fields)


def padded_source(low: int = 1) -> torch.Tensor:
    """(3, 9) ids in [low, VOCAB): a full row, a row with 3 pads, a row with 7 pads."""
    src = torch.randint(low, VOCAB, (3, 9))
    src[1, 6:] = PAD
    src[2, 2:] = PAD
    return src


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """src (3, 9) and tgt_in (3, 6), starting with <bos>, with different amounts of padding."""
    src = padded_source(low=2)  # 2: neither <pad> nor <bos> inside a sentence
    tgt = torch.randint(2, VOCAB, (3, 6))
    tgt[:, 0] = BOS
    tgt[0, 4:] = PAD
    tgt[2, 2:] = PAD
    return src, tgt


def ignore_masks(src: torch.Tensor, tgt: torch.Tensor, pad: int = PAD) -> dict:
    """nn.Transformer's mask arguments for a padded batch: True = IGNORE, the opposite of ours."""
    return dict(src_key_padding_mask=src == pad, tgt_key_padding_mask=tgt == pad,
                memory_key_padding_mask=src == pad,
                tgt_mask=~causal_mask(tgt.size(1), tgt.device))


def assert_same_outputs(ours: torch.Tensor, theirs: torch.Tensor, label: str) -> None:
    """Max abs difference at most 1e-5 (float32 rounding); printed, `pytest -s` shows it."""
    diff = (ours - theirs).abs().max().item()
    print(f"{label}: max abs diff {diff:.2e}")
    assert diff <= 1e-5


# Our parameter names -> PyTorch's, applied in order ("cross_attn.w_qkv.weight" becomes
# "cross_attn.in_proj_weight", then "multihead_attn.in_proj_weight").
RENAMES = [("attn.w_qkv.weight", "attn.in_proj_weight"), ("attn.w_qkv.bias", "attn.in_proj_bias"),
           ("attn.w_o.", "attn.out_proj."), ("cross_attn.", "multihead_attn."),
           ("feed_forward.w_1.", "linear1."), ("feed_forward.w_2.", "linear2."),
           ("final_norm.", "norm.")]


def load_renamed(theirs: nn.Module, ours: nn.Module) -> nn.Module:
    """Copy `ours`'s weights into `theirs` under PyTorch's names; returns `theirs`."""
    state = {}
    for name, tensor in ours.state_dict().items():
        for a, b in RENAMES:
            name = name.replace(a, b)
        state[name] = tensor
    theirs.load_state_dict(state)  # strict: every parameter on both sides is mapped
    return theirs


def _layer(kind: type, cfg: TransformerConfig) -> nn.Module:
    """One nn layer with our dropout placement (nn uses one rate for every dropout)."""
    layer = kind(cfg.d_model, cfg.n_heads, cfg.d_ff, dropout=cfg.dropout,
                 layer_norm_eps=cfg.layer_norm_eps, batch_first=True, norm_first=cfg.norm_first)
    # Residual dropout keeps cfg.dropout (their dropout1/2/3); the attention weights and
    # the feed-forward's hidden layer get ours.
    for attention in (layer.self_attn, getattr(layer, "multihead_attn", None)):
        if attention is not None:
            attention.dropout = cfg.attention_dropout
    layer.dropout.p = cfg.activation_dropout
    return layer


def _final_norm(cfg: TransformerConfig) -> nn.LayerNorm | None:
    return nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.norm_first else None


def _encoder_stack(cfg: TransformerConfig) -> nn.TransformerEncoder:
    # No nested tensors: they only serve the eval() fast path, and zero padded positions.
    return nn.TransformerEncoder(_layer(nn.TransformerEncoderLayer, cfg), cfg.n_encoder_layers,
                                 norm=_final_norm(cfg), enable_nested_tensor=False)


def _decoder_stack(cfg: TransformerConfig) -> nn.TransformerDecoder:
    return nn.TransformerDecoder(_layer(nn.TransformerDecoderLayer, cfg), cfg.n_decoder_layers,
                                 norm=_final_norm(cfg))


def reference_encoder(encoder: nn.Module, cfg: TransformerConfig) -> nn.TransformerEncoder:
    """An nn.TransformerEncoder holding a copy of `encoder`'s weights."""
    return load_renamed(_encoder_stack(cfg), encoder)


def reference_decoder(decoder: nn.Module, cfg: TransformerConfig) -> nn.TransformerDecoder:
    """An nn.TransformerDecoder holding a copy of `decoder`'s weights."""
    return load_renamed(_decoder_stack(cfg), decoder)


def reference_transformer(model: Transformer) -> nn.Transformer:
    """An nn.Transformer (batch_first) holding a copy of our two stacks' weights.

    Embeddings and output projection are not part of nn.Transformer: callers apply ours.
    """
    cfg = model.cfg
    ref = nn.Transformer(cfg.d_model, cfg.n_heads, custom_encoder=_encoder_stack(cfg),
                         custom_decoder=_decoder_stack(cfg), batch_first=True)
    # nn.Transformer re-initialises every matrix, custom stacks included: copy after it.
    load_renamed(ref.encoder, model.encoder)
    load_renamed(ref.decoder, model.decoder)
    return ref
