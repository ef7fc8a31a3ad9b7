"""The Noam schedule (Section 5.3): linear warm-up, then inverse square-root decay,
and the paper's Adam settings."""

import math

import pytest
import torch

from transformer.training.schedule import NoamScheduler, adam, noam_lr


@pytest.mark.parametrize("d_model,warmup,factor", [(512, 4000, 1.0), (128, 1000, 2.0)])
def test_noam_matches_the_formula(d_model, warmup, factor):
    for step in (1, 10, warmup // 2, warmup, warmup + 1, 2 * warmup, 100_000):
        expected = factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)
        assert noam_lr(step, d_model, warmup, factor) == pytest.approx(expected, rel=1e-12)


def test_noam_peaks_at_warmup():
    rates = [noam_lr(s, 512, 4000) for s in range(1, 20_000)]
    assert max(range(len(rates)), key=rates.__getitem__) + 1 == 4000
    assert rates[3999] == pytest.approx(512 ** -0.5 * 4000 ** -0.5)
    # linear before the peak, 1/sqrt(step) after it
    assert rates[1999] / rates[999] == pytest.approx(2.0)
    assert rates[15999] / rates[3999] == pytest.approx(math.sqrt(4000 / 16000))


def test_scheduler_gives_noam_rate_for_every_update():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = adam([param])
    scheduler = NoamScheduler(optimizer, d_model=64, warmup=10, factor=0.5)
    for update in range(1, 30):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(noam_lr(update, 64, 10, 0.5))
        optimizer.step()
        scheduler.step()


def test_adam_uses_the_paper_settings():
    optimizer = adam([torch.nn.Parameter(torch.zeros(1))])
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.98) and group["eps"] == 1e-9
