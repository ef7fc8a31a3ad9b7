"""TransformerConfig: the paper's presets (Table 3) and validation of every field.

Pins down:
- `base()` and `big()` are the two models of Table 3 (N, d_model, d_ff, h, P_drop), and
  d_k = d_v = d_model / h (Section 3.2.2);
- a bad value raises ValueError *before any tensor is built*, and the message names the
  field, so a user can fix a recipe or a `--set KEY=VALUE` without reading a traceback.
"""

import pytest

from transformer import Transformer, TransformerConfig


def test_presets_match_table_3():
    base = TransformerConfig.base(vocab_size=37000)
    assert (base.n_encoder_layers, base.n_decoder_layers) == (6, 6)
    assert (base.d_model, base.d_ff, base.n_heads, base.dropout) == (512, 2048, 8, 0.1)
    assert base.d_model // base.n_heads == 64  # d_k = d_v (Section 3.2.2)
    assert base.src_vocab_size == base.tgt_vocab_size == 37000

    big = TransformerConfig.big(vocab_size=37000)
    assert (big.n_encoder_layers, big.n_decoder_layers) == (6, 6)
    assert (big.d_model, big.d_ff, big.n_heads, big.dropout) == (1024, 4096, 16, 0.3)
    assert big.d_model // big.n_heads == 64

    # The paper's defaults: post-LN, sinusoids, all three matrices shared (Section 3.4).
    for cfg in (base, big):
        assert cfg.norm_first is False
        assert cfg.positional == "sinusoidal"
        assert cfg.tie_embeddings == "all"


def test_preset_overrides_and_replace_are_validated():
    cfg = TransformerConfig.tiny(vocab_size=50, dropout=0.0, norm_first=True)
    assert (cfg.src_vocab_size, cfg.dropout, cfg.norm_first) == (50, 0.0, True)
    assert cfg.replace(n_heads=8).n_heads == 8
    with pytest.raises(ValueError, match="n_heads"):
        cfg.replace(n_heads=3)  # 64 % 3 != 0
    with pytest.raises(ValueError, match="dropout"):
        TransformerConfig.tiny(dropout=1.5)


# (field changes, text the message must contain)
INVALID = [
    (dict(d_model=30, n_heads=4), "n_heads"),
    (dict(d_model=30, n_heads=4), "d_model"),
    (dict(dropout=-0.1), "dropout"),
    (dict(dropout=1.0), "dropout"),
    (dict(dropout="0.1"), "dropout"),
    (dict(attention_dropout=1.0), "attention_dropout"),
    (dict(activation_dropout=-0.5), "activation_dropout"),
    (dict(src_vocab_size=100, tgt_vocab_size=200, tie_embeddings="all"), "tie_embeddings"),
    (dict(src_vocab_size=0), "src_vocab_size"),
    (dict(tgt_vocab_size=-5, tie_embeddings="none"), "tgt_vocab_size"),
    (dict(d_model=0), "d_model"),
    (dict(n_heads=0), "n_heads"),
    (dict(n_heads=-8), "n_heads"),
    (dict(n_encoder_layers=0), "n_encoder_layers"),
    (dict(n_decoder_layers=-1), "n_decoder_layers"),
    (dict(d_ff=0), "d_ff"),
    (dict(max_len=0), "max_len"),
    (dict(d_model=512.0), "d_model"),  # sizes are integers, not floats
    (dict(n_heads=True), "n_heads"),  # nor booleans
    (dict(layer_norm_eps=0.0), "layer_norm_eps"),
    (dict(norm_first="yes"), "norm_first"),
    (dict(positional="rotary"), "positional"),
    (dict(attention="flash"), "attention"),
    (dict(tie_embeddings="encoder"), "tie_embeddings"),
    (dict(tie_embeddings=True), "tie_embeddings"),
    (dict(pad_id=-1), "pad_id"),
    (dict(pad_id=8000), "pad_id"),
]


@pytest.mark.parametrize("changes, field", INVALID, ids=[f"{f}:{c}" for c, f in INVALID])
def test_invalid_config_raises_value_error_naming_the_field(changes, field):
    with pytest.raises(ValueError) as info:
        TransformerConfig(**changes)
    assert field in str(info.value)


def test_unequal_vocabularies_are_fine_without_full_tying():
    for tie in ("decoder", "none"):
        cfg = TransformerConfig.tiny(src_vocab_size=100, tgt_vocab_size=200, tie_embeddings=tie)
        model = Transformer(cfg)
        assert model.src_embed.token_embedding.num_embeddings == 100
        assert model.generator.out_features == 200


def test_valid_edge_values_are_accepted():
    TransformerConfig(dropout=0.0, d_model=8, n_heads=8, d_ff=1, max_len=1,
                      src_vocab_size=1, tgt_vocab_size=1)
    TransformerConfig(dropout=0.999, n_encoder_layers=1, n_decoder_layers=1)
