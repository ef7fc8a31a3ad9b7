"""Gradient accumulation: k micro-batches make one update, exactly (a plain mean of
micro-batch means would weight short batches' tokens more).

With `accum_steps=k` an optimizer update takes the next k batches of the stream. Each
micro-batch's loss (a mean over its real target tokens) is weighted by its share of the
update's tokens, so the update equals one step on a single batch holding all k micro-
batches' examples, however unevenly their lengths fall. The Noam scheduler steps once
per update, never per micro-batch.
"""


import pytest

from transformer.checkpoint.format import load_checkpoint
from transformer.cli.main import main
from transformer.model.transformer import Transformer
from transformer.training.schedule import NoamScheduler, adam, noam_lr

from kit import metrics
from training_reference import (
    TINY_SETS,
    assert_same_training,
    load_model,
    read_run,
    reference_training,
    union,
)

K = 3
UPDATES = 2


@pytest.fixture(scope="module")
def accumulated_run(tmp_path_factory):
    """Two updates of the copy task with accum_steps=3, through the command line."""
    run_dir = tmp_path_factory.mktemp("accum") / "run"
    code = main(["train", "copy", "--out", str(run_dir), "--steps", str(UPDATES), "--quiet",
                 "--set", *TINY_SETS, f"accum_steps={K}"])
    assert code == 0
    return run_dir


def test_k_micro_batches_equal_one_batch_of_all_their_examples(accumulated_run):
    cfg, train_cfg, task = read_run(accumulated_run)
    # Update u took micro-batches u*K .. u*K + K - 1 of the stream.
    updates = [union([task.train_batch(u * K + i) for i in range(K)], task) for u in range(UPDATES)]
    lengths = {int((task.train_batch(i)[2] != task.pad_id).sum()) for i in range(K * UPDATES)}
    assert len(lengths) > 1, "micro-batches of equal token counts would not test the weighting"

    trained = load_model(accumulated_run / "checkpoints" / f"step-{UPDATES:06d}", cfg)
    reference = reference_training(cfg, train_cfg, updates)
    assert_same_training(trained, reference, probe=updates[0])


def test_the_scheduler_steps_once_per_update(accumulated_run):
    cfg, train_cfg, _ = read_run(accumulated_run)
    records = metrics(accumulated_run)
    logged = {r["step"]: r["lr"] for r in records if r["kind"] == "train"}
    # Update n (1-based) ran at noam_lr(n): K micro-batches did not advance the schedule.
    assert logged == pytest.approx(
        {n: noam_lr(n, cfg.d_model, train_cfg.warmup, train_cfg.lr_factor)
         for n in range(1, UPDATES + 1)}, rel=1e-12)

    # The saved scheduler has counted UPDATES updates: the next one runs at noam_lr(UPDATES + 1).
    model = Transformer(cfg)
    optimizer = adam(model.parameters())
    scheduler = NoamScheduler(optimizer, cfg.d_model, train_cfg.warmup, train_cfg.lr_factor)
    load_checkpoint(accumulated_run / "checkpoints" / f"step-{UPDATES:06d}", model, optimizer,
                    scheduler)
    assert scheduler.last_epoch == UPDATES
    assert optimizer.param_groups[0]["lr"] == pytest.approx(
        noam_lr(UPDATES + 1, cfg.d_model, train_cfg.warmup, train_cfg.lr_factor), rel=1e-12)
