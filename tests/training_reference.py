"""What the training loop must equal, written out by hand: plain full-batch steps.

Shared by test_accumulation.py and test_distributed.py (not a test file itself). The
loop splits an update across micro-batches (accum_steps) and processes (DDP); its result
must be the parameters of one Adam step, on the Noam schedule, with the label-smoothed
loss averaged over every real target token of the update, as below.
"""

from __future__ import annotations

from pathlib import Path

import torch

from transformer.checkpoint.format import load_weights
from transformer.data.batching import collate
from transformer.model.config import TransformerConfig
from transformer.model.transformer import Transformer
from transformer.run.rundir import read_settings
from transformer.training.config import TrainConfig
from transformer.training.loss import label_smoothed_loss
from transformer.training.schedule import NoamScheduler, adam
from transformer.training.tasks import SyntheticTask

# A model and a task small enough that a step takes milliseconds; dropout 0 so that the
# two sides of every comparison compute the same function. warmup=1 makes the first
# updates large (lr = lr_factor * d_model^-0.5 = 1e-3): a wrong step cannot hide under atol.
TINY_SETS = ["clip_norm=0", "d_model=16", "n_heads=2", "d_ff=32", "n_encoder_layers=1", "n_decoder_layers=1",
             "dropout=0", "max_len=16", "num_symbols=8", "min_length=2", "max_length=7",
             "batch_size=4", "eval_examples=4", "eval_every=1000", "warmup=1",
             "lr_factor=0.004", "log_every=1"]


def read_run(run_dir: Path) -> tuple[TransformerConfig, TrainConfig, SyntheticTask]:
    """The model config, training config and synthetic task a run directory was made with."""
    settings = read_settings(run_dir)
    cfg, train_cfg = settings.model, settings.train
    task = SyntheticTask(train_cfg.task, train_cfg.num_symbols, train_cfg.min_length,
                         train_cfg.max_length, train_cfg.batch_size, train_cfg.seed,
                         train_cfg.eval_examples)
    return cfg, train_cfg, task


def examples(batch, eos_id: int) -> list[tuple[list[int], list[int]]]:
    """A collated batch back into its (source ids, target ids) pairs."""
    src, _, tgt_out = batch
    return [(s[: s.index(eos_id)], t[: t.index(eos_id)])
            for s, t in zip(src.tolist(), tgt_out.tolist())]


def union(batches, task) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch holding every example of `batches` (padded to the longest of all)."""
    pairs = [pair for batch in batches for pair in examples(batch, task.eos_id)]
    return collate(pairs, task.pad_id, task.bos_id, task.eos_id)


def reference_training(cfg: TransformerConfig, train_cfg: TrainConfig, updates: list):
    """The model after one plain step per batch in `updates`, from the loop's initial weights."""
    torch.manual_seed(train_cfg.seed)  # as train() does right before building the model
    model = Transformer(cfg)
    optimizer = adam(model.parameters())
    scheduler = NoamScheduler(optimizer, cfg.d_model, train_cfg.warmup, train_cfg.lr_factor)
    for src, tgt_in, tgt_out in updates:
        out = label_smoothed_loss(model(src, tgt_in), tgt_out, train_cfg.label_smoothing,
                                  cfg.pad_id)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        scheduler.step()
    return model


def load_model(checkpoint: Path, cfg: TransformerConfig) -> Transformer:
    model = Transformer(cfg)
    load_weights(checkpoint, model)
    return model


def assert_same_training(trained: Transformer, reference: Transformer, probe,
                         atol: float = 1e-6) -> None:
    """Every parameter equal within `atol`, except the biases of the keys; same logits.

    The keys' bias adds the same number to every score of a query's row, which the softmax
    ignores: its gradient is zero but for rounding (~1e-9), and Adam's normalised step,
    g / (sqrt(v) + 1e-9), turns that rounding into a step of up to +-lr either way. Those
    entries are checked through what they affect, the logits, which must agree.
    """
    reference_params = dict(reference.named_parameters())
    for name, p in trained.named_parameters():
        q = reference_params[name]
        if name.endswith("w_qkv.bias"):
            D = p.numel() // 3
            p, q = torch.cat([p[:D], p[2 * D:]]), torch.cat([q[:D], q[2 * D:]])
        torch.testing.assert_close(p, q, rtol=0, atol=atol, msg=lambda m: f"{name}: {m}")
    trained.eval()
    reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(trained(*probe[:2]), reference(*probe[:2]), rtol=0, atol=1e-5)
