"""Label-smoothed cross-entropy (Section 5.4) that ignores padding (else <pad> targets
would be learned and dilute the mean over real tokens).

Everything it returns is a tensor, and it never reads a value back from the device (on a
GPU every such read makes the CPU wait for the work queued so far): checked by watching
the tensor methods that read one (`float()`, `int()`, `bool()`, `.item()`, `.tolist()`).
"""


import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from transformer.training.loss import label_smoothed_loss

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
    assert float(out.nll_sum) / int(out.n_tokens) == pytest.approx(float(expected), abs=1e-6)


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
    assert out.n_correct == out.n_tokens == int((target != PAD).sum())


class HostReads(TorchFunctionMode):
    """Notes every tensor method called inside it that copies a value to the host."""

    READS = {"__bool__", "__float__", "__int__", "__index__", "__complex__", "item", "tolist",
             "numpy", "cpu"}

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.READS:
            self.seen.append(func.__name__)
        return func(*args, **(kwargs or {}))


def test_returns_tensors_and_reads_nothing_back():
    logits, target = batch(4)
    logits.requires_grad_(True)
    with HostReads() as reads:
        out = label_smoothed_loss(logits, target, 0.1, PAD)
    assert reads.seen == []
    # The check sees a read when there is one.
    with HostReads() as reads:
        float(out.nll_sum), int(out.n_tokens)
    assert reads.seen == ["__float__", "__int__"]

    values = (out.loss, out.nll_sum, out.n_tokens, out.n_correct)
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in values)
    assert out.n_tokens.dtype == out.n_correct.dtype == torch.int64
    # The values of the counts and sums, from their definitions.
    keep = target != PAD
    nll_sum = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD,
                              reduction="sum")
    assert out.n_tokens.item() == int(keep.sum())
    assert out.n_correct.item() == int(((logits.argmax(-1) == target) & keep).sum())
    assert out.nll_sum.item() == pytest.approx(nll_sum.item(), abs=1e-5)


def test_all_padding_gives_zero_not_nan():
    logits, target = batch(5)
    out = label_smoothed_loss(logits, torch.full_like(target, PAD), 0.1, PAD)
    assert out.loss.item() == 0.0 and out.n_tokens.item() == 0
    assert out.nll_sum.item() == 0.0 and out.n_correct.item() == 0
