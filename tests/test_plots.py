"""Executable spec of plots.py: metrics.jsonl -> learning-curve PNGs, several runs'
training losses -> one PNG, and recorded attention weights -> one heatmap PNG per kind
and layer."""

import pytest
import torch

import transformer as T
from transformer.decoding.attention_maps import collect_attention, recording_attention
from transformer.errors import UserError
from transformer.experiments.plots import (
    plot_attention,
    plot_curves,
    plot_losses,
    smooth,
)

from kit import write_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_bytes=5_000):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert len(data) >= min_bytes, f"{path.name} is only {len(data)} bytes: is anything drawn?"


def test_smooth_starts_at_the_first_value_and_keeps_a_constant():
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    smoothed = smooth([4.0, 0.0])
    assert smoothed[0] == pytest.approx(4.0) and 0.0 < smoothed[1] < 4.0


# --- curves ----------------------------------------------------------------------------

def test_plot_curves_writes_loss_lr_and_bleu(tmp_path):
    write_metrics(tmp_path, bleu=True)
    paths = plot_curves(tmp_path)
    assert sorted(p.name for p in paths) == ["bleu.png", "loss.png", "lr.png"]
    for path in paths:
        assert path.parent == tmp_path / "plots"
        assert_png(path)


def test_bleu_only_when_present_and_exact_match_when_present(tmp_path):
    write_metrics(tmp_path, bleu=False, exact_match=True)
    out = tmp_path / "elsewhere"
    paths = plot_curves(tmp_path, out_dir=out)
    assert sorted(p.name for p in paths) == ["exact_match.png", "loss.png", "lr.png"]
    assert not (out / "bleu.png").exists()
    assert not (tmp_path / "plots").exists()
    for path in paths:
        assert_png(path)


def test_missing_metrics_file_raises_user_error_naming_it(tmp_path):
    with pytest.raises(UserError, match="metrics.jsonl"):
        plot_curves(tmp_path)


def test_metrics_with_no_records_raises_user_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "st')  # only a truncated line
    with pytest.raises(UserError, match="no records"):
        plot_curves(tmp_path)


def test_plot_losses_draws_every_run_with_a_curve(tmp_path):
    steps = list(range(10, 210, 10))
    curves = {"baseline": (steps, [4.0 / (1 + s / 50) for s in steps]),
              "no-warmup": (steps, [6.0 / (1 + s / 100) for s in steps]),
              "diverged": ([], [])}  # no record: left out, not an error
    path = plot_losses(curves, tmp_path / "ablation.png")
    assert path == tmp_path / "ablation.png"
    assert_png(path)


def test_plot_losses_to_an_unwritable_place_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot write"):
        plot_losses({"baseline": ([1, 2], [2.0, 1.0])}, tmp_path / "missing" / "ablation.png")


# --- attention -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def recorded():
    """A tiny model run once with recording on; source element 0 ends in two pads."""
    torch.manual_seed(0)
    cfg = T.TransformerConfig.tiny(vocab_size=50)
    model = T.Transformer(cfg).eval()
    src = torch.tensor([[5, 6, 7, 8, 9, 0, 0], [5, 6, 7, 8, 9, 10, 11]])  # (B=2, S=7)
    tgt_in = torch.tensor([[1, 12, 13, 14, 15], [1, 12, 13, 14, 15]])     # (B=2, T=5)
    with torch.no_grad():
        fused = model(src, tgt_in)
        with recording_attention(model):
            recorded_logits = model(src, tgt_in)
    return cfg, model, fused, recorded_logits, collect_attention(model)


def test_recording_is_switched_off_afterwards_and_changes_no_result(recorded):
    _, model, fused, recorded_logits, _ = recorded
    attention = [m for m in model.modules() if isinstance(m, T.MultiHeadAttention)]
    assert len(attention) == 2 + 2 * 2
    assert all(m.record_weights is False for m in attention)
    torch.testing.assert_close(recorded_logits, fused, atol=1e-5, rtol=1e-5)


def test_collect_attention_layers_and_shapes(recorded):
    cfg, _, _, _, maps = recorded
    H, S, T_ = cfg.n_heads, 7, 5
    assert set(maps) == {"encoder", "decoder_self", "cross"}
    assert len(maps["encoder"]) == cfg.n_encoder_layers
    assert len(maps["decoder_self"]) == len(maps["cross"]) == cfg.n_decoder_layers
    assert all(w.shape == (H, S, S) for w in maps["encoder"])
    assert all(w.shape == (H, T_, T_) for w in maps["decoder_self"])
    assert all(w.shape == (H, T_, S) for w in maps["cross"])


def test_collected_weights_are_distributions_that_respect_the_masks(recorded):
    _, _, _, _, maps = recorded
    for w in maps["encoder"] + maps["cross"]:
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
        assert torch.all(w[..., 5:] == 0)  # the two padded source keys get nothing
    for w in maps["decoder_self"]:
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
        assert torch.all(w.triu(diagonal=1) == 0)  # no query sees a later position


def test_collect_attention_without_recording_says_what_to_do():
    model = T.Transformer(T.TransformerConfig.tiny(vocab_size=50))
    with pytest.raises(RuntimeError, match="recording_attention"):
        collect_attention(model)


def test_plot_attention_writes_one_png_per_kind_and_layer(recorded, tmp_path):
    _, _, _, _, maps = recorded
    src_tokens = ["the", "cat", "sat", "$5", "<eos>", "<pad>", "<pad>"]
    tgt_tokens = ["<bos>", "die", "Katze", "saß", "."]
    paths = plot_attention(maps, src_tokens, tgt_tokens, tmp_path / "att")
    assert sorted(p.name for p in paths) == sorted(
        f"attention-{kind}-layer{n}.png" for kind in ("encoder", "decoder-self", "cross")
        for n in (1, 2))
    for path in paths:
        assert_png(path, min_bytes=10_000)


def test_plot_attention_rejects_tokens_that_do_not_match_the_maps(recorded, tmp_path):
    _, _, _, _, maps = recorded
    with pytest.raises(ValueError, match="encoder layer 1"):
        plot_attention({"encoder": maps["encoder"]}, ["a", "b"], [], tmp_path)
