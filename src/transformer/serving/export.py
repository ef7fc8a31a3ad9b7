"""Export a trained run to CTranslate2, the C++ inference engine people deploy with on CPUs.

    transformer export RUN_DIR --to ctranslate2 --out DIR [--quantization int8] [--checkpoint NAME]

The package's own converter API does the writing: `RunConverter` fills a
`ctranslate2.specs.TransformerSpec` from the run's weights and vocabularies, and
`Converter.convert` validates, quantizes and saves it. What has to be right for the
engine to compute what this project computes:

    positions        this project's table (sines on even columns, cosines on odd; or the
                     learned one), not the engine's built-in layout
    attention        self-attention's W^Q, W^K, W^V matrix (3D, D) is the engine's fused
                     projection as it is; cross-attention splits it into the query
                     projection and a fused key/value one
    embeddings       scaled by sqrt(d_model) (the spec's scale_embeddings); tied matrices
                     given as the same array
    layer norms      post-LN (the paper) or pre-LN with the final norms, eps as trained
    tokens           the source gets <eos> (add_source_eos); decoding starts from <bos>

The engine ranks a beam by log P / |Y|^alpha, not by GNMT's ((5 + |Y|) / 6)^alpha, and
renormalises when tokens are suppressed: ask it for the beam's hypotheses and re-rank
them to match this project's beam search exactly. Greedy decoding (beam 1) matches token
for token (tests/test_export.py).

    import ctranslate2
    translator = ctranslate2.Translator("model-ct2")
    translator.translate_batch([source.encode(text) as tokens...])
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError, one_line
from ..run.ablated_attention import WRONG_ATTENTIONS
from ..run.rundir import LoadedRun, load_run

QUANTIZATIONS = ("float32", "int8", "int8_float32", "bfloat16")


def export_ctranslate2(run_dir: str | os.PathLike, out: str | os.PathLike,
                       quantization: str = "float32", checkpoint: str | None = None,
                       overwrite: bool = False) -> Path:
    """Write the run's model (the catalogue's checkpoint, or `checkpoint`) to `out`."""
    try:
        from ctranslate2.converters import Converter
    except ImportError:
        raise UserError('export: the ctranslate2 package is not installed; install it with '
                        'pip install -e ".[export]"') from None
    if quantization not in QUANTIZATIONS:
        raise UserError(f"--quantization {quantization}: expected one of "
                        f"{', '.join(QUANTIZATIONS)}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists; use --overwrite to replace it")
    run = load_run(run_dir, checkpoint)
    variant = (run.settings.ablation or {}).get("variant")
    if variant in WRONG_ATTENTIONS:
        raise UserError(f"{run_dir}: trained with the attention of the ablation {variant!r} "
                        f"({WRONG_ATTENTIONS[variant].__name__}), which CTranslate2 cannot express")

    class RunConverter(Converter):
        def _load(self):
            return transformer_spec(run)

    try:
        RunConverter().convert(str(out), quantization=quantization, force=overwrite)
    except (RuntimeError, ValueError, OSError) as error:
        raise UserError(f"export to {out}: {one_line(error)}") from None
    return out


def transformer_spec(run: LoadedRun):
    """The TransformerSpec of a loaded run, every weight given (see the module docstring)."""
    from ctranslate2.specs import common_spec
    from ctranslate2.specs.transformer_spec import TransformerSpec

    model, cfg = run.model, run.model.cfg
    spec = TransformerSpec.from_config((cfg.n_encoder_layers, cfg.n_decoder_layers), cfg.n_heads,
                                       pre_norm=cfg.norm_first,
                                       activation=common_spec.Activation.RELU)
    _embeddings(spec.encoder, model.src_embed, cfg.max_len)
    _embeddings(spec.decoder, model.tgt_embed, cfg.max_len)
    for layer_spec, layer in zip(spec.encoder.layer, model.encoder.layers):
        _self_attention(layer_spec.self_attention, layer.self_attn, layer.norm1)
        _feed_forward(layer_spec.ffn, layer.feed_forward, layer.norm2)
    for layer_spec, layer in zip(spec.decoder.layer, model.decoder.layers):
        _self_attention(layer_spec.self_attention, layer.self_attn, layer.norm1)
        _cross_attention(layer_spec.attention, layer.cross_attn, layer.norm2)
        _feed_forward(layer_spec.ffn, layer.feed_forward, layer.norm3)
    if cfg.norm_first:
        _norm(spec.encoder.layer_norm, model.encoder.final_norm)
        _norm(spec.decoder.layer_norm, model.decoder.final_norm)
    spec.decoder.projection.weight = _array(model.generator.weight)
    spec.decoder.projection.bias = _array(model.generator.weight.new_zeros(cfg.tgt_vocab_size))
    spec.config.bos_token, spec.config.eos_token = "<bos>", "<eos>"
    spec.config.unk_token, spec.config.decoder_start_token = "<unk>", "<bos>"
    spec.config.add_source_eos = True
    spec.config.layer_norm_epsilon = cfg.layer_norm_eps
    spec.register_source_vocabulary([run.source.token(i) for i in range(cfg.src_vocab_size)])
    spec.register_target_vocabulary([run.target.token(i) for i in range(cfg.tgt_vocab_size)])
    return spec


def _array(tensor):
    return tensor.detach().float().cpu().numpy()


def _embeddings(stack_spec, embed, max_len: int) -> None:
    """Token table (scaled by sqrt(d_model) in the engine, as here) and the positions."""
    weight = embed.token_embedding.weight
    # The encoder's spec holds a list of tables (one per source feature); the decoder one.
    tables = stack_spec.embeddings if isinstance(stack_spec.embeddings, list) else [stack_spec.embeddings]
    tables[0].weight = _array(weight)
    stack_spec.scale_embeddings = True
    positions = embed.positions if embed.positions is not None else embed.learned_positions.weight
    stack_spec.position_encodings.encodings = _array(positions[:max_len])


def _linear(linear_spec, weight, bias) -> None:
    linear_spec.weight, linear_spec.bias = _array(weight), _array(bias)


def _norm(norm_spec, norm) -> None:
    norm_spec.gamma, norm_spec.beta = _array(norm.weight), _array(norm.bias)


def _self_attention(attention_spec, attention, norm) -> None:
    _linear(attention_spec.linear[0], attention.w_qkv.weight, attention.w_qkv.bias)
    _linear(attention_spec.linear[1], attention.w_o.weight, attention.w_o.bias)
    _norm(attention_spec.layer_norm, norm)


def _cross_attention(attention_spec, attention, norm) -> None:
    D = attention.d_model
    weight, bias = attention.w_qkv.weight, attention.w_qkv.bias
    _linear(attention_spec.linear[0], weight[:D], bias[:D])  # the queries, from the decoder
    _linear(attention_spec.linear[1], weight[D:], bias[D:])  # keys and values, from memory
    _linear(attention_spec.linear[2], attention.w_o.weight, attention.w_o.bias)
    _norm(attention_spec.layer_norm, norm)


def _feed_forward(ffn_spec, feed_forward, norm) -> None:
    _linear(ffn_spec.linear_0, feed_forward.w_1.weight, feed_forward.w_1.bias)
    _linear(ffn_spec.linear_1, feed_forward.w_2.weight, feed_forward.w_2.bias)
    _norm(ffn_spec.layer_norm, norm)
