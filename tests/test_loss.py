"""Label-smoothed cross-entropy (Section 5.4) that ignores padding (else <pad> targets
would be learned and dilute the mean over real tokens)."""

import math

import pytest
import torch
import torch.nn.functional as F

from transformer.loss import label_smoothed_loss

PAD = 0


def batch(seed=0, B=3, T=6, V=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g)
    target = torch.randint(1, V, (B, T), generator=g)
    target[1, 4:] = PAD
    target[2, 2:] = PAD
    return logits, target


def test_epsilon_zero_equals_cross_entropy():
    logits, target = batch()
    out = label_smoothed_loss(logits, target, 0.0, PAD)
    expected = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD)
    assert float(out.loss) == pytest.approx(float(expected), abs=1e-6)
    assert out.n_tokens == int((target != PAD).sum())
    assert out.nll == pytest.approx(float(expected), abs=1e-6)
    assert out.ppl == pytest.approx(math.exp(float(expected)), rel=1e-6)


def test_smoothed_loss_against_an_explicit_target_distribution():
    logits, target = batch(1)
    eps, V = 0.1, logits.size(-1)
    q = torch.full(logits.shape, eps / (V - 1))
    q[..., PAD] = 0.0  # pad gets no probability mass
    q.scatter_(-1, target.unsqueeze(-1), 1 - eps + eps / (V - 1))
    per_token = -(q * F.log_softmax(logits, -1)).sum(-1)
    keep = target != PAD
    expected = per_token[keep].mean()
    assert torch.allclose(q[keep].sum(-1), torch.ones(int(keep.sum())))
    out = label_smoothed_loss(logits, target, eps, PAD)
    assert float(out.loss) == pytest.approx(float(expected), abs=1e-6)


def test_padding_does_not_change_the_loss():
    logits, target = batch(2)
    out = label_smoothed_loss(logits, target, 0.1, PAD)
    # more padding columns, with arbitrary logits under them
    extra_logits = torch.cat([logits, 100 * torch.randn(3, 4, logits.size(-1))], dim=1)
    extra_target = torch.cat([target, torch.full((3, 4), PAD)], dim=1)
    padded = label_smoothed_loss(extra_logits, extra_target, 0.1, PAD)
    assert float(padded.loss) == pytest.approx(float(out.loss), abs=1e-6)
    assert padded.n_tokens == out.n_tokens and padded.n_correct == out.n_correct
    # logits at pad positions get no gradient
    extra_logits.requires_grad_(True)
    label_smoothed_loss(extra_logits, extra_target, 0.1, PAD).loss.backward()
    assert extra_logits.grad[:, -4:].abs().max() == 0


def test_accuracy_counts_only_real_tokens():
    logits, target = batch(3)
    perfect = F.one_hot(target, logits.size(-1)).float() * 10
    out = label_smoothed_loss(perfect, target, 0.1, PAD)
    assert out.accuracy == 1.0 and out.n_correct == out.n_tokens
