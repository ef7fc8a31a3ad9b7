"""The cooldown: the rate falls linearly to zero over the last `cooldown` of the budget.

The budget is `steps`, or `max_minutes` of wall time where that runs out first. What is
checked: the ramp's shape; that the scheduler gives each update Noam's rate times the ramp
at the share of the budget spent before it; that the share spent is kept in the
scheduler's state (a resume goes on from it) and stretched over a resumed run's new time
budget; and, under torchrun, that ranks whose clocks disagree still take the same rate.
"""


import pytest
import torch

from transformer.training.config import TrainConfig
from transformer.training.loop import budget_spent
from transformer.training.schedule import NoamScheduler, adam, cooldown_factor, noam_lr

from kit import torchrun, train_copy_run, training_records
from training_reference import read_run


def test_the_ramp_is_flat_then_falls_linearly_to_zero():
    assert cooldown_factor(0.0, 0.3) == 1.0
    assert cooldown_factor(0.7, 0.3) == pytest.approx(1.0)
    assert cooldown_factor(0.85, 0.3) == pytest.approx(0.5)
    assert cooldown_factor(0.94, 0.3) == pytest.approx(0.2)
    assert cooldown_factor(1.0, 0.3) == 0.0
    assert cooldown_factor(1.0, 0.0) == 1.0  # no cooldown: the schedule alone


def test_each_update_runs_at_noam_times_the_ramp():
    optimizer = adam([torch.nn.Parameter(torch.zeros(1))])
    scheduler = NoamScheduler(optimizer, d_model=64, warmup=10, factor=0.5, cooldown=0.5)
    for update in range(1, 31):
        done = (update - 1) / 30  # the loop spends the share after each update
        scheduler.spend(done)
        expected = noam_lr(update, 64, 10, 0.5) * cooldown_factor(done, 0.5)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)
        assert scheduler.get_last_lr()[0] == pytest.approx(expected, rel=1e-12)
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] < noam_lr(31, 64, 10, 0.5) / 10


def test_the_share_spent_is_kept_in_the_schedulers_state():
    def scheduler():
        return NoamScheduler(adam([torch.nn.Parameter(torch.zeros(1))]), 64, 10, 1.0, 0.5)
    saved = scheduler()
    for _ in range(12):
        saved.optimizer.step()
        saved.step()
    saved.spend(0.8)
    restored = scheduler()
    restored.load_state_dict(saved.state_dict())
    assert restored.done == 0.8
    saved.step()
    restored.step()
    assert restored.get_last_lr() == saved.get_last_lr()
    assert saved.get_last_lr()[0] == pytest.approx(noam_lr(14, 64, 10) * 0.4)


def test_the_share_spent_is_of_steps_or_of_the_clock_whichever_runs_out_first():
    by_steps = TrainConfig(steps=100)
    assert budget_spent(by_steps, 30, elapsed_s=1e6, done_at_start=0.0) == 0.3
    timed = TrainConfig(steps=100, max_minutes=10)
    assert budget_spent(timed, 30, elapsed_s=300, done_at_start=0.0) == 0.5
    assert budget_spent(timed, 30, elapsed_s=60, done_at_start=0.0) == 0.3
    assert budget_spent(timed, 30, elapsed_s=1200, done_at_start=0.0) == 1.0
    # A resume's max_minutes counts from the resume: it stretches over what was left.
    assert budget_spent(timed, 30, elapsed_s=300, done_at_start=0.6) == pytest.approx(0.8)


def test_a_run_cools_down_over_the_last_share_of_its_steps(tmp_path):
    steps, cooldown = 20, 0.5
    assert train_copy_run(tmp_path, "--steps", steps, "--set", f"cooldown={cooldown}") == 0
    cfg, train_cfg, _ = read_run(tmp_path)
    rates = {r["step"]: r["lr"] for r in training_records(tmp_path)}  # log_every=1
    assert sorted(rates) == list(range(1, steps + 1))
    for step, rate in rates.items():
        noam = noam_lr(step, cfg.d_model, train_cfg.warmup, train_cfg.lr_factor)
        ramp = cooldown_factor((step - 1) / steps, cooldown)
        assert rate == pytest.approx(noam * ramp, rel=1e-9), step
    # The last update ran at a tenth of Noam's rate: (1 - 19/20) / 0.5.
    last_noam = noam_lr(steps, cfg.d_model, train_cfg.warmup, train_cfg.lr_factor)
    assert rates[steps] == pytest.approx(last_noam / 10, rel=1e-9)


@pytest.mark.skipif(not torch.distributed.is_available(),
                    reason="this torch build has no torch.distributed")
def test_ranks_whose_clocks_differ_take_the_same_rate(tmp_path):
    spy = tmp_path / "skew.py"
    spy.write_text(SKEWED_CLOCK, encoding="utf-8")
    rates = tmp_path / "rates.log"
    torchrun(str(spy), "train", "copy", "--out", str(tmp_path / "run"), "--steps", "4", "--quiet",
             "--set", *TINY, "max_minutes=1000", "cooldown=0.99", env={"RATES_LOG": str(rates)})
    by_rank = {"0": [], "1": []}
    for line in rates.read_text(encoding="utf-8").splitlines():
        rank, rate = line.split()
        by_rank[rank].append(float(rate))
    assert len(by_rank["0"]) == 4 and by_rank["0"] == by_rank["1"]
    # After update 1, a quarter of the steps is spent, and half of rank 1's clock (30,000 s
    # ahead, of 1,000 minutes): its clock set the rate of update 2 on both ranks.
    cfg, train_cfg, _ = read_run(tmp_path / "run")
    noam = noam_lr(2, cfg.d_model, train_cfg.warmup, train_cfg.lr_factor)
    assert by_rank["0"][1] == pytest.approx(noam * (1 - 0.5) / 0.99, rel=1e-3)


TINY = ["clip_norm=0", "d_model=16", "n_heads=2", "d_ff=32", "n_encoder_layers=1",
        "n_decoder_layers=1", "dropout=0", "max_len=16", "num_symbols=8", "batch_size=4",
        "eval_examples=4", "eval_every=1000", "warmup=1", "lr_factor=0.004", "log_every=1"]

# The command line with rank 1's clock 30,000 s ahead; every rank logs each update's rate.
SKEWED_CLOCK = """\
import os, sys
import transformer.training.loop as loop
from transformer.cli.main import main

rank = int(os.environ["RANK"])
real_elapsed, real_update = loop.Report.elapsed, loop.update

def elapsed(self):
    return real_elapsed(self) + 30_000.0 * rank

def update(*args, **kwargs):
    result = real_update(*args, **kwargs)
    with open(os.environ["RATES_LOG"], "a") as log:
        log.write(f"{rank} {result.lr!r}\\n")
    return result

loop.Report.elapsed, loop.update = elapsed, update
sys.exit(main(sys.argv[1:]))
"""
