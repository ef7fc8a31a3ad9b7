"""`transformer ablate`: the classic mistakes, each one really made, all trained side by side.

Pins down:
- mask after the softmax: masked keys get zero weight but rows sum to less than 1, and in
  the decoder a future key still changes an earlier position's output (through the
  normaliser), while the right attention is blind to it;
- no scaling: softmax(Q K^T) V, different from the scaled weights and sharper;
- the constant schedule starts at the Noam peak at update 1 and stays there;
- `with_attention` changes the attention of the model it is given, and of no other;
- the command trains every variant into OUT/<variant>/ with the same budget, prints the
  table, writes ablation.md and a valid ablation.png, and each variant differs from the
  baseline in what it says it changes (and in its training); the config.json of an
  attention variant says which function its model ran, and loading the run restores it;
- `--overwrite` replaces only run directories.
"""

import json
import math

import pytest
import torch

import transformer.model.attention as attention_module
from transformer import (
    MultiHeadAttention,
    Transformer,
    TransformerConfig,
    causal_mask,
    scaled_dot_product_attention,
)
from transformer.cli.main import main
from transformer.experiments.ablate import VARIANTS
from transformer.experiments.ablate_report import format_table
from transformer.run.ablated_attention import (
    mask_after_softmax_attention,
    unscaled_attention,
    with_attention,
)
from transformer.run.rundir import load_run
from transformer.training.schedule import adam, make_scheduler, noam_lr

from kit import metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = ["d_model=32", "n_heads=2", "d_ff=64", "n_encoder_layers=1", "n_decoder_layers=1",
        "batch_size=16", "max_length=6", "eval_every=30", "eval_examples=20", "log_every=5"]


def qkv(t=5, s=5, d_k=8):
    return torch.randn(2, 2, t, d_k), torch.randn(2, 2, s, d_k), torch.randn(2, 2, s, d_k)


def test_mask_after_softmax_rows_do_not_sum_to_one():
    q, k, v = qkv()
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    mask[0, ..., 3:] = False  # sentence 0 has two padding keys
    _, wrong = mask_after_softmax_attention(q, k, v, mask)
    _, right = scaled_dot_product_attention(q, k, v, mask)
    assert torch.all(wrong[0, ..., 3:] == 0)  # the masked keys are zeroed ...
    assert torch.all(wrong[0].sum(-1) < 0.999)  # ... after taking their share of the mass
    assert torch.allclose(wrong[1].sum(-1), torch.ones(2, 5))  # no padding, no harm
    assert torch.allclose(right.sum(-1), torch.ones(2, 2, 5))


def test_mask_after_softmax_lets_future_keys_reach_earlier_positions():
    q, k, v = qkv()
    later_k = k.clone()
    later_k[..., 4, :] += 3.0  # change only the last position's key
    mask = causal_mask(5)
    for attend, leaks in ((mask_after_softmax_attention, True), (scaled_dot_product_attention, False)):
        before, _ = attend(q, k, v, mask)
        after, _ = attend(q, later_k, v, mask)
        changed = not torch.allclose(before[..., :4, :], after[..., :4, :])
        assert changed == leaks, attend.__name__


def test_unscaled_attention_is_softmax_of_raw_dot_products():
    q, k, v = qkv(d_k=16)
    out, weights = unscaled_attention(q, k, v)
    expected = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
    assert torch.allclose(weights, expected, atol=1e-6)
    assert torch.allclose(out, expected @ v, atol=1e-5)
    _, scaled = scaled_dot_product_attention(q, k, v)
    assert not torch.allclose(weights, scaled, atol=1e-3)
    # sqrt(d_k) = 4 times larger scores: sharper rows
    assert weights.max(-1).values.mean() > scaled.max(-1).values.mean()
    # the same as the right function given q * sqrt(d_k); masking is still right
    mask = torch.rand(2, 2, 5, 5) > 0.3
    mask[..., 0] = True
    out_masked, w_masked = unscaled_attention(q, k, v, mask)
    ref_out, ref_w = scaled_dot_product_attention(q * 4.0, k, v, mask)
    assert torch.allclose(w_masked, ref_w, atol=1e-6) and torch.allclose(out_masked, ref_out, atol=1e-5)


def test_constant_schedule_starts_at_the_noam_peak():
    d_model, warmup, factor = 64, 20, 0.5
    peak = noam_lr(warmup, d_model, warmup, factor)
    rates = {}
    for name in ("noam", "constant"):
        optimizer = adam([torch.nn.Parameter(torch.zeros(1))])
        scheduler = make_scheduler(optimizer, name, d_model, warmup, factor)
        rates[name] = []
        for _ in range(3 * warmup):
            rates[name].append(scheduler.get_last_lr()[0])  # the rate of the coming update
            optimizer.step()
            scheduler.step()
    assert rates["constant"][0] == pytest.approx(peak)
    assert all(r == pytest.approx(peak) for r in rates["constant"])
    assert rates["noam"][0] == pytest.approx(peak / warmup)  # warm-up starts `warmup` times lower
    assert max(rates["noam"]) == pytest.approx(peak)


def test_with_attention_changes_that_model_and_no_other():
    cfg = TransformerConfig.tiny(vocab_size=20, dropout=0.0)  # fused: with_attention switches it
    right_model, wrong_model = Transformer(cfg).eval(), Transformer(cfg).eval()
    wrong_model.load_state_dict(right_model.state_dict())
    src = torch.tensor([[5, 6, 7, 2, 0, 0]])  # padded: the mistake has something to get wrong
    tgt_in = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        right = right_model(src, tgt_in)
        assert with_attention(wrong_model, mask_after_softmax_attention) is wrong_model
        wrong = wrong_model(src, tgt_in)
        again = right_model(src, tgt_in)
    changed = [m for m in wrong_model.modules() if isinstance(m, MultiHeadAttention)]
    assert len(changed) == 2 + 2 * 2  # every attention of the model, on the readable path
    assert all(m.attention_fn is mask_after_softmax_attention and not m.fused for m in changed)
    assert all(m.attention_fn is scaled_dot_product_attention and m.fused
               for m in right_model.modules() if isinstance(m, MultiHeadAttention))
    assert attention_module.scaled_dot_product_attention is scaled_dot_product_attention
    assert not torch.allclose(right, wrong, atol=1e-4)
    assert torch.equal(right, again)


def test_ablate_trains_every_variant_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "ablation"
    assert main(["ablate", "--steps", "60", "--out", str(out), "--set", *TINY]) == 0
    printed = capsys.readouterr().out
    names = [v.name for v in VARIANTS]
    assert names == ["baseline", "mask-after-softmax", "no-warmup", "no-scaling", "untied", "pre-LN"]
    for name in names:
        assert f"\n{name} " in printed  # a table row each
    table = (out / "ablation.md").read_text()
    assert "| variant | train loss | valid loss | exact match | parameters | steps to 99% | seconds |" in table
    assert sum(line.startswith(f"| {name} |") for name in names for line in table.splitlines()) == 6
    png = (out / "ablation.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 5000

    runs = {}
    for name in names:
        config = json.loads((out / name / "config.json").read_text())
        records = metrics(out / name)
        runs[name] = (config, records)
        train = [r for r in records if r["kind"] == "train"]
        evals = [r for r in records if r["kind"] == "eval"]
        assert train[-1]["step"] == 60 and [r["step"] for r in evals] == [30, 60]  # the same budget
        assert config["train"]["target_exact_match"] == 0.0 and config["train"]["seed"] == 0
        assert config["ablation"]["variant"] == name

    def model(name):
        return runs[name][0]["model"]

    def first_lr(name):
        return next(r["lr"] for r in runs[name][1] if r["kind"] == "train")

    assert runs["no-warmup"][0]["train"]["schedule"] == "constant"
    warmup, factor = (runs["baseline"][0]["train"][key] for key in ("warmup", "lr_factor"))
    peak = noam_lr(warmup, 32, warmup, factor)
    assert first_lr("no-warmup") == pytest.approx(peak)  # lr at step 5 (the first log): the peak
    assert first_lr("baseline") == pytest.approx(peak * 5 / warmup)
    assert model("mask-after-softmax")["attention"] == model("no-scaling")["attention"] == "manual"
    assert model("untied")["tie_embeddings"] == "none" and model("pre-LN")["norm_first"] is True
    for name, function in (("mask-after-softmax", "mask_after_softmax_attention"),
                           ("no-scaling", "unscaled_attention")):
        ablation = runs[name][0]["ablation"]  # the config names the function ...
        assert ablation["attention_fn"] == f"transformer.run.ablated_attention.{function}"
        loaded = load_run(out / name).model  # ... and loading the run gives it back
        modules = [m for m in loaded.modules() if isinstance(m, MultiHeadAttention)]
        assert modules and all(m.attention_fn.__name__ == function and not m.fused
                               for m in modules)
    assert all("attention_fn" not in runs[name][0]["ablation"]
               for name in ("baseline", "no-warmup", "untied", "pre-LN"))
    for name in names[1:]:  # the variant changed training, not just its label
        assert not math.isclose(runs[name][1][-1]["loss"], runs["baseline"][1][-1]["loss"])


def test_ablate_refuses_to_overwrite_and_rejects_bad_keys(tmp_path, capsys):
    out = tmp_path / "ablation"
    (out / "baseline").mkdir(parents=True)
    (out / "baseline" / "metrics.jsonl").write_text("{}\n")
    assert main(["ablate", "--steps", "5", "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["ablate", "--steps", "5", "--out", str(out), "--overwrite"]) == 2
    assert "replaces only a run directory" in capsys.readouterr().err  # a log alone is no run
    assert (out / "baseline" / "metrics.jsonl").is_file()  # nothing was deleted
    assert main(["ablate", "--out", str(tmp_path / "x"), "--set", "d_modle=32"]) == 2
    assert "unknown key 'd_modle'" in capsys.readouterr().err
    assert main(["ablate", "--out", str(tmp_path / "y"), "--steps", "0"]) == 2
    assert "steps=0" in capsys.readouterr().err


def test_format_table_marks_unreached_targets_and_divergence():
    rows = [{"variant": "baseline", "train_loss": 0.51, "valid_loss": 0.5, "exact_match": 1.0,
             "bleu": None, "parameters": 1234, "steps_to_99": 300, "best_bleu_step": None,
             "wall_s": 12.3, "failure": None},
            {"variant": "no-warmup", "train_loss": math.nan, "valid_loss": math.nan,
             "exact_match": None, "bleu": None, "parameters": 1234, "steps_to_99": None,
             "best_bleu_step": None, "wall_s": 2.0, "failure": "training diverged"}]
    text = format_table(rows, "exact_match")
    assert "100.0%" in text and "1,234" in text and " 300 " in text
    assert "diverged" in text and "never" in text


def test_multi30k_slice_is_written_as_a_parallel_task(tmp_path):
    from transformer.data.parallel import find_multi30k_dir, read_parallel
    from transformer.data.prepared import PreparedCorpus
    from transformer.errors import UserError
    from transformer.experiments.ablate import (
        MULTI30K_TRAIN_PAIRS,
        MULTI30K_VALID_PAIRS,
        write_multi30k_slice,
    )
    try:
        find_multi30k_dir()
    except UserError as error:
        pytest.skip(f"Multi30k data folder absent: {error}")
    keys = write_multi30k_slice({"src_lang": "en", "tgt_lang": "de"}, tmp_path)
    assert keys["task"] == "parallel"
    assert len(read_parallel(keys["src"], keys["tgt"])) == MULTI30K_TRAIN_PAIRS
    assert len(read_parallel(keys["valid_src"], keys["valid_tgt"])) == MULTI30K_VALID_PAIRS
    corpus = PreparedCorpus(keys["data"])  # prepared once, for every variant
    assert len(corpus) == MULTI30K_TRAIN_PAIRS and len(corpus.valid_pairs()) == MULTI30K_VALID_PAIRS
