"""torch.compile (`compile = true`): the same model, only faster.

Compiling changes how the graph runs (fused kernels, generated C++ on the CPU), never
what it computes: the compiled and the eager model give the same logits, padding masks
included, and a training run with `--set compile=true` trains.
"""

import json
import os
import shutil
import time

import pytest
import torch

from transformer import Transformer, TransformerConfig
from transformer.cli import main
from transformer.data.batching import collate

COMPILER = next((c for c in (os.environ.get("CXX"), "g++", "c++", "clang++") if c and shutil.which(c)), None)
pytestmark = pytest.mark.skipif(
    COMPILER is None, reason="torch.compile's CPU backend (inductor) generates C++ and needs a "
                             "C++ compiler: none of $CXX, g++, c++, clang++ is on PATH")


def test_compiled_model_gives_the_eager_logits():
    cfg = TransformerConfig(src_vocab_size=12, tgt_vocab_size=12, d_model=16, n_heads=2,
                            n_encoder_layers=1, n_decoder_layers=1, d_ff=32, dropout=0.0,
                            max_len=16)
    model = Transformer(cfg).eval()
    # Sentences of different lengths: the padding masks go through the compiled graph too.
    src, tgt_in, _ = collate([([4, 5, 6, 7, 8], [9, 10]), ([11, 4], [5, 6, 7, 8, 9, 10])],
                             cfg.pad_id, bos_id=1, eos_id=2)
    compiled = torch.compile(model)
    started = time.time()
    with torch.no_grad():
        expected = model(src, tgt_in)  # (B, T, V)
        actual = compiled(src, tgt_in)
    took = time.time() - started
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)
    print(f"compiled and ran in {took:.1f} s")


@pytest.mark.skipif(os.environ.get("TRANSFORMER_SLOW_TESTS") != "1",
                    reason="compiles forward and backward (~1 min on 2 CPU cores); "
                           "set TRANSFORMER_SLOW_TESTS=1")
def test_training_with_compile_true_through_the_command_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", "copy", "--out", str(run_dir), "--steps", "3", "--quiet", "--set",
                 "d_model=16", "n_heads=2", "d_ff=32", "n_encoder_layers=1", "n_decoder_layers=1",
                 "max_len=16", "num_symbols=8", "max_length=6", "batch_size=8",
                 "eval_examples=4", "log_every=1", "compile=true"])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert (run_dir / "checkpoints" / "step-000003" / "model.safetensors").is_file()
