"""`precision = "bf16"`: bfloat16 autocast, on the CPU as on CUDA.

Under autocast the matrix products run in bfloat16 while the weights, the optimizer and
the loss (a float32 log-softmax, see loss.py) stay in float32. A few updates must run
and give finite losses; the saved weights stay float32.
"""

import json
import math

import torch
from safetensors import safe_open

from transformer import Transformer, TransformerConfig
from transformer.cli import main
from transformer.recipe import TrainConfig
from transformer.train import autocast


def test_a_few_bf16_updates_on_the_cpu_give_finite_losses(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", "copy", "--out", str(run_dir), "--steps", "3", "--quiet", "--set",
                 "d_model=16", "n_heads=2", "d_ff=32", "n_encoder_layers=1", "n_decoder_layers=1",
                 "max_len=16", "num_symbols=8", "max_length=6", "batch_size=8",
                 "eval_examples=4", "log_every=1", "warmup=1", "lr_factor=0.004",
                 "precision=bf16"])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses), losses
    assert all(math.isfinite(r["loss"]) for r in records if r["kind"] == "eval")
    with safe_open(str(run_dir / "checkpoints" / "step-000003" / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(name).dtype) for name in f.keys()} == {"torch.float32"}


def test_bf16_autocast_runs_the_model_in_bfloat16():
    cfg = TransformerConfig(src_vocab_size=12, tgt_vocab_size=12, d_model=16, n_heads=2,
                            n_encoder_layers=1, n_decoder_layers=1, d_ff=32, max_len=16)
    model = Transformer(cfg)
    src, tgt_in = torch.tensor([[4, 5, 6, 2]]), torch.tensor([[1, 4, 5]])
    with autocast(TrainConfig(precision="bf16"), torch.device("cpu")):
        assert model(src, tgt_in).dtype == torch.bfloat16
    with autocast(TrainConfig(precision="fp32"), torch.device("cpu")):
        assert model(src, tgt_in).dtype == torch.float32
    assert next(model.parameters()).dtype == torch.float32
